"""The rule sets, and `evaluate_new`: the one entry point, live and offline.

A rule is an object with `evaluate(series, indices, ctx) -> list[Finding]` that, for reading
i, uses readings 0..i of the series only. So the findings for a set of new readings do not
depend on how the readings were cut into chunks: evaluating each reading on arrival gives
exactly what one offline pass gives (tests/alerts/test_rules_replay.py checks it).

Two sets (docs/clinical-rules.md gives every rule's rationale):
- `GUIDELINE`: the group's fixed limits, every reading on its own (today's engine);
- `FULL`: limits with persistence, the personalised trend and weight rules, NEWS2 and TOBS,
  device quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from alerts.finding import Category, Finding
from alerts.limits import LimitRule
from alerts.quality_rule import QualityRule
from alerts.scores import ScoreRule
from alerts.series import DAY_S, PatientContext, Series, as_indices
from alerts.trends import Signal, TrendRule
from alerts.weight import WeightChange, implausible_findings, plausible_weights
from vitalvagt.baseline import DEFAULT_WINDOW, SPREAD_FLOORS, Window
from vitalvagt.kinds import Kind

__all__ = ["FULL", "GUIDELINE", "RULESETS", "Finding", "RuleSet", "evaluate_new"]


class Rule(Protocol):
    def evaluate(self, s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]: ...


@dataclass(frozen=True)
class WeightQuality:
    """Rule `quality:weight` for implausible weights (alerts/weight.py)."""

    version: int = 1

    def evaluate(self, s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]:
        return implausible_findings(s, idx, ctx)


@dataclass(frozen=True)
class RuleSet:
    name: str
    rules: tuple[Rule, ...]
    # An alert clears itself when its rule has not fired for this long while readings kept
    # arriving (alerts/replay.py); per rule-name prefix, "" is the default.
    clear_h: dict[str, float] = field(default_factory=lambda: {"": 48.0})
    # Days of history the rules look back at most (the live engine loads at least this
    # much): baselines end 35 days back, weight plausibility 30 days, persistence 4 days.
    history_days: int = 36

    def clear_hours(self, rule: str) -> float:
        best = ""
        for prefix in self.clear_h:
            if rule.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return self.clear_h[best]


def evaluate_new(series: Series, new: slice | np.ndarray | Sequence[int], ctx: PatientContext,
                 ruleset: RuleSet) -> list[Finding]:  # fmt: skip
    """Findings for the readings at `new` (each evaluated once), using all earlier history.

    Readings after the last new one are not looked at, nor readings more than
    `ruleset.history_days` days before the first new one (no rule looks further back). A
    reading flagged unreliable never yields a clinical finding. Findings come in reading
    order, then by rule name.
    """
    idx = as_indices(series, new)
    if len(idx) == 0:
        return []
    # Every rule looks back at most `history_days` (whole days): older readings are cut off,
    # so a batch costs the same on a long history as on a short one.
    lo = int(series.t[idx[0]]) - (ruleset.history_days + 1) * DAY_S
    start = int(np.searchsorted(series.t, lo, side="left"))
    s = series.window(start, int(idx[-1]) + 1)
    local = idx - start
    out: list[Finding] = []
    for rule in ruleset.rules:
        out.extend(rule.evaluate(s, local, ctx))
    out = [replace(f, at_index=f.at_index + start) if start else f for f in out
           if f.category != Category.CLINICAL or s.reliable[f.at_index]]  # fmt: skip
    out.sort(key=lambda f: (f.at_index, f.rule))
    return out


def _weight_keep(s: Series, ctx: PatientContext) -> np.ndarray:
    return plausible_weights(s, ctx)


COPD_GROUPS = ("copd", "both")
HF_GROUPS = ("heart_failure", "both")
ALL_GROUPS = ("copd", "heart_failure", "both")
BASE = DEFAULT_WINDOW  # 28 days ending 7 days back, at least 7 day values (vitalvagt/baseline.py)
NEW = Window(span=28, gap=2, min_days=5)  # a new patient's provisional baseline
# Least spreads per kind: vitalvagt/baseline.py says why.
SPO2_SD, PULSE_SD, WEIGHT_SD, TEMPERATURE_SD = (
    SPREAD_FLOORS[k] for k in (Kind.SPO2, Kind.PULSE, Kind.WEIGHT, Kind.TEMPERATURE)
)


def _spo2(w: float = 1.0) -> Signal:
    return Signal(Kind.SPO2, -1, w, floor=SPO2_SD)


def _pulse(w: float = 1.0) -> Signal:
    return Signal(Kind.PULSE, +1, w, floor=PULSE_SD)


GUIDELINE = RuleSet("guideline", (LimitRule(n=1, m=1, version=1), QualityRule()))

FULL = RuleSet(
    "full",
    (
        LimitRule(n=2, m=3, span_h=96.0, alert_only=True),
        # v2: k 0.75 (was 0.5), h 2.65 (was 3.75): the change is largest in the last days
        # before evident, so a shorter memory with a lower threshold (tuning seeds).
        TrendRule("trend:copd", (_spo2(), _pulse(),
                                 Signal(Kind.TEMPERATURE, +1, 0.5, floor=TEMPERATURE_SD)),
                  COPD_GROUPS, k=0.75, h=2.65, red_h=8.0, days=6, window=BASE, fallback=NEW,
                  version=2),
        # v2: h 10 (was 8), red 14 (was 12): alone, a sign needs more evidence.
        TrendRule("trend:spo2", (_spo2(),), ALL_GROUPS, k=1.0, h=10.0, red_h=14.0, days=6,
                  window=BASE, version=2),
        TrendRule("trend:pulse", (_pulse(),), ALL_GROUPS, k=1.0, h=10.0, red_h=14.0, days=6,
                  window=BASE, version=2),
        TrendRule("weight:trend", (Signal(Kind.WEIGHT, +1, 1.0, floor=WEIGHT_SD),
                                   _spo2(0.5), _pulse(0.5)),
                  HF_GROUPS, k=1.0, h=3.0, red_h=8.0, days=6, window=BASE,
                  keep=_weight_keep, fallback=NEW),
        # v2: the change must also exceed 2.5 of the patient's own weight spreads.
        WeightChange("weight:gain3d", days=3, kg=2.0, spread_k=2.5, window=BASE, version=2),
        WeightChange("weight:jump1d", days=1, kg=2.0, spread_k=2.5, window=BASE, version=2),
        WeightChange("weight:loss", days=3, kg=1.5, direction=-1, below_baseline_kg=1.0,
                     window=BASE, spread_k=2.5, version=2),
        ScoreRule("news2", min_total=7, red_total=7),
        ScoreRule("tobs", min_total=4, red_total=5),
        QualityRule(),
        WeightQuality(),
    ),
    clear_h={"": 48.0, "trend:": 96.0, "weight:": 96.0},
)  # fmt: skip

RULESETS = {"guideline": GUIDELINE, "full": FULL}
