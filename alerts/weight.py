"""Heart-failure weight rules: fluid build-up (gain) and sudden weight loss.

Reference sections 1, 5 and 7: weight gain and sudden weight loss are the heart programme's
warning signs. The rules of thumb ("more than 2 kg in 3 days", "1.36 kg (3 lb) in one day")
are sensitive but give many false alerts; personalised rules (moving averages, control
charts) do better. The personalised rule is `weight:trend` (alerts/trends.py, built in
alerts/ruleset.py); this module holds the fixed-size rules and the plausibility filter.

A weight more than MAX_JUMP_KG from the median of the patient's previous (up to 7, of the
last 30 days) weights is not
a body that changed but another person on the scale (or a wrong reading): it is left out of
every weight rule and gives a quality notice asking the patient to weigh again. That test is
the core's (vitalvagt/baseline.py `implausible_weights`): the baseline the API shows leaves
the same weights out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alerts.baseline import baseline, kind_days
from alerts.finding import Category, Finding, fmt
from alerts.rules import Severity
from alerts.series import KIND_CODE, PatientContext, Series, day_of
from vitalvagt.baseline import (
    DEFAULT_WINDOW,
    MAX_JUMP_KG,
    SPREAD_FLOORS,
    Window,
    implausible_weights,
)
from vitalvagt.kinds import Kind

W = Kind.WEIGHT


def implausible(s: Series, ctx: PatientContext) -> np.ndarray:
    """Mask over the Series: reliable weights too far from the previous weights' median."""
    def make() -> np.ndarray:
        out = np.zeros(len(s), dtype=bool)
        sel = np.flatnonzero((s.kind == KIND_CODE[W]) & s.reliable)
        out[sel[implausible_weights(s.t[sel], s.value[sel])]] = True
        return out

    return s.cached(("weight_implausible",), make)


def plausible_weights(s: Series, ctx: PatientContext) -> np.ndarray:
    return s.cached(("weight_keep",), lambda: ~implausible(s, ctx))


def implausible_findings(s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]:
    bad = implausible(s, ctx)
    out = []
    for i in idx[bad[idx]]:
        v = float(s.value[i])
        out.append(Finding(
            rule="quality:weight", version=1, severity=Severity.YELLOW,
            category=Category.QUALITY, at_index=int(i), value=v, kind=W,
            message=(f"Weight {fmt(W, v)} is more than {MAX_JUMP_KG:g} kg from the patient's "
                     "recent weights: probably another person on the scale or a wrong "
                     "reading. Ask the patient to weigh again."),
            details={"reason": "implausible jump", "max_jump_kg": MAX_JUMP_KG},
        ))  # fmt: skip
    return out


@dataclass(frozen=True)
class WeightChange:
    """Fixed-size change of today's weight against the previous `days` days.

    gain: today's mean weight minus the lowest day value of the previous `days` days is
    more than `kg` ("more than 2 kg in 3 days": days=3, kg=2.0; "a one-day jump": days=1).
    loss: the highest day value of the previous days minus today's is more than `kg`, and
    today is at least `below_baseline_kg` under the patient's baseline median (so that the
    return to normal after diuresis for fluid build-up is not taken for dehydration).

    Personal spread (`spread_k`, version 2): the change must also be more than `spread_k`
    times the patient's own day-to-day weight spread (the baseline's robust sd over
    `window`, alerts/baseline.py). For a patient whose weight is steady (sd about 0.4-0.6 kg)
    this changes nothing (2 kg is already more than 2.5 sd); a patient whose weight swings by
    a kilogram from day to day (clothes, meals, an unsteady scale) needs a bigger change before
    the rule of thumb alarms. Without a baseline yet, the fixed rule applies alone.
    """

    name: str
    days: int
    kg: float
    direction: int = +1  # +1 gain, -1 loss
    below_baseline_kg: float = 1.0
    window: Window = DEFAULT_WINDOW
    version: int = 1
    spread_k: float | None = None  # the change must exceed this many personal sds (None: no)
    spread_floor: float = SPREAD_FLOORS[W]  # least weight spread, kg

    def evaluate(self, s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]:
        if not ctx.has_heart_failure:
            return []
        keep = plausible_weights(s, ctx)
        at = idx[(s.kind[idx] == KIND_CODE[W]) & s.reliable[idx] & keep[idx]]
        if len(at) == 0:
            return []
        kd = kind_days(s, W, ctx, keep)
        at_day = day_of(s.t[at], ctx.day_offset_s)
        today = kd.partial(at, at_day)
        prev = kd.days(at_day, -self.days, 0)
        has_prev = np.any(~np.isnan(prev), axis=1)
        ref = np.full(len(at), np.nan)
        if np.any(has_prev):
            agg = np.nanmin if self.direction > 0 else np.nanmax
            ref[has_prev] = agg(prev[has_prev], axis=1)
        change = today - ref
        fire = has_prev & (self.direction * change > self.kg + 1e-9)  # 82.6 - 80.5 is 2.09999...
        base_med = np.full(len(at), np.nan)
        spread = np.full(len(at), np.nan)
        if self.direction < 0 or self.spread_k is not None:
            base = baseline(kd, at_day, self.window, self.spread_floor)
            base_med = base.median
        if self.direction < 0:
            fire &= base.ready & (today <= base_med - self.below_baseline_kg)
        if self.spread_k is not None:
            spread = base.sd
            fire &= ~base.ready | (self.direction * change > self.spread_k * spread + 1e-9)
        out = []
        for j in np.flatnonzero(fire):
            i = int(at[j])
            word = "up" if self.direction > 0 else "down"
            span = "one day" if self.days == 1 else f"{self.days} days"
            sign = "gain" if self.direction > 0 else "loss"
            todo = ("Call the patient today: ask about breathlessness and swollen ankles; "
                    "contact the responsible doctor about diuretics." if self.direction > 0
                    else "Call the patient today: ask about eating, drinking, diarrhoea and "
                    "dizziness; contact the responsible doctor about the diuretic dose.")
            out.append(Finding(
                rule=self.name, version=self.version, severity=Severity.YELLOW,
                category=Category.CLINICAL, at_index=i, value=float(s.value[i]), kind=W,
                message=(f"Weight {word} {abs(change[j]):.1f} kg within {span} "
                         f"(today {fmt(W, round(today[j], 2))}, before "
                         f"{fmt(W, round(ref[j], 2))}): possible fluid {sign}. {todo}"),
                details={"today_kg": round(float(today[j]), 3), "reference_kg": float(ref[j]),
                         "change_kg": round(float(change[j]), 3), "threshold_kg": self.kg,
                         "days": self.days,
                         **({"baseline_median_kg": float(base_med[j])}
                            if self.direction < 0 else {}),
                         **({"spread_kg": _num(spread[j]), "spread_k": self.spread_k}
                            if self.spread_k is not None else {})},
            ))  # fmt: skip
        return out


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 3)
