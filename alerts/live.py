"""A patient's readings as the live engine loads them, and the findings for the new ones.

``PatientReadings`` holds one patient's readings in time order as numpy arrays (the new
readings of a unit of work and the history before them); ``candidates`` gives what the
rules find for the new readings only, each evaluated once. Pure: no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from alerts.rules import LOCAL, Limits, Severity, classify, limit_message
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.quality import is_reliable

CLEAR_AFTER = 2  # reliable readings back inside the limits that clear an unacknowledged alert


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
    kind: np.ndarray  # str codes of Kind
    value: np.ndarray
    flags: list[Sequence[str]]
    reliable: np.ndarray
    new: np.ndarray  # bool: in this unit of work

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, ...]], *, new_ids: set[Any]) -> PatientReadings:
        """Rows of (id, measured_at, ingested_at, kind, value, flags), in time order."""
        return cls(
            ids=[r[0] for r in rows],
            measured=[r[1] for r in rows],
            late_s=np.array([(r[2] - r[1]).total_seconds() for r in rows], dtype=float),
            kind=np.array([r[3] for r in rows], dtype=object),
            value=np.array([r[4] for r in rows], dtype=float),
            flags=[tuple(r[5] or ()) for r in rows],
            reliable=np.array([is_reliable(r[5] or ()) for r in rows], dtype=bool),  # type: ignore[arg-type]
            new=np.array([r[0] in new_ids for r in rows], dtype=bool),
        )

    def recovered(self, kind: Kind, limits: Limits, *, after: datetime | None) -> bool:
        """The kind's last ``CLEAR_AFTER`` reliable readings are all inside the limits and
        measured after ``after``."""
        idx = np.flatnonzero((self.kind == kind.value) & self.reliable)[-CLEAR_AFTER:]
        if len(idx) < CLEAR_AFTER:
            return False
        if after is not None and self.measured[int(idx[0])] <= after:
            return False
        return all(classify(float(self.value[i]), limits) is None for i in idx)


def quality_message(kind: Kind, value: float, flags: list[str], measured_at: datetime) -> str:
    spec = KIND_SPECS[kind]
    when = measured_at.astimezone(LOCAL).strftime("%d-%m %H:%M")
    label = spec.display[0].upper() + spec.display[1:]
    unit = spec.unit.replace("mm[Hg]", "mmHg").replace("Cel", "°C")
    return (
        f"{label} {value:g} {unit} at {when} would be outside the limits, but the device"
        f" marked it unreliable ({', '.join(flags)}). Ask the patient to measure again."
    )


def candidates(readings: PatientReadings, limits: dict[Kind, Limits]) -> list[Candidate]:
    """Findings for the new readings, in time order: each reading against its four limits
    (clinical); a reading the device flagged unreliable never opens a clinical alert, but one
    that would have is a quality notice asking for a new measurement."""
    out: list[Candidate] = []
    for i in np.flatnonzero(readings.new):
        kind = Kind(readings.kind[i])
        lim = limits.get(kind)
        if lim is None:
            continue
        value = float(readings.value[i])
        finding = classify(value, lim)
        if finding is None:
            continue
        common: dict[str, Any] = {
            "kind": kind, "value": value, "observation_id": readings.ids[i],
            "measured_at": readings.measured[i], "late_s": float(readings.late_s[i]),
        }  # fmt: skip
        if readings.reliable[i]:
            out.append(Candidate(
                rule=f"limit:{kind.value}", version=1, category="clinical",
                severity=finding.severity,
                message=limit_message(kind, value, finding, readings.measured[i]),
                details={"limit": finding.limit, "below": finding.below}, **common,
            ))  # fmt: skip
        else:
            flags = list(readings.flags[i])
            out.append(Candidate(
                rule=f"quality:{kind.value}", version=1, category="quality",
                severity=Severity.BLUE,
                message=quality_message(kind, value, flags, readings.measured[i]),
                details={"flags": flags}, **common,
            ))  # fmt: skip
    return out
