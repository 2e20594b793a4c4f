"""Pure alert rules: a reading against its four limits, and the words a nurse reads.

OpenTele's scheme (reference section 5): alert low < warning low ... warning high < alert
high; outside an alert limit is red, outside a warning limit yellow. A reading the device
flagged unreliable (vitalvagt.quality.UNRELIABLE) never raises a clinical alarm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.quality import is_reliable
from vitalvagt.schedule import Overdue
from vitalvagt.settings import DEFAULT_LOCAL_TZ

LOCAL = ZoneInfo(DEFAULT_LOCAL_TZ)  # for the texts; the engine will take it from settings


class Severity(StrEnum):
    RED = "red"  # act now: call the patient, assess, contact the responsible doctor
    YELLOW = "yellow"  # follow up today
    BLUE = "blue"  # an expected measurement did not arrive


@dataclass(frozen=True, slots=True)
class Limits:
    alert_low: float | None = None
    warn_low: float | None = None
    warn_high: float | None = None
    alert_high: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    limit: float
    below: bool


def classify(value: float, limits: Limits) -> Finding | None:
    """The worst limit the value is beyond, or None when it is inside all of them."""
    checks = (
        (limits.alert_low, True, Severity.RED), (limits.alert_high, False, Severity.RED),
        (limits.warn_low, True, Severity.YELLOW), (limits.warn_high, False, Severity.YELLOW),
    )  # fmt: skip
    for limit, below, severity in checks:
        if limit is not None and (value < limit if below else value > limit):
            return Finding(severity, limit, below)
    return None


def evaluate_reading(
    kind: Kind, value: float, flags: list[str] | tuple[str, ...], limits: Limits
) -> Finding | None:
    if not is_reliable(flags):  # type: ignore[arg-type]
        return None
    return classify(value, limits)


def limit_message(kind: Kind, value: float, finding: Finding, measured_at: datetime) -> str:
    spec = KIND_SPECS[kind]
    when = measured_at.astimezone(LOCAL).strftime("%d-%m %H:%M")
    side = "below" if finding.below else "above"
    level = "alert" if finding.severity is Severity.RED else "warning"
    unit = spec.unit.replace("mm[Hg]", "mmHg").replace("Cel", "°C")
    label = spec.display[0].upper() + spec.display[1:]
    what = f"{label} {value:g} {unit} at {when} is {side} the {level} limit"
    if finding.severity is Severity.RED:
        todo = ("Call the patient now and assess; contact the responsible doctor if the "
                "condition has changed.")  # fmt: skip
    else:
        todo = "Follow up today: call the patient and ask for a new measurement."
    return f"{what} {finding.limit:g} {unit}. {todo}"


def missed_message(hours: float, last: datetime | None) -> str:
    if last is None:
        return "No measurements received yet. Call the patient: check the tablet and devices."
    when = last.astimezone(LOCAL).strftime("%d-%m %H:%M")
    return (f"No measurements for {hours:.0f} hours (last {when}). Call the patient: check that "
            "they are well, and that the tablet and devices work.")  # fmt: skip


def scheduled_missed_message(missed: Sequence[Overdue]) -> str:
    """A blue alert from the patient's measurement schedule: which kinds, due when."""
    parts = []
    for m in missed:
        due = m.due_at.astimezone(LOCAL).strftime("%d-%m %H:%M")
        parts.append(f"{KIND_SPECS[Kind(m.kind)].display} (due {due})")
    return (f"Scheduled measurement missed: {', '.join(parts)}. Call the patient: check that "
            "they are well, and that the tablet and devices work.")  # fmt: skip
