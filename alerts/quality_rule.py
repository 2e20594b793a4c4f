"""Rule `quality:<kind>`: a reading the device flagged unreliable asks for a new measurement.

Such a reading (vitalvagt.quality.UNRELIABLE: movement, loose cuff, low perfusion, sensor
displaced, another scale user ...) never opens a clinical alert and is left out of every
baseline and trend; it gives a quality notice instead (category "quality"). One notice per
measurement: the parts of a blood-pressure reading speak through `bp_systolic`, and a
flagged pulse only when no other flagged reading shares its time (the oximeter's SpO2 or
the cuff's systolic already carries the notice; readers order a reading's parts with
the pulse last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alerts.finding import Category, Finding, fmt, label
from alerts.rules import Severity
from alerts.series import KIND_CODE, KINDS, PatientContext, Series
from vitalvagt.kinds import Kind

_SILENT = (KIND_CODE[Kind.BP_DIASTOLIC], KIND_CODE[Kind.BP_MEAN])
_PULSE = KIND_CODE[Kind.PULSE]


@dataclass(frozen=True)
class QualityRule:
    version: int = 1

    def evaluate(self, s: Series, idx: np.ndarray, ctx: PatientContext) -> list[Finding]:
        bad = idx[~s.reliable[idx] & ~np.isin(s.kind[idx], _SILENT)]
        out = []
        for i in bad:
            i = int(i)
            if s.kind[i] == _PULSE and _shares_time(s, i):
                continue
            kind = KINDS[int(s.kind[i])]
            v = float(s.value[i])
            out.append(Finding(
                rule=f"quality:{kind.value}", version=self.version, severity=Severity.YELLOW,
                category=Category.QUALITY, at_index=i, value=v, kind=kind,
                message=(f"{label(kind)} {fmt(kind, v)} was flagged unreliable by the device "
                         "and raised no alarm. Ask the patient to measure again, sitting "
                         "still, with the device placed as instructed."),
                details={"reason": "device flagged the reading unreliable"},
            ))  # fmt: skip
        return out


def _shares_time(s: Series, i: int) -> bool:
    """An earlier flagged non-pulse reading at the same time (readers put pulse last)."""
    lo = int(np.searchsorted(s.t, s.t[i], side="left"))
    return any(not s.reliable[j] and s.kind[j] != _PULSE for j in range(lo, i))
