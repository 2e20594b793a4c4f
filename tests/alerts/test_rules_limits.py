"""Rule limit:<kind>: the four limits, the group's standard set, overrides, persistence."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from alerts.limits import STANDARD_LIMITS, LimitRule, limits_for
from alerts.rules import Limits, Severity
from alerts.ruleset import GUIDELINE, evaluate_new
from alerts.series import PatientContext, Series
from vitalvagt.kinds import Kind

T0 = 1_736_150_400  # 2025-01-06 08:00 UTC
H = 3600
MIGRATION = Path(__file__).parents[2] / "vitalvagt/db/migrations/0003_alerts.sql"


def series(values: list[float], kind: Kind = Kind.SPO2, reliable: list[bool] | None = None,
           step_h: float = 24) -> Series:  # fmt: skip
    return Series.build([T0 + int(i * step_h * H) for i in range(len(values))],
                        [kind] * len(values), values, reliable)  # fmt: skip


def test_standard_limits_are_the_migrations_defaults() -> None:
    rows = re.findall(r"\('(\w+)', '(\w+)', ([\d.]+|NULL), ([\d.]+|NULL), ([\d.]+|NULL), "
                      r"([\d.]+|NULL)\)", MIGRATION.read_text())  # fmt: skip
    assert len(rows) == 12
    for group, kind, *vals in rows:
        want = Limits(*(None if v == "NULL" else float(v) for v in vals))
        assert STANDARD_LIMITS[group][Kind(kind)] == want, (group, kind)
    assert sum(len(v) for v in STANDARD_LIMITS.values()) == 12


def test_a_patients_own_limits_win_per_kind() -> None:
    own = {Kind.SPO2: Limits(80, 84, None, None)}
    lim = limits_for(PatientContext("heart_failure", limits=own))
    assert lim[Kind.SPO2] == own[Kind.SPO2]
    assert lim[Kind.PULSE] == STANDARD_LIMITS["heart_failure"][Kind.PULSE]


@pytest.mark.parametrize(("value", "severity"), [
    (88, None), (87, Severity.YELLOW), (85, Severity.YELLOW), (84, Severity.RED),
])  # fmt: skip
def test_guideline_one_reading_copd_spo2(value: float, severity: Severity | None) -> None:
    out = evaluate_new(series([value]), slice(None), PatientContext("copd"), GUIDELINE)
    assert [f.severity for f in out] == ([severity] if severity else [])
    if severity:
        f = out[0]
        assert (f.rule, f.category, f.at_index, f.value) == ("limit:spo2", "clinical", 0, value)
        limit = "85" if severity is Severity.RED else "88"
        assert f"below the {'alert' if severity is Severity.RED else 'warning'} limit {limit} %" \
            in f.message


def test_pulse_high_side_and_both_groups() -> None:
    s = series([110, 111, 130, 131], Kind.PULSE, step_h=1)
    out = evaluate_new(s, slice(None), PatientContext("both"), GUIDELINE)
    assert [(f.at_index, f.severity) for f in out] == [(1, Severity.YELLOW), (2, Severity.YELLOW),
                                                      (3, Severity.RED)]  # fmt: skip


def test_persistence_two_of_three() -> None:
    # copd SpO2 warn 88 / alert 85: outside at 0, inside at 1, outside at 2 and 3.
    s = series([86, 92, 87, 84])
    rule = LimitRule(n=2, m=3)
    out = rule.evaluate(s, np.arange(4), PatientContext("copd"))
    # reading 0: 1 of 1 -> nothing; 2: 2 of 3 -> yellow; 3: 3 of 3, red needs 2 reds -> yellow
    assert [(f.at_index, f.severity) for f in out] == [(2, Severity.YELLOW), (3, Severity.YELLOW)]
    assert out[0].details["outside"] == 2 and out[0].details["of_last"] == 3
    red = LimitRule(n=2, m=3, n_red=1).evaluate(s, np.arange(4),
                                                PatientContext("copd"))  # fmt: skip
    assert red[-1].severity is Severity.RED


def test_persistence_forgets_readings_older_than_the_span() -> None:
    s = series([86, 86], step_h=100)  # 100 h apart, span 96 h
    assert LimitRule(n=2, m=3, span_h=96).evaluate(
        s, np.arange(2), PatientContext("copd")) == []


def test_alert_only_ignores_the_warning_band() -> None:
    s = series([87, 87, 84, 83])
    out = LimitRule(n=2, m=3, alert_only=True).evaluate(s, np.arange(4), PatientContext("copd"))
    assert [(f.at_index, f.severity) for f in out] == [(3, Severity.RED)]


def test_an_unreliable_reading_never_opens_a_limit_alert() -> None:
    s = series([70, 70], reliable=[False, False])
    out = evaluate_new(s, slice(None), PatientContext("copd"), GUIDELINE)
    assert [(f.rule, f.category) for f in out] == [("quality:spo2", "quality")] * 2
