"""A rule's finding: what fired, on which reading, how bad, and what the rule computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from alerts.rules import Severity
from vitalvagt.kinds import KIND_SPECS, Kind


class Category(StrEnum):
    CLINICAL = "clinical"  # the patient may be deteriorating
    MISSED = "missed"  # an expected measurement did not arrive
    QUALITY = "quality"  # the device says (or the hub suspects) the reading is unreliable


@dataclass(frozen=True)
class Finding:
    rule: str  # stable name, e.g. "limit:spo2", "trend:copd", "weight:gain3d", "news2"
    version: int
    severity: Severity
    category: str
    at_index: int  # index into the Series of the reading that triggered it
    value: float | None
    kind: Kind | None
    message: str  # plain English, numbers with units
    details: dict = field(default_factory=dict, compare=False, hash=False)

    def key(self) -> tuple:
        """What identifies a finding when comparing two evaluations (details left out)."""
        return (self.rule, self.version, self.severity.value, self.category, self.at_index,
                self.value, self.kind, self.message)  # fmt: skip


def unit(kind: Kind) -> str:
    return KIND_SPECS[kind].unit.replace("mm[Hg]", "mmHg").replace("Cel", "°C")


def label(kind: Kind) -> str:
    d = KIND_SPECS[kind].display
    return d[0].upper() + d[1:]


def fmt(kind: Kind, value: float) -> str:
    """A value with its unit, as a nurse reads it: '84 %', '81.35 kg', '38.2 °C'."""
    return f"{value:g} {unit(kind)}"
