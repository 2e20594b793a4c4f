"""NEWS2 and TOBS at every band edge (reference section 4; alerts/scores.py for the edges)."""

from __future__ import annotations

import numpy as np
import pytest

from alerts.scores import (
    ScoreRule,
    news2,
    news2_pulse,
    news2_resp,
    news2_spo2,
    news2_systolic,
    news2_temperature,
    tobs,
    tobs_pulse,
    tobs_resp,
    tobs_systolic,
    tobs_temperature,
)
from alerts.series import PatientContext, Series
from vitalvagt.kinds import Kind


@pytest.mark.parametrize(("r", "pts"), [
    (8, 3), (8.5, 3), (9, 1), (11, 1), (11.5, 1), (12, 0), (20, 0), (20.5, 2), (21, 2),
    (24, 2), (24.5, 3), (25, 3),
])  # fmt: skip
def test_news2_respiration(r: float, pts: int) -> None:
    assert news2_resp(r) == pts


@pytest.mark.parametrize(("s", "pts"), [
    (91, 3), (91.5, 3), (92, 2), (93, 2), (93.5, 2), (94, 1), (95, 1), (95.5, 1), (96, 0),
    (100, 0),
])  # fmt: skip
def test_news2_spo2_scale1(s: float, pts: int) -> None:
    assert news2_spo2(s) == pts
    assert news2_spo2(s, on_oxygen=True) == pts  # scale 1 ignores oxygen (it scores apart)


@pytest.mark.parametrize(("s", "air", "oxygen"), [
    (83, 3, 3), (84, 2, 2), (85, 2, 2), (85.5, 2, 2), (86, 1, 1), (87, 1, 1), (87.5, 1, 1),
    (88, 0, 0), (92, 0, 0), (92.5, 0, 1), (93, 0, 1), (94, 0, 1), (94.5, 0, 2), (95, 0, 2),
    (96, 0, 2), (96.5, 0, 3), (97, 0, 3), (100, 0, 3),
])  # fmt: skip
def test_news2_spo2_scale2(s: float, air: int, oxygen: int) -> None:
    assert news2_spo2(s, scale2=True, on_oxygen=False) == air
    assert news2_spo2(s, scale2=True, on_oxygen=True) == oxygen


@pytest.mark.parametrize(("p", "pts"), [
    (90, 3), (90.5, 2), (91, 2), (100, 2), (100.5, 1), (101, 1), (110, 1), (110.5, 0),
    (111, 0), (219, 0), (219.5, 3), (220, 3),
])  # fmt: skip
def test_news2_systolic(p: float, pts: int) -> None:
    assert news2_systolic(p) == pts


@pytest.mark.parametrize(("p", "pts"), [
    (40, 3), (40.5, 1), (41, 1), (50, 1), (50.5, 0), (51, 0), (90, 0), (90.5, 1), (91, 1),
    (110, 1), (110.5, 2), (111, 2), (130, 2), (130.5, 3), (131, 3),
])  # fmt: skip
def test_news2_pulse(p: float, pts: int) -> None:
    assert news2_pulse(p) == pts


@pytest.mark.parametrize(("t", "pts"), [
    (35.0, 3), (35.05, 3), (35.1, 1), (36.0, 1), (36.05, 1), (36.1, 0), (38.0, 0),
    (38.05, 1), (38.1, 1), (39.0, 1), (39.05, 2), (39.1, 2),
])  # fmt: skip
def test_news2_temperature(t: float, pts: int) -> None:
    assert news2_temperature(t) == pts


def test_news2_total_oxygen_and_missing() -> None:
    sc = news2({"spo2": 93, "pulse": 112, "bp_systolic": 105, "temperature": 38.4},
               on_oxygen=True)  # fmt: skip
    assert sc.points == {"spo2": 2, "oxygen": 2, "bp_systolic": 1, "pulse": 2, "temperature": 1}
    assert sc.total == 8
    assert sc.missing == ("respiratory_rate", "consciousness")
    unknown = news2({"spo2": 97})  # oxygen not known: not scored, named missing
    assert unknown.missing == ("respiratory_rate", "oxygen", "bp_systolic", "pulse",
                               "consciousness", "temperature")  # fmt: skip


# TOBS: the card's printed bands, and the edges it leaves unscored (marked *).
@pytest.mark.parametrize(("p", "pts"), [
    (38, 2), (39, 2), (39.5, 2), (40, 1), (49, 1), (49.5, 1), (50, 0), (89, 0), (89.5, 1),
    (90, 1), (109, 1), (109.5, 2), (110, 2), (129, 2), (129.5, 3), (130, 3), (131, 3),
])  # fmt: skip  # * 39 -> 2, * 130 -> 3
def test_tobs_pulse(p: float, pts: int) -> None:
    assert tobs_pulse(p) == pts


