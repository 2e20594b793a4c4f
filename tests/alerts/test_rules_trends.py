"""Baselines (median, robust spread), the windowed CUSUM, and the trend rules."""

from __future__ import annotations

import numpy as np

from alerts.baseline import Window, baseline, kind_days, suffix_cusum
from alerts.ruleset import FULL, evaluate_new
from alerts.series import DAY_S, PatientContext, Series, day_of
from alerts.trends import Signal, TrendRule
from vitalvagt.kinds import Kind

T0 = 1_736_150_400  # 2025-01-06 08:00 UTC (09:00 local)
CTX = PatientContext("copd")


def daily(spo2: list[float], pulse: list[float] | None = None) -> Series:
    t, k, v = [], [], []
    for d, s in enumerate(spo2):
        if pulse is not None:
            t.append(T0 + d * DAY_S)
            k.append(Kind.PULSE)
            v.append(pulse[d])
        t.append(T0 + d * DAY_S + 60)
        k.append(Kind.SPO2)
        v.append(s)
    return Series.build(t, k, v)


def test_day_values_and_partial_day() -> None:
    s = Series.build([T0, T0 + 60, T0 + DAY_S], [Kind.SPO2] * 3, [90, 94, 95])
    kd = kind_days(s, Kind.SPO2, CTX)
    assert list(kd.grid) == [92.0, 95.0]
    d = day_of(s.t, CTX.day_offset_s)
    assert list(kd.partial(np.arange(3), d)) == [90.0, 92.0, 95.0]  # only up to the reading


def test_baseline_median_and_robust_spread_by_hand() -> None:
    # Days 0..9: 93 93 94 92 93 95 91 93 94 92; window for day 12 with gap 2, span 10.
    vals = [93, 93, 94, 92, 93, 95, 91, 93, 94, 92, 80, 80, 80]
    s = daily(vals)
    kd = kind_days(s, Kind.SPO2, CTX)
    b = baseline(kd, np.array([kd.d0 + 12]), Window(span=10, gap=2, min_days=5), floor=0.5)
    assert b.median[0] == 93.0
    # |dev|: 0 0 1 1 0 2 2 0 1 1 -> MAD 1 (x1.4826), mean 0.8 (x1.2533 = 1.00264)
    assert np.isclose(b.sd[0], 1.4826)
    assert b.n[0] == 10
    floored = baseline(kd, np.array([kd.d0 + 12]), Window(10, 2, 5), floor=2.0)
    assert floored.sd[0] == 2.0


def test_no_baseline_yet_for_a_new_patient() -> None:
    s = daily([93] * 10)
    kd = kind_days(s, Kind.SPO2, CTX)
    b = baseline(kd, np.array([kd.d0 + 9]), Window(span=28, gap=7, min_days=7), floor=1)
    assert not b.ready[0] and b.n[0] == 2  # days 0 and 1 only


def test_suffix_cusum_by_hand() -> None:
    hist = np.array([[1.0, np.nan, 2.0, -3.0, 1.5]])
    # z - k (k 0.5): 0.5, (missing 0), 1.5, -3.5, 1.0; today 2 -> 1.5
    # suffixes of the history: 1.0, -2.5, -1.0, -0.5 ... best 1.0 -> 1.0 + 1.5
    assert suffix_cusum(hist, np.array([2.0]), 0.5)[0] == 2.5
    assert suffix_cusum(hist, np.array([-5.0]), 0.5)[0] == 0.0
    assert suffix_cusum(np.full((1, 3), np.nan), np.array([np.nan]), 0.5)[0] == 0.0


RULE = TrendRule("trend:copd", (Signal(Kind.SPO2, -1, floor=1.0), Signal(Kind.PULSE, +1,
                 floor=4.0)), ("copd", "both"), k=0.5, h=4.0, red_h=8.0, days=3,
                 window=Window(span=10, gap=3, min_days=5))  # fmt: skip


def stable(n: int) -> tuple[list[float], list[float]]:
    spo2 = [93, 94, 92, 93, 93, 94, 92, 93, 93, 94][:n]
    pulse = [80, 84, 76, 80, 80, 84, 76, 80, 80, 84][:n]
    return spo2, pulse


