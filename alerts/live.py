"""A patient's readings as the live engine loads them, and the findings for the new ones.

``PatientReadings`` holds one patient's readings in time order (the new readings of a unit
of work and the history before them) with the ``Series`` the rules see; ``candidates`` runs
the rule set's ``evaluate_new`` (alerts/ruleset.py, the same code as ``vitalvagt
evaluate``) on the new readings only, each evaluated once. Pure: no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from alerts.finding import Category
from alerts.rules import Severity
from alerts.ruleset import RuleSet, evaluate_new
from alerts.series import KIND_CODE, PatientContext, Series
from vitalvagt.kinds import Kind
from vitalvagt.quality import is_reliable

# Within one time stamp the pulse comes last, as offline (alerts/evaluate_input.py): the
# one-notice-per-measurement quality rule relies on it.
_TIE_RANK = {k: (9 if k is Kind.PULSE else i) for k, i in KIND_CODE.items()}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A rule's finding on one new reading, before the engine opens or updates an alert."""

    rule: str
    version: int
    category: str  # clinical | quality
    severity: Severity
    kind: Kind | None
    value: float | None
    observation_id: Any
    measured_at: datetime
    late_s: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PatientReadings:
    ids: list[Any]
    measured: list[datetime]
    late_s: np.ndarray  # ingested minus measured, seconds
    series: Series
    new: np.ndarray  # bool: in this unit of work

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, ...]], *, new_ids: set[Any]) -> PatientReadings:
        """Rows of (id, measured_at, ingested_at, kind, value, flags), in any order."""
        known = [r for r in rows if r[3] in Kind._value2member_map_]
        known.sort(key=lambda r: (r[1], _TIE_RANK[Kind(r[3])]))
        series = Series(
            t=np.array([int(r[1].timestamp()) for r in known], dtype=np.int64),
            kind=np.array([KIND_CODE[Kind(r[3])] for r in known], dtype=np.int8),
            value=np.array([r[4] for r in known], dtype=np.float64),
            reliable=np.array([is_reliable(r[5] or ()) for r in known], dtype=bool),  # type: ignore[arg-type]
        )
        return cls(
            ids=[r[0] for r in known],
            measured=[r[1] for r in known],
            late_s=np.array([(r[2] - r[1]).total_seconds() for r in known], dtype=float),
            series=series,
            new=np.array([r[0] in new_ids for r in known], dtype=bool),
        )

    def reliable_between(self, after: datetime, before: datetime | None) -> bool:
        """A reliable reading measured after ``after`` and before ``before`` (or any time
        after, when ``before`` is None): a condition can be seen gone only on a reading."""
        lo = int(after.timestamp())
        t = self.series.t[self.series.reliable]
        j = int(np.searchsorted(t, lo, side="right"))
        if j >= len(t):
            return False
        return before is None or int(t[j]) < int(before.timestamp())


def candidates(readings: PatientReadings, ctx: PatientContext, ruleset: RuleSet) -> list[Candidate]:
    """What the rules find for the new readings, in reading order."""
    new = np.flatnonzero(readings.new)
    if len(new) == 0:
        return []
    out = []
    for f in evaluate_new(readings.series, new, ctx, ruleset):
        i = f.at_index
        out.append(Candidate(
            rule=f.rule, version=f.version,
            category=Category.QUALITY.value if f.category == Category.QUALITY else f.category,
            severity=f.severity, kind=f.kind, value=f.value,
            observation_id=readings.ids[i], measured_at=readings.measured[i],
            late_s=float(readings.late_s[i]), message=f.message, details=dict(f.details),
        ))  # fmt: skip
    return out