@pytest.mark.parametrize(("r", "pts"), [
    (7, 3), (8, 3), (8.5, 3), (9, 1), (11, 1), (11.5, 1), (12, 0), (20, 0), (20.5, 2), (21, 2),
    (24, 2), (24.5, 3), (25, 3), (26, 3),
])  # fmt: skip  # * 8 -> 3, * 25 -> 3
def test_tobs_respiration(r: float, pts: int) -> None:
    assert tobs_resp(r) == pts


@pytest.mark.parametrize(("t", "pts"), [
    (33.8, 3), (33.9, 3), (33.95, 3), (34.0, 2), (35.9, 2), (35.95, 2), (36.0, 0), (37.9, 0),
    (37.95, 1), (38.0, 1), (38.9, 1), (38.95, 2), (39.0, 2), (39.9, 2), (39.95, 3), (40.0, 3),
    (40.1, 3),
])  # fmt: skip  # * 33.9-34 -> 3, * 40.0 -> 3
def test_tobs_temperature_rectal(t: float, pts: int) -> None:
    assert tobs_temperature(t) == pts


@pytest.mark.parametrize(("t", "site", "pts"), [
    (37.4, "oral", 0), (37.5, "oral", 1), (37.0, "axilla", 1), (36.9, "axilla", 0),
    (38.4, "oral", 1), (38.5, "oral", 2), (37.9, "tympanum", 0), (38.0, "tympanum", 1),
])  # fmt: skip
def test_tobs_temperature_site_correction(t: float, site: str, pts: int) -> None:
    assert tobs_temperature(t, site) == pts


@pytest.mark.parametrize(("p", "pts"), [
    (68, 3), (69, 3), (69.5, 3), (70, 2), (79, 2), (79.5, 2), (80, 1), (99, 1), (99.5, 1),
    (100, 0), (199, 0), (199.5, 2), (200, 2), (201, 2),
])  # fmt: skip  # * 69 -> 3, * 200 -> 2
def test_tobs_systolic(p: float, pts: int) -> None:
    assert tobs_systolic(p) == pts


def test_tobs_total_and_missing() -> None:
    sc = tobs({"pulse": 112, "temperature": 38.2, "bp_systolic": 95})
    assert sc.points == {"pulse": 2, "temperature": 1, "bp_systolic": 1}
    assert sc.total == 4
    assert sc.missing == ("respiratory_rate", "consciousness")


T0 = 1_736_150_400


def _session(values: dict[Kind, float], reliable: bool = True) -> Series:
    kinds = list(values)
    return Series.build([T0 + 60 * i for i in range(len(kinds))], kinds,
                        [values[k] for k in kinds], [reliable] * len(kinds))  # fmt: skip


def test_score_rule_uses_the_session_and_names_missing() -> None:
    s = _session({Kind.SPO2: 91, Kind.PULSE: 115, Kind.BP_SYSTOLIC: 100,
                  Kind.TEMPERATURE: 38.6})  # fmt: skip
    rule = ScoreRule("news2", min_total=5, red_total=7)
    out = rule.evaluate(s, np.arange(len(s)), PatientContext("heart_failure"))
    # after pulse: 3 + 2 = 5 (2 parameters: too few); after systolic: 3+2+2 = 7; temp: 8
    assert [(f.at_index, f.value) for f in out] == [(2, 7.0), (3, 8.0)]
    assert out[-1].details["missing"] == ["respiratory_rate", "consciousness"]
    assert "not measured: respiratory_rate, consciousness" in out[-1].message
    # scale 2 for a hypercapnic patient on air: SpO2 91 scores 0
    out2 = rule.evaluate(s, np.arange(len(s)), PatientContext("copd", spo2_scale2=True))
    assert [(f.at_index, f.value) for f in out2] == [(3, 5.0)]


def test_score_rule_ignores_unreliable_readings() -> None:
    s = _session({Kind.SPO2: 80, Kind.PULSE: 140, Kind.BP_SYSTOLIC: 85}, reliable=False)
    assert ScoreRule("news2", 5, 7).evaluate(s, np.arange(3), PatientContext("copd")) == []


def test_tobs_rule() -> None:
    s = _session({Kind.PULSE: 131, Kind.BP_SYSTOLIC: 95, Kind.TEMPERATURE: 37.0})
    out = ScoreRule("tobs", 3, 5).evaluate(s, np.arange(3), PatientContext("copd"))
    assert [(f.rule, f.at_index, f.value, f.severity.value) for f in out] == [
        ("tobs", 2, 4.0, "yellow")]
