"""Offline replay: a patient's readings through `evaluate_new`, then alerts as nurses see them.

Readings are evaluated in time order in chunks (one day, one reading, or the whole series:
the findings are the same, alerts/ruleset.py). Findings become alerts the way the live
engine keeps them:

- one active alert per (patient, rule): a rule that fires again while its alert is active
  updates it (severity may rise to red) and is not a new alert;
- auto-clear: an active alert clears itself when its rule has not fired for
  `RuleSet.clear_hours(rule)` hours (48 h by default) AND a reliable reading arrived after
  that time without the rule firing. Silence alone (an admission, a tablet offline) clears
  nothing: the condition has to be seen gone. The next finding after a clear opens a new
  alert.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from alerts.finding import Finding
from alerts.rules import Severity
from alerts.ruleset import RuleSet, evaluate_new
from alerts.series import HOUR_S, PatientContext, Series, day_of

_RANK = {Severity.BLUE: 0, Severity.YELLOW: 1, Severity.RED: 2}


@dataclass
class Alert:
    rule: str
    category: str
    severity: Severity  # the worst while active
    opened_at: int  # seconds since the epoch: measured time of the reading that opened it
    opened_index: int
    kind: str | None
    value: float | None
    message: str
    last_at: int
    updates: int = 0  # later findings folded into this alert
    cleared_at: int | None = None
    fired: list[int] = field(default_factory=list)  # measured time of every finding


def chunks(series: Series, ctx: PatientContext, how: str = "day") -> Iterator[slice]:
    """Consecutive slices covering the series: per day, per reading, or all at once."""
    n = len(series)
    if n == 0:
        return
    if how == "all":
        yield slice(0, n)
    elif how == "reading":
        for i in range(n):
            yield slice(i, i + 1)
    elif how == "day":
        d = day_of(series.t, ctx.day_offset_s)
        cuts = np.flatnonzero(np.diff(d)) + 1
        bounds = np.concatenate(([0], cuts, [n]))
        for a, b in itertools.pairwise(bounds):
            yield slice(int(a), int(b))
    else:
        raise ValueError(f"chunking {how!r}: expected day, reading or all")


def replay_findings(series: Series, ctx: PatientContext, ruleset: RuleSet,
                    chunking: str = "day") -> list[Finding]:  # fmt: skip
    out: list[Finding] = []
    for part in chunks(series, ctx, chunking):
        out.extend(evaluate_new(series, part, ctx, ruleset))
    return out


def to_alerts(findings: list[Finding], series: Series, ruleset: RuleSet) -> list[Alert]:
    """Fold findings into alerts: one active per rule, auto-clear (module docstring)."""
    times = series.t[series.reliable]  # readings that can show a condition gone
    active: dict[str, Alert] = {}
    out: list[Alert] = []
    for f in findings:
        t = int(series.t[f.at_index])
        a = active.get(f.rule)
        if a is not None:
            after = a.last_at + ruleset.clear_hours(f.rule) * HOUR_S
            j = int(np.searchsorted(times, after, side="right"))
            if j < len(times) and times[j] < t:
                a.cleared_at = int(times[j])
                a = None
        if a is None:
            a = Alert(f.rule, str(f.category), f.severity, t, f.at_index,
                      f.kind.value if f.kind else None, f.value, f.message, t, fired=[t])
            active[f.rule] = a
            out.append(a)
            continue
        if _RANK[f.severity] > _RANK[a.severity]:
            a.severity = f.severity
        a.last_at = t
        a.updates += 1
        a.fired.append(t)
    return out


def replay_patient(series: Series, ctx: PatientContext, ruleset: RuleSet,
                   chunking: str = "day") -> list[Alert]:  # fmt: skip
    return to_alerts(replay_findings(series, ctx, ruleset, chunking), series, ruleset)
