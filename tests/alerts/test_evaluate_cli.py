"""`vitalvagt evaluate` on a tiny hand-made CSV export with answers computed by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from vitalvagt.cli import main


def day(n: int, hour: int = 8) -> str:
    return f"2025-03-{n:02d}T{hour:02d}:00:00+00:00"


def write(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture
def export(tmp_path: Path) -> dict[str, Path]:
    obs: list[tuple] = [("patient_id", "kind", "value", "unit", "measured_at", "flags")]
    for n in range(1, 21):  # p1 (COPD): SpO2 every morning, days 1..20
        value = {10: 86, 20: 84}.get(n, 95)
        obs.append(("p1", "spo2", value, "%", day(n), ""))
    obs.append(("p1", "spo2", 70, "%", day(15, 9), "erratic_signal;questionable"))
    for n in (1, 2, 3, 4, 5, 8, 9, 10):  # p2 (heart failure): days 6 and 7 missed
        obs.append(("p2", "pulse", 120 if n == 3 else 70, "/min", day(n), ""))
    patients = [("patient_id", "group", "on_oxygen"), ("p1", "copd", "no"),
                ("p2", "heart_failure", "")]  # fmt: skip
    events = [("patient_id", "type", "onset", "evident"),
              ("p1", "copd_exacerbation", day(9, 0), day(12)),
              ("p2", "hf_decompensation", day(20), day(25)),
              ("p1", "oximeter_motion", day(15, 9), "")]  # fmt: skip
    return {"observations": write(tmp_path / "obs.csv", obs),
            "patients": write(tmp_path / "patients.csv", patients),
            "events": write(tmp_path / "events.csv", events)}  # fmt: skip


def args(export: dict[str, Path], *more: str) -> list[str]:
    return ["evaluate", "--observations", str(export["observations"]), "--patients",
            str(export["patients"]), "--events", str(export["events"]), *more]  # fmt: skip


def test_scores_by_hand(export: dict[str, Path], capsys: pytest.CaptureFixture,
                        tmp_path: Path) -> None:  # fmt: skip
    out_csv = tmp_path / "alerts.csv"
    assert main(args(export, "--rules", "guideline", "--json", "--alerts-out", str(out_csv))) == 0
    result = json.loads(capsys.readouterr().out)
    sc = result["scores"][0]
    # p1: SpO2 86 on day 10 08:00 (yellow, below 88) is inside [evident - 7 d, evident - 24 h]
    # = [day 5 08:00, day 11 08:00]: detected, lead 48 h. It cleared at day 12 08:00 (48 h
    # without the rule firing, a reading came), so SpO2 84 on day 20 opens a new (red)
    # alert, outside [onset - 1 d, evident + 1 d] = [day 8, day 13 08:00]: false.
    # p2: pulse 120 on day 3 (yellow, above 110): false; the decompensation is missed.
    assert sc["events"]["copd_exacerbation"] == {
        "events": 1, "detected": 1, "sensitivity": 1.0, "median_lead_h": 48.0,
        "detected_strict": 1, "sensitivity_strict": 1.0, "median_lead_h_strict": 48.0}
    assert sc["events"]["hf_decompensation"]["detected"] == 0
    assert sc["events"]["hf_decompensation"]["sensitivity"] == 0.0
    assert sc["events"]["infection"]["events"] == 0
    assert sc["clinical_alerts"] == 3 and sc["false_clinical_alerts"] == 2
    # patient-months: p1 day 1 .. day 20 plus a day = 20 d, p2 day 1 .. 10 + 1 = 10 d
    assert sc["patient_months"] == round(30 / 30.4375, 2)
    assert sc["false_clinical_per_patient_month"] == round(2 / (30 / 30.4375), 4)
    assert sc["quality_notices"] == 1  # the flagged SpO2 70: a notice, never clinical
    assert sc["missed_notices"] == 1  # p2's days 6-7
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["patient_id"], r["time"], r["rule"], r["severity"], r["category"])
            for r in rows] == [
        ("p1", "2025-03-10T08:00:00Z", "limit:spo2", "yellow", "clinical"),
        ("p1", "2025-03-15T09:00:00Z", "quality:spo2", "yellow", "quality"),
        ("p1", "2025-03-20T08:00:00Z", "limit:spo2", "red", "clinical"),
        ("p2", "2025-03-03T08:00:00Z", "limit:pulse", "yellow", "clinical"),
    ]  # fmt: skip


def test_both_rule_sets_side_by_side(export: dict[str, Path],
                                     capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    assert main(args(export, "--rules", "both")) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0].split()
    assert header == ["guideline", "full"]
    assert "copd_exacerbation: events" in text and "false clinical alerts" in text
    # full: single readings beyond a warning limit raise nothing (alert limits, 2 of 3)
    assert main(args(export, "--json")) == 0
    full = json.loads(capsys.readouterr().out)["scores"][0]
    assert full["ruleset"] == "full" and full["clinical_alerts"] == 0


@pytest.mark.parametrize(("file", "row", "line", "message"), [
    ("observations", ("p1", "spo3", "95", "%", day(1), ""), 2, "kind 'spo3' is not one of"),
    ("observations", ("p1", "spo2", "high", "%", day(1), ""), 2, "value 'high' is not a number"),
    ("observations", ("p1", "spo2", "95", "kg", day(1), ""), 2, "unit 'kg' for spo2"),
    ("observations", ("p1", "spo2", "95", "%", "2025-03-01 08:00", ""), 2,
     "measured_at '2025-03-01 08:00' has no UTC offset"),
    ("observations", ("p1", "spo2", "95", "%", "yesterday", ""), 2,
     "measured_at 'yesterday' is not an ISO 8601 time"),
    ("observations", ("p1", "spo2", "95", "%", day(1), "wobbly"), 2, "flag 'wobbly'"),
    ("observations", ("p9", "spo2", "95", "%", day(1), ""), 2, "patient 'p9' is not in"),
    ("observations", ("p1", "spo2", "95", "%"), 2, "4 fields, the header has 6"),
    ("observations", ("p1", "spo2", "20", "%", day(1), ""), 2,
     "value 20 % is outside the plausible 50-100"),
    ("patients", ("p1", "asthma"), 2, "group 'asthma' is not one of"),
    ("events", ("p1", "flu", day(1), day(2)), 2, "event type 'flu'"),
    ("events", ("p1", "infection", day(3), day(2)), 2, "evident is before onset"),
    ("events", ("p1", "infection", day(3), ""), 2, "event type infection needs its evident time"),
])  # fmt: skip
def test_bad_rows_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture, file: str,
                                     row: tuple, line: int, message: str) -> None:  # fmt: skip
    heads = {"observations": ("patient_id", "kind", "value", "unit", "measured_at", "flags"),
             "patients": ("patient_id", "group"),
             "events": ("patient_id", "type", "onset", "evident")}  # fmt: skip
    good = {"observations": [("p1", "spo2", "95", "%", day(1), "")],
            "patients": [("p1", "copd")], "events": []}  # fmt: skip
    paths = {}
    for name, head in heads.items():
        rows = [row] if name == file else good[name]
        paths[name] = write(tmp_path / f"{name}.csv", [head, *rows])
    assert main(args(paths)) == 1
    err = capsys.readouterr().err
    assert f"{paths[file]}: line {line}: {message}" in err, err
    assert "Traceback" not in err


def test_missing_columns_and_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    obs = write(tmp_path / "o.csv", [("patient_id", "kind", "value")])
    pats = write(tmp_path / "p.csv", [("patient_id", "group"), ("p1", "copd")])
    assert main(["evaluate", "--observations", str(obs), "--patients", str(pats)]) == 1
    assert "line 1: missing column(s) unit, measured_at, flags" in capsys.readouterr().err
    assert main(["evaluate", "--observations", str(tmp_path / "nope.csv"), "--patients",
                 str(pats)]) == 1  # fmt: skip
    assert "nope.csv: no such file" in capsys.readouterr().err
    assert main(["evaluate", "--patients", str(pats)]) == 2
    assert main(["evaluate", "--cohort", str(tmp_path)]) == 1
    assert "no cohort.json" in capsys.readouterr().err
