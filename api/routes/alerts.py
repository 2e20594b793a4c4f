"""``/alerts``: the triage list, one alert with the readings that triggered it and its
history, its ISBAR handover text, and the nurse's changes (acknowledge, snooze, resolve)
through the core's life cycle (vitalvagt.db.alert_lifecycle), each audited in the same
transaction. Each alert carries the doctor responsible now (vitalvagt/routing.py), not the
one of when it opened: the nurse calls the doctor who answers at this hour.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel, Field, field_validator

from api.audit import audit
from api.errors import Conflict, NotFound
from api.params import PATIENT_ID_PATTERN, AlertId, check_window
from api.queries import alerts as q
from api.security import Clinician, Conn, CurrentUser
from vitalvagt.alert_headline import headline
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.db import routing_data
from vitalvagt.db.isbar_data import isbar_text
from vitalvagt.routing import DoctorRole, route

router = APIRouter(prefix="/alerts", tags=["alerts"])
NoNul = r"^[^\x00]*$"
State = Literal["open", "acknowledged", "snoozed", "resolved"]
Severity = Literal["red", "yellow", "blue"]
MAX_SNOOZE = timedelta(days=7)
Lang = Annotated[Literal["da", "en"], Query(description="Danish or English")]


class ResponsibleDoctor(BaseModel):
    role: DoctorRole = Field(
        description="gp (the patient's own), out_of_hours (vagtlæge) or hospital (after discharge)"
    )
    name: str | None
    phone: str | None
    until: datetime | None = Field(description="hospital: its responsibility ends then")
    holiday: str | None = Field(description="the Danish public holiday that made it the vagtlæge")


class Alert(BaseModel):
    id: int
    patient_id: str
    group: str = Field(description="the patient's group: copd, heart_failure or both")
    team_id: str
    rule: str
    rule_version: int
    category: str
    severity: str
    state: str
    kind: str | None
    value: float | None
    measured_at: datetime | None
    message: str = Field(description="the engine's text, in English, with the advice")
    headline: str = Field(
        description="what it is about in one line, in the language asked for (`lang`)"
    )
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
    responsible_doctor: ResponsibleDoctor = Field(description="the doctor responsible now")


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


class Isbar(BaseModel):
    alert_id: int
    lang: Literal["da", "en"]
    text: str = Field(description="the ISBAR handover, ready to be read out on the phone")


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


def _said(v: str) -> str:
    if not v.strip():
        raise ValueError("must say something, not only spaces")
    return v


class Note(BaseModel):
    note: Annotated[str, Field(min_length=1, max_length=2000, pattern=NoNul), AfterValidator(_said)]


class Resolve(BaseModel):
    reason: Annotated[
        str, Field(min_length=3, max_length=2000, pattern=NoNul), AfterValidator(_said)
    ] = Field(description="why: the nurse's words")


@router.get("")
def list_alerts(
    conn: Conn,
    user: CurrentUser,
    state: Annotated[list[State] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    team: Annotated[str | None, Query(max_length=100)] = None,
    patient: Annotated[
        str | None,
        Query(pattern=PATIENT_ID_PATTERN, max_length=63, description="one patient's alerts"),
    ] = None,
    since: Annotated[
        datetime | None, Query(description="opened then or later, or still active")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
    lang: Lang = "da",
) -> list[Alert]:
    """Alerts of the caller's teams in triage order: red, yellow, blue, the oldest first.
    Default states: open and acknowledged."""
    check_window(since, None)
    states = list(state or [lifecycle.AlertState.OPEN, lifecycle.AlertState.ACKNOWLEDGED])
    rows = q.triage(
        conn,
        user.scope,
        states=[str(s) for s in states],
        severities=severity,
        team=team,
        patient=patient,
        since=since,
        limit=limit,
    )
    doctors = _doctors(conn, (r["patient_id"] for r in rows))
    # one patient's alerts are a read of that patient (when there are any: ids outside the
    # scope return nothing and are not the caller's patients)
    audit(conn, user, "list_alerts", patient if rows else None, states=states, rows=len(rows))
    return [
        Alert(**r, headline=_headline(r, lang), responsible_doctor=doctors[r["patient_id"]])
        for r in rows
    ]


def _headline(a: dict[str, Any], lang: str) -> str:
    return headline(rule=a["rule"], category=a["category"], kind=a["kind"], reading=a["value"],
                    measured_at=a["measured_at"], details=a["details"], lang=lang)  # fmt: skip


def _doctors(conn: Conn, patient_ids: Iterable[str]) -> dict[str, ResponsibleDoctor]:
    """The doctor responsible now for each patient (vitalvagt/routing.py): the teams once and
    the patients' care in one query, however many alerts the list has."""
    ids = set(patient_ids)
    if not ids:
        return {}
    now = datetime.now(UTC)
    teams = routing_data.load_teams(conn)
    out: dict[str, ResponsibleDoctor] = {}
    for pid, care in routing_data.load_cares(conn, ids).items():
        d = route(care, teams, now).doctor
        out[pid] = ResponsibleDoctor(
            role=d.role, name=d.name, phone=d.phone, until=d.until, holiday=d.holiday
        )
    return out


def _alert(conn: Conn, user: CurrentUser, alert_id: int) -> dict[str, Any]:
    a = q.get_alert(conn, user.scope, alert_id)
    if a is None:
        raise NotFound(f"alert {alert_id} is not known")
    return a


@router.get("/{alert_id}")
def alert(alert_id: AlertId, conn: Conn, user: CurrentUser, lang: Lang = "da") -> AlertDetail:
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
    doctor = _doctors(conn, [a["patient_id"]])[a["patient_id"]]
    audit(conn, user, "read_alert", a["patient_id"], alert=alert_id)
    return AlertDetail(**a, headline=_headline(a, lang), responsible_doctor=doctor,
                       readings=readings, history=history)  # fmt: skip


@router.get("/{alert_id}/isbar")
def isbar(
    alert_id: AlertId,
    conn: Conn,
    user: CurrentUser,
    lang: Lang = "da",
) -> Isbar:
    """The alert's ISBAR handover (vitalvagt/isbar.py), with the routing as it is now."""
    a = _alert(conn, user, alert_id)
    text = isbar_text(conn, alert_id, now=datetime.now(UTC), lang=lang)
    if text is None:  # gone between the two reads
        raise NotFound(f"alert {alert_id} is not known")
    audit(conn, user, "read_isbar", a["patient_id"], alert=alert_id, lang=lang)
    return Isbar(alert_id=alert_id, lang=lang, text=text)


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


@router.post("/{alert_id}/note")
def note(alert_id: AlertId, body: Note, conn: Conn, user: Clinician) -> AlertDetail:
    """A note to an active alert, its state unchanged (after a one-tap acknowledgement)."""
    return _change(
        conn,
        user,
        alert_id,
        "noted",
        lambda: lifecycle.add_note(conn, alert_id, by=user.user_id, note=body.note),
        body.note,
    )


@router.post("/{alert_id}/resolve")
def resolve(alert_id: AlertId, body: Resolve, conn: Conn, user: Clinician) -> AlertDetail:
    """Resolved by a person, with the reason."""
    return _change(
        conn,
        user,
        alert_id,
        "resolved",
        lambda: lifecycle.resolve(conn, alert_id, by=user.user_id, note=body.reason),
        body.reason,
    )
