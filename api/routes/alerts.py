"""``/alerts``: the triage list, one alert with the readings that triggered it and its
history, and the nurse's changes (acknowledge, snooze, resolve) through the core's life
cycle (vitalvagt.db.alert_lifecycle), each audited in the same transaction.

Not here yet: the ISBAR text and the responsible doctor (another issue builds them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator

from api.audit import audit
from api.errors import Conflict, NotFound, Unprocessable
from api.params import AlertId
from api.queries import alerts as q
from api.security import Clinician, Conn, CurrentUser
from vitalvagt.db import alert_lifecycle as lifecycle

router = APIRouter(prefix="/alerts", tags=["alerts"])
NoNul = r"^[^\x00]*$"
State = Literal["open", "acknowledged", "snoozed", "resolved"]
Severity = Literal["red", "yellow", "blue"]
MAX_SNOOZE = timedelta(days=7)


class Alert(BaseModel):
    id: int
    patient_id: str
    team_id: str
    rule: str
    rule_version: int
    category: str
    severity: str
    state: str
    kind: str | None
    value: float | None
    measured_at: datetime | None
    message: str
    opened_at: datetime
    last_triggered_at: datetime
    trigger_count: int
    late_s: float | None
    snoozed_until: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    note: str | None


class Reading(BaseModel):
    id: Any
    kind: str
    value: float
    unit: str
    measured_at: datetime
    received_at: datetime
    flags: list[str]
    reading_id: Any
    device_address: str
    gateway_id: str


class Transition(BaseModel):
    from_state: str | None
    to_state: str
    at: datetime
    by: str
    reason: str
    note: str | None


class AlertDetail(Alert):
    details: dict[str, Any]
    readings: list[Reading] = Field(description="the reading(s) that triggered the alert")
    history: list[Transition]


class Acknowledge(BaseModel):
    note: str | None = Field(default=None, max_length=2000, pattern=NoNul)


class Snooze(BaseModel):
    until: datetime
    note: str | None = Field(default=None, max_length=2000, pattern=NoNul)

    @field_validator("until")
    @classmethod
    def future(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("needs a time zone")
        now = datetime.now(UTC)
        if not now < v <= now + MAX_SNOOZE:
            raise ValueError("must be in the future, at most 7 days ahead")
        return v


class Resolve(BaseModel):
    reason: str = Field(min_length=3, max_length=2000, pattern=NoNul)


@router.get("")
def list_alerts(
    conn: Conn,
    user: CurrentUser,
    state: Annotated[list[State] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    team: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
) -> list[Alert]:
    """Alerts of the caller's teams in triage order: red, yellow, blue, the oldest first.
    Default states: open and acknowledged."""
    states = list(state or [lifecycle.AlertState.OPEN, lifecycle.AlertState.ACKNOWLEDGED])
    rows = q.triage(
        conn,
        user.scope,
        states=[str(s) for s in states],
        severities=severity,
        team=team,
        patient=None,
        limit=limit,
    )
    audit(conn, user, "list_alerts", None, states=states, rows=len(rows))
    return [Alert(**r) for r in rows]


def _alert(conn: Conn, user: CurrentUser, alert_id: int) -> dict[str, Any]:
    a = q.get_alert(conn, user.scope, alert_id)
    if a is None:
        raise NotFound(f"alert {alert_id} is not known")
    return a


@router.get("/{alert_id}")
def alert(alert_id: AlertId, conn: Conn, user: CurrentUser) -> AlertDetail:
    """One alert with the reading(s) that triggered it and its transitions."""
    a = _alert(conn, user, alert_id)
    readings = q.triggering_readings(conn, user.scope, a)
    history = [
        Transition(
            from_state=t.from_state,
            to_state=t.to_state,
            at=t.at,
            by=t.by,
            reason=t.reason,
            note=t.note,
        )
        for t in lifecycle.history(conn, alert_id)
    ]
    audit(conn, user, "read_alert", a["patient_id"], alert=alert_id)
    return AlertDetail(**a, readings=readings, history=history)


def _change(
    conn: Conn, user: Clinician, alert_id: int, action: str, change: Any, note: str | None
) -> AlertDetail:
    with conn.transaction():
        a = _alert(conn, user, alert_id)
        if not change():
            raise Conflict(f"alert {alert_id} is {a['state']}: it cannot be {action}")
        audit(conn, user, f"{action}_alert", a["patient_id"], reason=note, alert=alert_id)
    return alert(alert_id, conn, user)


@router.post("/{alert_id}/acknowledge")
def acknowledge(alert_id: AlertId, body: Acknowledge, conn: Conn, user: Clinician) -> AlertDetail:
    """ "I've got it": an open or snoozed alert becomes acknowledged (with a note)."""
    return _change(
        conn,
        user,
        alert_id,
        "acknowledged",
        lambda: lifecycle.acknowledge(conn, alert_id, by=user.user_id, note=body.note),
        body.note,
    )


@router.post("/{alert_id}/snooze")
def snooze(alert_id: AlertId, body: Snooze, conn: Conn, user: Clinician) -> AlertDetail:
    """No alert or notification before ``until`` (at most 7 days); then open again."""
    return _change(
        conn,
        user,
        alert_id,
        "snoozed",
        lambda: lifecycle.snooze(conn, alert_id, by=user.user_id, until=body.until, note=body.note),
        body.note,
    )


@router.post("/{alert_id}/resolve")
def resolve(alert_id: AlertId, body: Resolve, conn: Conn, user: Clinician) -> AlertDetail:
    """Resolved by a person, with the reason."""
    if not body.reason.strip():
        raise Unprocessable("body.reason: must say why")
    return _change(
        conn,
        user,
        alert_id,
        "resolved",
        lambda: lifecycle.resolve(conn, alert_id, by=user.user_id, note=body.reason),
        body.reason,
    )
