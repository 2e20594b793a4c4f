"""`vitalvagt gateway decode` as an operator runs it: a real subprocess, JSON on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitalvagt.cli", "gateway", "decode", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def decoded(*args: str) -> dict[str, Any]:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1  # exactly one JSON object, one line
    return json.loads(proc.stdout)


def test_bp_vector_without_device_date() -> None:
    out = decoded("--uuid", "2A35", "1E 8A00 5800 7800 0000 04 11 14 29 3B 3C00 01 2700")
    assert out["characteristic"] == "2A35"
    assert out["user_id"] == 1
    assert out["device_time"] is None
    obs = {o["kind"]: o for o in out["observations"]}
    assert {k: (o["value"], o["unit"]) for k, o in obs.items()} == {
        "bp_systolic": (138.0, "mm[Hg]"),
        "bp_diastolic": (88.0, "mm[Hg]"),
        "bp_mean": (120.0, "mm[Hg]"),
        "pulse": (60.0, "/min"),
    }
    assert all(o["measured_at"] is None for o in obs.values())
    assert set(obs["bp_systolic"]["flags"]) == {
        "body_movement", "cuff_too_loose", "irregular_pulse", "improper_position",
        "device_clock_not_set",
    }
    assert out["extras"] == {"status": 39, "device_time_raw": "0000-04-17T20:41:59"}


def test_temperature_vector_gets_the_zone_offset() -> None:
    # Colons as separators, lower-case 0x UUID; December in Copenhagen is +01:00.
    out = decoded("--uuid", "0x2a1c", "06:B0:0E:00:FE:DC:07:0C:05:0B:32:1B:04")
    (obs,) = out["observations"]
    assert obs == {
        "kind": "temperature",
        "value": 37.6,
        "unit": "Cel",
        "decimals": 2,
        "measured_at": "2012-12-05T11:50:27+01:00",
        "flags": [],
        "body_site": "finger",
    }
    assert out["timezone"] == "Europe/Copenhagen"
    other = decoded("--uuid", "2A1C", "--tz", "UTC", "06B00E00FEDC070C050B321B04")
    assert other["observations"][0]["measured_at"] == "2012-12-05T11:50:27+00:00"


def test_summer_time_offset_and_full_uuid() -> None:
    # PLX spot-check, 2024-07-01 12:00:00 local: +02:00 in Copenhagen.
    uuid = "00002a5e-0000-1000-8000-00805f9b34fb"
    out = decoded("--uuid", uuid, "01 6100 4800 E807 07 01 0C 00 00")
    assert [o["measured_at"] for o in out["observations"]] == ["2024-07-01T12:00:00+02:00"] * 2
    assert [(o["kind"], o["value"]) for o in out["observations"]] == [("spo2", 97.0),
                                                                     ("pulse", 72.0)]


def test_hr_and_plx_continuous_extras() -> None:
    hr = decoded("--uuid", "2A37", "1E", "55", "3200", "2100")  # bytes split over arguments
    assert hr["observations"][0]["value"] == 85.0
    assert hr["extras"]["rr_intervals_s"] == [33 / 1024]
    plx = decoded("--uuid", "2A5F", "1C 5F00 5A00 2000 000000 57F0")
    assert plx["extras"]["pai"] == 8.7
    assert plx["flags"] == ["measurement_ongoing"]


def test_profile_for_the_quirky_monitor() -> None:
    quirk = "56 8A00 5800 7800 E807 01 02 03 04 05 003C 01 0027"
    refused = run("--uuid", "2A35", quirk)
    assert refused.returncode == 2
    assert "byte 0" in refused.stderr and "reserved flag bits" in refused.stderr
    out = decoded("--uuid", "2A35", "--profile", "bp_flags56_bigendian", quirk)
    assert out["profile"] == "bp_flags56_bigendian"
    assert [o["value"] for o in out["observations"]] == [138.0, 88.0, 120.0, 60.0]
    assert out["observations"][0]["measured_at"] == "2024-01-02T03:04:05+01:00"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--uuid", "2A35", "1E 8A00 5800 7800 0000 04 11 14 29 3B 3C"],
         "2A35 Blood Pressure Measurement: byte 14: truncated, need 2 bytes for pulse, have 1"),
        (["--uuid", "2A35", "zz"], "not hex"),
        (["--uuid", "2A35", "1E8"], "odd number of hex digits"),
        (["--uuid", "2A99", "00 55"], "unsupported characteristic"),
        (["--uuid", "banana", "00 55"], "not a Bluetooth UUID"),
        (["--uuid", "2A37", "--tz", "Mars/Olympus", "00 55"], "unknown time zone"),
        (["--uuid", "2A37", "--profile", "nope", "00 55"], "unknown device profile"),
        (["--uuid", "2A1C", "00 FFFF7F00"], "temperature is NaN"),
    ],
)
def test_bad_input_exit_2_message_on_stderr(args: list[str], words: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert words in proc.stderr


def test_missing_uuid_is_a_usage_error() -> None:
    proc = run("00 55")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "--uuid" in proc.stderr


def test_help_says_what_it_does_and_needs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vitalvagt.cli", "gateway", "decode", "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "Needs nothing but the bytes" in text
    assert "bp_flags56_bigendian" in text
    gateway_help = subprocess.run(
        [sys.executable, "-m", "vitalvagt.cli", "gateway", "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert gateway_help.returncode == 0
    assert "decode" in gateway_help.stdout
