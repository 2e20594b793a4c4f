"""Rule `limit:<kind>`: a reading against its four limits, with optional persistence.

OpenTele's scheme (reference section 5): alert low < warning low ... warning high < alert
high; beyond an alert limit is red, beyond a warning limit yellow. The standard set per
patient group is the one the database migration seeds (vitalvagt/db/migrations/
0003_alerts.sql); a physician's limits for the patient (`PatientContext.limits`) win per kind.

Persistence ("outside the limit in N of the last M readings", reference section 5: peer
systems are criticised for lacking it): a reading opens nothing unless at least N of the
last M reliable readings of its kind, within `span_h` hours, are outside a warning limit;
it is red only if at least `n_red` of them are beyond an alert limit. N = M = 1 is the
guideline rule: every reading on its own. With `alert_only` only the alert limits count
(the full rule set leaves the warning band to the personalised trend rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from alerts.finding import Category, Finding
from alerts.rules import Finding as LimitHit
from alerts.rules import Limits, Severity, limit_message
from alerts.series import HOUR_S, KIND_CODE, PatientContext, Series
from vitalvagt.kinds import Kind

_COMMON = {
    Kind.PULSE: Limits(40, 50, 110, 130),
    Kind.TEMPERATURE: Limits(35.0, 36.0, 38.0, 39.0),
}
STANDARD_LIMITS: dict[str, dict[Kind, Limits]] = {
    "copd": {Kind.SPO2: Limits(85, 88, None, None), **_COMMON,
             Kind.BP_SYSTOLIC: Limits(90, 100, 180, 220)},
    "heart_failure": {Kind.SPO2: Limits(88, 92, None, None), **_COMMON,
                      Kind.BP_SYSTOLIC: Limits(85, 95, 170, 200)},
    "both": {Kind.SPO2: Limits(85, 88, None, None), **_COMMON,
             Kind.BP_SYSTOLIC: Limits(85, 95, 170, 200)},
}  # fmt: skip


def limits_for(ctx: PatientContext) -> dict[Kind, Limits]:
    """The patient's limits: their own per kind where set, else the group's standard set."""
    out = dict(STANDARD_LIMITS[ctx.group])
    if ctx.limits:
        out.update(ctx.limits)
    return out


@dataclass(frozen=True)
class LimitRule:
    n: int = 1  # outside a warning limit in at least n ...
    m: int = 1  # ... of the last m reliable readings of the kind
    n_red: int | None = None  # beyond an alert limit in at least this many for red (None: n)
    span_h: float = 96.0  # readings older than this (before the current one) do not count
    alert_only: bool = False  # only the alert limits (red); the warning limits are not used
    kinds: tuple[Kind, ...] | None = None  # only these kinds (None: every kind with limits)
    version: int = 2

    def evaluate(self, s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]:
        out: list[Finding] = []
        if len(idx) == 0:
            return out
        n_red = self.n if self.n_red is None else self.n_red
        for kind, lim in limits_for(ctx).items():
            if self.kinds is not None and kind not in self.kinds:
                continue
            c = KIND_CODE[kind]
            sel = np.flatnonzero((s.kind == c) & s.reliable)
            if len(sel) == 0:
                continue
            want = idx[(s.kind[idx] == c) & s.reliable[idx]]
            if len(want) == 0:
                continue
            v, t = s.value[sel], s.t[sel]
            yellow, red = _outside(v, lim)
            if self.alert_only:
                yellow = red
            pos = np.searchsorted(sel, want)
            start = np.maximum(pos + 1 - self.m,
                               np.searchsorted(t, t[pos] - self.span_h * HOUR_S, side="left"))
            cy = np.concatenate(([0], np.cumsum(yellow)))
            cr = np.concatenate(([0], np.cumsum(red)))
            n_out = cy[pos + 1] - cy[start]
            n_redw = cr[pos + 1] - cr[start]
            fire = yellow[pos] & (n_out >= self.n)
            for j in np.flatnonzero(fire):
                p, i = pos[j], int(want[j])
                severity = Severity.RED if red[p] and n_redw[j] >= n_red else Severity.YELLOW
                out.append(self._finding(kind, lim, float(v[p]), severity, i, int(t[p]),
                                         int(n_out[j]), int(pos[j] + 1 - start[j])))  # fmt: skip
        return out

    def _finding(self, kind: Kind, lim: Limits, value: float, severity: Severity, i: int,
                 t: int, n_out: int, n_seen: int) -> Finding:  # fmt: skip
        hit = _hit(value, lim, severity)
        text = limit_message(kind, value, hit, datetime.fromtimestamp(t, UTC))
        if self.m > 1:
            text += f" Outside the limits in {n_out} of the last {n_seen} readings."
        return Finding(
            rule=f"limit:{kind.value}", version=self.version, severity=severity,
            category=Category.CLINICAL, at_index=i, value=value, kind=kind, message=text,
            details={"limit": hit.limit, "below": hit.below, "outside": n_out,
                     "of_last": n_seen, "persistence": f"{self.n} of {self.m}"},
        )  # fmt: skip


def _outside(v: np.ndarray, lim: Limits) -> tuple[np.ndarray, np.ndarray]:
    """(outside a warning limit, beyond an alert limit) per value; a missing limit is open."""
    yellow = np.zeros(len(v), dtype=bool)
    red = np.zeros(len(v), dtype=bool)
    for limit, below, target in ((lim.alert_low, True, red), (lim.alert_high, False, red),
                                 (lim.warn_low, True, yellow), (lim.warn_high, False, yellow)):
        if limit is not None:
            target |= v < limit if below else v > limit
    return yellow | red, red


def _hit(value: float, lim: Limits, severity: Severity) -> LimitHit:
    if severity is Severity.RED:
        low, high = lim.alert_low, lim.alert_high
    else:
        low = lim.warn_low if lim.warn_low is not None else lim.alert_low
        high = lim.warn_high if lim.warn_high is not None else lim.alert_high
    if low is not None and value < low:
        return LimitHit(severity, low, True)
    return LimitHit(severity, high if high is not None else value, False)
