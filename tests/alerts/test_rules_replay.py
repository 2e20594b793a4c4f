"""Same findings however the readings are chunked; alerts deduplicated and auto-cleared."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.finding import Category, Finding
from alerts.replay import chunks, replay_findings, to_alerts
from alerts.rules import Severity
from alerts.ruleset import FULL, GUIDELINE, RuleSet, evaluate_new
from alerts.series import DAY_S, HOUR_S, PatientContext, Series
from vitalvagt.kinds import Kind

T0 = 1_736_150_400
GROUPS = st.sampled_from(["copd", "heart_failure", "both"])


@st.composite
def patients(draw: st.DrawFn) -> tuple[Series, PatientContext]:
    days = draw(st.integers(5, 60))
    drift = draw(st.floats(-0.5, 0.5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t, k, v, r = [], [], [], []
    base = {Kind.SPO2: 94, Kind.PULSE: 80, Kind.WEIGHT: 80.0, Kind.BP_SYSTOLIC: 130,
            Kind.TEMPERATURE: 36.8}  # fmt: skip
    sd = {Kind.SPO2: 1.5, Kind.PULSE: 5, Kind.WEIGHT: 0.5, Kind.BP_SYSTOLIC: 8,
          Kind.TEMPERATURE: 0.3}  # fmt: skip
    sign = {Kind.SPO2: -4, Kind.PULSE: 8, Kind.WEIGHT: 1.0, Kind.BP_SYSTOLIC: 0,
            Kind.TEMPERATURE: 0.2}  # fmt: skip
    for d in range(days):
        if rng.random() < 0.1:
            continue
        late = max(0, d - days + 8) * drift  # the last week may drift
        for j, kind in enumerate(base):
            if rng.random() < 0.15:
                continue
            # equal times happen (a reading's parts); keep some at the same second
            when = T0 + d * DAY_S + int(rng.integers(0, 3)) * 60 * (j % 2) + j * 30
            t.append(when)
            k.append(kind)
            val = base[kind] + sign[kind] * late + rng.normal(0, sd[kind])
            v.append(round(val, 1 if kind in (Kind.WEIGHT, Kind.TEMPERATURE) else 0))
            r.append(bool(rng.random() > 0.08))
    ctx = PatientContext(draw(GROUPS), spo2_scale2=draw(st.booleans()))
    return Series.build(t, k, v, r), ctx


def keys(findings: list[Finding]) -> list[tuple]:
    return [f.key() for f in findings]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patients(), st.sampled_from([FULL, GUIDELINE]))
def test_one_chunk_equals_per_reading_and_per_day(p: tuple[Series, PatientContext],
                                                  rs: RuleSet) -> None:  # fmt: skip
    s, ctx = p
    whole = replay_findings(s, ctx, rs, "all")
    assert keys(replay_findings(s, ctx, rs, "reading")) == keys(whole)
    assert keys(replay_findings(s, ctx, rs, "day")) == keys(whole)
    # and a reading's findings never depend on later readings
    if len(s) > 2:
        cut = len(s) // 2
        early = [f for f in whole if f.at_index < cut]
        assert keys(evaluate_new(s.head(cut), slice(0, cut), ctx, rs)) == keys(early)
    assert all(s.reliable[f.at_index] for f in whole if f.category == Category.CLINICAL)


def test_chunks_cover_the_series_in_order() -> None:
    s = Series.build([T0, T0 + 60, T0 + DAY_S, T0 + 3 * DAY_S], [Kind.SPO2] * 4, [90] * 4)
    ctx = PatientContext("copd")
    assert [(c.start, c.stop) for c in chunks(s, ctx, "day")] == [(0, 2), (2, 3), (3, 4)]
    assert [(c.start, c.stop) for c in chunks(s, ctx, "reading")] == [(i, i + 1)
                                                                     for i in range(4)]


def _f(i: int, severity: Severity = Severity.YELLOW, rule: str = "limit:spo2") -> Finding:
    return Finding(rule, 1, severity, Category.CLINICAL, i, 84.0, Kind.SPO2, "m")


def test_one_active_alert_per_rule_rises_and_clears() -> None:
    # readings every 12 h (0 h, 12 h, ... 132 h); the rule fires at readings 0, 1 (red), 5, 11
    s = Series.build([T0 + i * 12 * HOUR_S for i in range(12)], [Kind.SPO2] * 12, [90] * 12)
    rs = RuleSet("t", (), clear_h={"": 48.0})
    alerts = to_alerts([_f(0), _f(1, Severity.RED), _f(5), _f(11)], s, rs)
    # reading 5 (60 h): 48 h after 12 h is 60 h, no reading after that yet: still active.
    # reading 11 (132 h): 48 h after 60 h is 108 h, reading 10 (120 h) came without the rule
    # firing: cleared at 120 h, and 11 opens a new alert.
    assert [(a.opened_index, a.severity, a.updates) for a in alerts] == [
        (0, Severity.RED, 2), (11, Severity.YELLOW, 0)]
    assert alerts[0].cleared_at == T0 + 120 * HOUR_S
    assert alerts[0].fired == [T0, T0 + 12 * HOUR_S, T0 + 60 * HOUR_S]


def test_silence_alone_does_not_clear() -> None:
    s = Series.build([T0, T0 + 10 * DAY_S], [Kind.SPO2] * 2, [84, 84])  # nothing in between
    alerts = to_alerts([_f(0), _f(1)], s, RuleSet("t", ()))
    assert len(alerts) == 1 and alerts[0].updates == 1


def test_rules_are_deduplicated_apart() -> None:
    s = Series.build([T0, T0 + 60], [Kind.SPO2] * 2, [84, 84])
    alerts = to_alerts([_f(0), _f(0, rule="news2"), _f(1)], s, RuleSet("t", ()))
    assert [a.rule for a in alerts] == ["limit:spo2", "news2"]