def test_copd_trend_hand_computed() -> None:
    spo2, pulse = stable(10)
    # Baseline SpO2: median 93, |dev| 0 1 1 0 0 1 1 0 0 1: MAD 0.5 -> 0.74, mean 0.5 -> 0.63,
    # floor 1.0 -> sd 1. Pulse: median 80, MAD 2 -> 2.97, mean 2 -> 2.51, floor 4 -> sd 4.
    spo2 += [93, 93, 93, 91, 90]  # days 10..14
    pulse += [80, 80, 80, 84, 88]
    s = daily(spo2, pulse)
    i = len(s) - 1  # day 14's SpO2
    d = RULE.explain(s, i, CTX)
    assert d["status"] == "ok"
    assert d["spo2"]["baseline_median"] == 93.0 and d["spo2"]["baseline_sd"] == 1.0
    assert d["pulse"]["baseline_median"] == 80.0 and d["pulse"]["baseline_sd"] == 4.0
    # Day 14: z spo2 3, pulse 2 -> 5/sqrt2 = 3.536; day 13: 2, 1 -> 2.121; day 12 and 11: 0.
    # CUSUM (k 0.5): (2.121 - .5) + (3.536 - .5) = 4.657 >= 4
    assert abs(d["score"] - (3 / 2**0.5 - 0.5 + 5 / 2**0.5 - 0.5)) < 1e-3
    out = RULE.evaluate(s, np.array([i - 1, i]), CTX)  # day 14: pulse, then SpO2
    # at day 14's pulse (SpO2 of the day not yet in): z = 2 -> 1.621 + 1.5 = 3.12 < 4
    assert [f.at_index for f in out] == [i]
    f = out[0]
    assert (f.rule, f.category, f.severity.value) == ("trend:copd", "clinical", "yellow")
    assert "oxygen saturation 90 % against the usual 93 %" in f.message
    assert "pulse 88 /min against the usual 80 /min" in f.message


def test_trend_says_no_baseline_yet_and_stays_silent() -> None:
    s = daily([93, 93, 80, 80], [80, 80, 120, 120])
    d = RULE.explain(s, len(s) - 1, CTX)
    assert d["status"] == "no baseline yet" and d["needs_days"] == 5
    assert RULE.evaluate(s, np.arange(len(s)), CTX) == []


def test_trend_rule_only_for_its_groups() -> None:
    spo2, pulse = stable(10)
    s = daily([*spo2, 85, 85, 85], [*pulse, 110, 110, 110])
    assert RULE.evaluate(s, np.arange(len(s)), PatientContext("heart_failure")) == []
    assert RULE.explain(s, 0, PatientContext("heart_failure"))["status"].startswith("not used")


def test_unreliable_readings_are_left_out_of_the_trend() -> None:
    spo2, pulse = stable(10)
    s0 = daily([*spo2, 85, 85, 85], [*pulse, 80, 80, 80])
    rel = np.ones(len(s0), dtype=bool)
    rel[20:] = False  # the last three days' readings are flagged
    s = Series(s0.t, s0.kind, s0.value, rel)
    out = evaluate_new(s, slice(None), CTX, FULL)
    assert not [f for f in out if f.category == "clinical" and f.at_index >= 20]
    assert {f.rule for f in out if f.at_index >= 20} <= {"quality:spo2", "quality:pulse"}


def test_a_new_patient_has_limits_but_no_trend_yet() -> None:
    s = daily([93, 93, 84, 83], [80, 80, 80, 80])
    out = evaluate_new(s, slice(None), CTX, FULL)
    assert [(f.rule, f.severity.value) for f in out] == [("limit:spo2", "red")]  # 2 of 3 red
    trend = next(r for r in FULL.rules if getattr(r, "name", "") == "trend:copd")
    assert trend.explain(s, len(s) - 1, CTX)["status"] == "no baseline yet"


def test_provisional_baseline_for_a_new_patient() -> None:
    rule = TrendRule("t", (Signal(Kind.SPO2, -1, floor=1.0),), ("copd",), k=0.5, h=4.0,
                     days=3, window=Window(span=28, gap=7, min_days=7),
                     fallback=Window(span=28, gap=2, min_days=5))  # fmt: skip
    s = daily([93, 94, 92, 93, 93, 93, 90, 89])  # day 7: baseline days 0..4 (gap 2)
    d = rule.explain(s, len(s) - 1, CTX)
    assert d["status"] == "ok" and d["spo2"]["baseline_days"] == 5
    assert d["spo2"]["baseline_median"] == 93.0
    # sd: MAD 0, mean |dev| 0.4 -> 0.5, floor 1. z: day 5 0, day 6 3, day 7 4 -> capped 3;
    # CUSUM (k 0.5) at day 7: 2.5 + 2.5 = 5 >= 4; at day 6: 2.5 < 4
    assert [f.at_index for f in rule.evaluate(s, np.arange(len(s)), CTX)] == [7]


