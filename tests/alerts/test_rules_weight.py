"""Heart-failure weight rules: gain in 3 days, one-day jump, loss, implausible weights."""

from __future__ import annotations

import numpy as np

from alerts.baseline import Window
from alerts.ruleset import FULL, evaluate_new
from alerts.series import DAY_S, PatientContext, Series
from alerts.trends import Signal, TrendRule
from alerts.weight import WeightChange, implausible, implausible_findings, plausible_weights
from vitalvagt.kinds import Kind

T0 = 1_736_150_400
HF = PatientContext("heart_failure")


def weights(values: list[float | None]) -> Series:
    days = [d for d, v in enumerate(values) if v is not None]
    return Series.build([T0 + d * DAY_S for d in days], [Kind.WEIGHT] * len(days),
                        [values[d] for d in days])  # fmt: skip


def fire(rule: WeightChange, s: Series, ctx: PatientContext = HF) -> list[int]:
    return [f.at_index for f in rule.evaluate(s, np.arange(len(s)), ctx)]


def test_gain_more_than_2_kg_in_3_days() -> None:
    rule = WeightChange("weight:gain3d", days=3, kg=2.0)
    # day 3: 82.0 - min(80.0, 80.5, 81.0) = 2.0: not more than 2; day 4: 82.6 - 80.5 = 2.1
    s = weights([80.0, 80.5, 81.0, 82.0, 82.6])
    assert fire(rule, s) == [4]
    f = rule.evaluate(s, np.array([4]), HF)[0]
    assert f.details["change_kg"] == 2.1 and f.details["reference_kg"] == 80.5
    assert "Weight up 2.1 kg within 3 days" in f.message
    assert fire(rule, s, PatientContext("copd")) == []  # a heart-failure rule


def test_gain_needs_a_reading_in_the_previous_days() -> None:
    rule = WeightChange("weight:gain3d", days=3, kg=2.0)
    assert fire(rule, weights([80.0, None, None, None, 83.0])) == []


def test_one_day_jump() -> None:
    rule = WeightChange("weight:jump1d", days=1, kg=1.5)
    assert fire(rule, weights([80.0, 81.5, 83.1, 83.0])) == [2]  # 1.5 is not more than 1.5


def test_loss_below_baseline_only() -> None:
    rule = WeightChange("weight:loss", days=3, kg=1.5, direction=-1, below_baseline_kg=1.0,
                        window=Window(span=10, gap=3, min_days=5))  # fmt: skip
    # baseline 80; recovering from a gain (83 -> 81) is not a loss; 80 -> 78.2 is
    base = [80.0] * 10
    assert fire(rule, weights([*base, 83.0, 83.0, 81.0])) == []
    assert fire(rule, weights([*base, 80.0, 79.5, 78.4])) == [12]


def test_implausible_weight_is_left_out_and_noticed() -> None:
    s = weights([80.0, 80.2, 79.9, 80.1, 92.0, 80.3])  # someone else at day 4
    bad = implausible(s, HF)
    assert list(np.flatnonzero(bad)) == [4]
    assert not plausible_weights(s, HF)[4]
    notes = implausible_findings(s, np.arange(len(s)), HF)
    assert [(f.rule, f.category, f.at_index) for f in notes] == [("quality:weight", "quality", 4)]
    gain = WeightChange("weight:gain3d", days=3, kg=2.0)
    assert fire(gain, s) == []  # 92 kg is not a gain of 12 kg
    full = evaluate_new(s, slice(None), HF, FULL)
    assert [(f.rule, f.at_index) for f in full] == [("quality:weight", 4)]


def test_weight_control_chart_hand_computed() -> None:
    rule = TrendRule("weight:trend", (Signal(Kind.WEIGHT, +1, floor=0.4),), ("heart_failure",),
                     k=1.0, h=3.0, days=3, window=Window(span=10, gap=3, min_days=5))
    base = [80.0, 80.2, 79.8, 80.0, 80.0, 80.2, 79.8, 80.0, 80.0, 80.2]
    # baseline median 80.0, MAD 0.2 -> 0.30, mean |dev| 0.12 -> 0.15; floor 0.4 -> sd 0.4
    s = weights([*base, 80.4, 80.8, 81.2])  # z 1, 2, 3 -> CUSUM (k 1): 0 + 1 + 2 = 3
    d = rule.explain(s, len(s) - 1, HF)
    assert d["weight"]["baseline_median"] == 80.0 and d["weight"]["baseline_sd"] == 0.4
    assert abs(d["score"] - 3.0) < 1e-9
    assert fire(rule, s) == [len(s) - 1]


