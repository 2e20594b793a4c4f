"""A bad setting is a clear message naming the variable and exit code 2, never a traceback,
and the value (which may be a secret) is not repeated. Issue 10: a bad VV_* value escaped
the CLI as a pydantic traceback."""

from __future__ import annotations

import pytest

from vitalvagt.cli import main

CASES = {
    "VV_PG_PORT": ("not-a-port-s3cret", "VV_PG_PORT"),
    "VV_LOG_LEVEL": ("LOUD", "VV_LOG_LEVEL"),
    "VV_LOCAL_TZ": ("Mars/Olympus", "VV_LOCAL_TZ"),
    "VV_BROKER_SERVICE_PASSWORDS": ("{not json s3cret", "VV_BROKER_SERVICE_PASSWORDS"),
}


@pytest.mark.parametrize("variable", sorted(CASES))
def test_a_bad_setting_exits_2_naming_the_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    value, named = CASES[variable]
    monkeypatch.setenv("VV_STATE_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    # `gateway devices` reads the settings, the log level and the local zone, and needs
    # nothing running.
    assert main(["gateway", "devices"]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert "Traceback" not in err
    if "s3cret" in value:
        assert "s3cret" not in err, "the value of a setting may be a secret"


def test_good_settings_still_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setenv("VV_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("VV_GATEWAY_TZ", "Europe/Copenhagen")  # the 0.1.0 name still works
    assert main(["gateway", "devices"]) == 0