def test_full_copd_trend_v2_hand_computed() -> None:
    # The full set's trend:copd (version 2: k 0.75, h 2.65; baseline 28 days ending 7 days
    # back; floors SpO2 1.5, pulse 5), on 30 stable days then a change.
    rule = next(r for r in FULL.rules if getattr(r, "name", "") == "trend:copd")
    assert (rule.version, rule.k, rule.h, rule.days) == (2, 0.75, 2.65, 6)
    spo2, pulse = stable(10)
    spo2, pulse = spo2 * 3, pulse * 3  # days 0..29: SpO2 median 93, sd floor 1.5; pulse
    # median 80, |dev| 0 4 4 0 0 4 4 0 0 4: MAD 2 -> 2.97, mean 2 -> 2.51, floor 5 -> sd 5
    spo2 += [93, 93, 93, 93, 93, 92, 91]  # days 30..36
    pulse += [80, 80, 80, 80, 80, 84, 85]
    s = daily(spo2, pulse)
    i = len(s) - 1  # day 36's SpO2
    d = rule.explain(s, i, CTX)
    assert d["spo2"]["baseline_sd"] == 1.5 and d["pulse"]["baseline_sd"] == 5.0
    assert d["spo2"]["baseline_median"] == 93.0 and d["pulse"]["baseline_median"] == 80.0
    # day 35: z spo2 1/1.5 = 0.667, pulse 4/5 = 0.8 -> 1.467/sqrt2 = 1.037; day 36: 1.333,
    # 1.0 -> 2.333/sqrt2 = 1.650; days 30..34: 0 (below k: the CUSUM restarts).
    # CUSUM (k 0.75): (1.037 - 0.75) + (1.650 - 0.75) = 1.187 < 2.65: silent
    z35, z36 = (1 / 1.5 + 0.8) / 2**0.5, (2 / 1.5 + 1.0) / 2**0.5
    assert abs(d["score"] - (z35 - 0.75 + z36 - 0.75)) < 1e-3
    assert [f.rule for f in evaluate_new(s, slice(None), CTX, FULL)
            if f.rule == "trend:copd"] == []  # fmt: skip
    # one more day at SpO2 89, pulse 90: z 2.667, 2.0 -> 3.300; CUSUM 1.187 + 2.550 = 3.737
    s = daily([*spo2, 89], [*pulse, 90])
    d = rule.explain(s, len(s) - 1, CTX)
    z37 = (4 / 1.5 + 2.0) / 2**0.5
    assert abs(d["score"] - (z35 + z36 + z37 - 3 * 0.75)) < 1e-3
    out = [f for f in evaluate_new(s, slice(None), CTX, FULL) if f.rule == "trend:copd"]
    assert [(f.at_index, f.severity.value, f.version) for f in out] == [(len(s) - 1, "yellow", 2)]


def test_single_sign_trends_v2_thresholds() -> None:
    rules = {getattr(r, "name", ""): r for r in FULL.rules}
    for name in ("trend:spo2", "trend:pulse"):
        r = rules[name]
        assert (r.version, r.k, r.h, r.red_h) == (2, 1.0, 10.0, 14.0)
    # SpO2 alone, 30 stable days (median 93, sd floor 1.5), then 89 89 89 89: z 2.667 each;
    # CUSUM (k 1): 1.667 per day -> 5.0 after 3 days, 6.67 after 4: below 10, silent; with
    # 86 (z capped at 3, 2 per day) from day 30: 2, 4, 6, 8, 10 -> fires on the fifth day.
    spo2, _ = stable(10)
    s = daily(spo2 * 3 + [86] * 5)
    out = [f.at_index for f in rules["trend:spo2"].evaluate(s, np.arange(len(s)), CTX)]
    assert out == [len(s) - 1]
    s = daily(spo2 * 3 + [89] * 4)
    assert rules["trend:spo2"].evaluate(s, np.arange(len(s)), CTX) == []