SMALL = Window(span=10, gap=3, min_days=5)


def test_gain_needs_more_than_the_patients_own_spread() -> None:
    # A steady patient: baseline days 0..9, median 80.0, MAD 0.2 -> 0.297, mean |dev| 0.12
    # -> 0.150, floor 0.4: spread 0.4; 2.5 x 0.4 = 1.0 < 2 kg, so the rule of thumb decides.
    rule = WeightChange("weight:gain3d", days=3, kg=2.0, spread_k=2.5, window=SMALL)
    steady = [80.0, 80.2, 79.8, 80.0, 80.0, 80.2, 79.8, 80.0, 80.0, 80.2]
    s = weights([*steady, 80.0, 80.0, 80.0, 82.1])  # 82.1 - 80.0 = 2.1 > 2 and > 1.0
    assert fire(rule, s) == [13]
    f = rule.evaluate(s, np.array([13]), HF)[0]
    assert f.details["spread_kg"] == 0.4 and f.details["spread_k"] == 2.5
    # A patient whose weight swings by a kilogram: baseline 79,81,79,81,...: median 80,
    # MAD 1 -> 1.483, mean |dev| 1 -> 1.253: spread 1.483; 2.5 x 1.483 = 3.71 kg needed.
    swinging = [79.0, 81.0] * 5
    s = weights([*swinging, 80.0, 80.0, 80.0, 82.1])  # 2.1 kg: not more than 3.71
    assert fire(rule, s) == []
    s = weights([*swinging, 80.0, 80.0, 80.0, 83.8])  # 3.8 kg: more than 3.71 (and 2)
    assert fire(rule, s) == [13]
    # The fixed rule alone (version 1) fires on both.
    plain = WeightChange("weight:gain3d", days=3, kg=2.0, window=SMALL)
    assert fire(plain, weights([*swinging, 80.0, 80.0, 80.0, 82.1])) == [13]


def test_spread_gate_waits_for_a_baseline() -> None:
    # Without a baseline (fewer than 5 day values before the gap) the rule of thumb applies.
    rule = WeightChange("weight:gain3d", days=3, kg=2.0, spread_k=2.5, window=SMALL)
    assert fire(rule, weights([80.0, 80.5, 81.0, 82.0, 82.6])) == [4]


def test_loss_needs_more_than_the_patients_own_spread() -> None:
    rule = WeightChange("weight:loss", days=3, kg=1.5, direction=-1, below_baseline_kg=1.0,
                        window=SMALL, spread_k=2.5)  # fmt: skip
    # swinging baseline: spread 1.483, 2.5 x = 3.71 kg; a 1.6 kg loss below 80 is not enough
    swinging = [79.0, 81.0] * 5
    assert fire(rule, weights([*swinging, 80.0, 80.0, 80.0, 78.4])) == []
    assert fire(rule, weights([*swinging, 80.0, 80.0, 80.0, 76.2])) == [13]  # 3.8 > 3.71
    steady = [80.0] * 10  # spread: the floor 0.4 -> 1.0 kg: the 1.5 kg rule decides
    assert fire(rule, weights([*steady, 80.0, 79.5, 78.4])) == [12]


def test_full_set_weight_rules_are_version_2() -> None:
    names = {getattr(r, "name", ""): r for r in FULL.rules}
    for n in ("weight:gain3d", "weight:jump1d", "weight:loss"):
        assert names[n].version == 2 and names[n].spread_k == 2.5
    assert names["weight:trend"].version == 1  # unchanged
    assert (names["weight:trend"].k, names["weight:trend"].h) == (1.0, 3.0)
