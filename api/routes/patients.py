"""``/patients``: the list with the latest readings and a status colour, one patient, the
alert limits (read; change by a physician with a reason, history kept), consents, and the
measurement schedule (read, with what is overdue now; replace by a nurse or a physician
with a reason; vitalvagt/schedule.py holds the rule).

A patient outside the caller's teams is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, model_validator

from api.audit import audit
from api.errors import NotFound
from api.params import PatientId
from api.queries import patients as q
from api.queries import schedule as qs
from api.security import Conn, CurrentUser, Physician, Principal, require
from vitalvagt import schedule as sched
from vitalvagt.kinds import Kind
from vitalvagt.roles import Role
from vitalvagt.settings import DEFAULT_LOCAL_TZ

router = APIRouter(prefix="/patients", tags=["patients"])
LIMITED_KINDS = (
    Kind.SPO2,
    Kind.PULSE,
    Kind.BP_SYSTOLIC,
    Kind.TEMPERATURE,
    Kind.WEIGHT,
    Kind.BP_DIASTOLIC,
    Kind.RESPIRATORY_RATE,
)


class Reading(BaseModel):
    kind: str
    value: float
    unit: str
    measured_at: datetime
    flags: list[str] = []


class LatestReading(Reading):
    device_address: str = Field(description="the meter's Bluetooth address")
    device_model: str | None = Field(description="the meter's model, when it tells")
    gateway_id: str = Field(description="the tablet that sent it")


class PatientSummary(BaseModel):
    id: str
    group: str
    team_id: str
    municipality_id: str
    status: str = Field(description="the worst active alert's colour: red, yellow, blue; or green")
    latest: list[Reading]


class Patient(BaseModel):
    id: str
    group: str
    team_id: str
    team: str
    municipality_id: str
    gp_name: str | None
    active: bool
    on_oxygen: bool
    spo2_scale2: bool
    paused_until: datetime | None
    paused_reason: str | None
    consent_until: Any = None
    gateway_id: str | None
    gateway_last_seen: datetime | None
    status: str
    latest: list[LatestReading]


class Limits(BaseModel):
    kind: str
    alert_low: float | None
    warn_low: float | None
    warn_high: float | None
    alert_high: float | None
    source: str = Field(description="patient: set by a physician; group: the default")
    set_by: str
    set_at: datetime


class LimitChange(BaseModel):
    alert_low: float | None = Field(default=None, ge=-1e6, le=1e6)
    warn_low: float | None = Field(default=None, ge=-1e6, le=1e6)
    warn_high: float | None = Field(default=None, ge=-1e6, le=1e6)
    alert_high: float | None = Field(default=None, ge=-1e6, le=1e6)
    reason: str = Field(min_length=3, max_length=1000, pattern=r"^[^\x00]*$")

    @model_validator(mode="after")
    def ordered(self) -> LimitChange:
        vals = [
            v
            for v in (self.alert_low, self.warn_low, self.warn_high, self.alert_high)
            if v is not None
        ]
        if vals != sorted(vals):
            raise ValueError(
                "limits must be in order: alert_low <= warn_low <= warn_high <= alert_high"
            )
        return self


class LimitHistory(BaseModel):
    id: int
    kind: str
    old_limits: dict[str, float | None] | None
    new_limits: dict[str, float | None]
    set_by: str
    set_at: datetime
    reason: str


class Consent(BaseModel):
    id: int
    recipient: str
    given_at: Any
    valid_until: Any
    recorded_by: str
    recorded_at: datetime
    revoked_at: datetime | None
    valid: bool


class ScheduledKind(BaseModel):
    kind: Kind
    local_times: list[time] = Field(
        default=[], max_length=24, description="local wall-clock times (Europe/Copenhagen)"
    )
    times_per_day: int | None = Field(default=None, ge=1, le=24)
    grace_minutes: int = Field(
        default=120, ge=5, le=1440, description="late by more than this: missed"
    )

    @model_validator(mode="after")
    def followable(self) -> ScheduledKind:
        sched.check(self.local_times, self.times_per_day, timedelta(minutes=self.grace_minutes))
        return self


class ScheduleChange(BaseModel):
    kinds: list[ScheduledKind] = Field(max_length=len(Kind), description="[]: no schedule")
    reason: str = Field(min_length=3, max_length=1000, pattern=r"^[^\x00]*$")

    @model_validator(mode="after")
    def each_kind_once(self) -> ScheduleChange:
        kinds = [k.kind for k in self.kinds]
        if len(kinds) != len(set(kinds)):
            raise ValueError("kinds: each kind at most once")
        return self


class ScheduleEntry(BaseModel):
    kind: str
    local_times: list[time]
    times_per_day: int | None
    grace_minutes: int
    set_by: str
    set_at: datetime = Field(description="due times count from here")
    reason: str


class OverdueKind(BaseModel):
    kind: str
    due_at: datetime
    missed_at: datetime
    last_measured_at: datetime | None


class Schedule(BaseModel):
    patient_id: str
    time_zone: str = DEFAULT_LOCAL_TZ
    kinds: list[ScheduleEntry]
    overdue: list[OverdueKind] = Field(description="missed now (vitalvagt/schedule.py)")


ScheduleEditor = Annotated[Principal, Depends(require(Role.NURSE, Role.PHYSICIAN))]


def scoped_patient(conn: Conn, user: CurrentUser, patient_id: str) -> dict[str, Any]:
    p = q.get_patient(conn, user.scope, patient_id)
    if p is None:
        raise NotFound(f"patient {patient_id!r} is not known")  # ids are at most 63 chars
    return p


@router.get("")
def list_patients(
    conn: Conn,
    user: CurrentUser,
    team: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[PatientSummary]:
    """Active patients of the caller's teams (optionally one team) with each kind's latest
    reading of the last 30 days and a status colour."""
    rows = q.list_patients(conn, user.scope, team=team, limit=limit)
    audit(conn, user, "list_patients", None, team=team, rows=len(rows))
    return [PatientSummary(**r) for r in rows]


@router.get("/{patient_id}")
def patient(patient_id: PatientId, conn: Conn, user: CurrentUser) -> Patient:
    """One patient and the latest reading of each kind, with the meter and the tablet."""
    p = scoped_patient(conn, user, patient_id)
    latest = q.latest_readings(conn, user.scope, patient_id)
    audit(conn, user, "read_patient", patient_id)
    return Patient(**p, latest=latest)


@router.get("/{patient_id}/thresholds")
def thresholds(patient_id: PatientId, conn: Conn, user: CurrentUser) -> list[Limits]:
    """The alert limits in force for each kind: the patient's own, else the group's."""
    scoped_patient(conn, user, patient_id)
    rows = q.thresholds(conn, user.scope, patient_id)
    audit(conn, user, "read_thresholds", patient_id)
    return [Limits(**r) for r in rows]


@router.put("/{patient_id}/thresholds/{kind}")
def set_threshold(
    patient_id: PatientId, kind: Kind, body: LimitChange, conn: Conn, user: Physician
) -> list[Limits]:
    """Set the patient's own limits of one kind (physicians only, with a reason)."""
    limits = body.model_dump(exclude={"reason"})
    if not q.set_threshold(
        conn, user.scope, patient_id, kind.value, limits, by=user.user_id, reason=body.reason
    ):
        raise NotFound(f"patient {patient_id!r} is not known")
    audit(
        conn, user, "set_thresholds", patient_id, reason=body.reason, kind=kind.value, limits=limits
    )
    return [Limits(**r) for r in q.thresholds(conn, user.scope, patient_id)]


@router.get("/{patient_id}/thresholds/history")
def threshold_history(patient_id: PatientId, conn: Conn, user: CurrentUser) -> list[LimitHistory]:
    """Every change of the patient's limits: who, when, why, before and after."""
    scoped_patient(conn, user, patient_id)
    rows = q.threshold_history(conn, user.scope, patient_id)
    audit(conn, user, "read_threshold_history", patient_id)
    return [LimitHistory(**r) for r in rows]


@router.get("/{patient_id}/consents")
def consents(patient_id: PatientId, conn: Conn, user: CurrentUser) -> list[Consent]:
    """The patient's consents to pass data on (recipient, period, whether valid today)."""
    scoped_patient(conn, user, patient_id)
    rows = q.consents(conn, user.scope, patient_id)
    audit(conn, user, "read_consents", patient_id)
    return [Consent(**r) for r in rows]


def _minutes(r: dict[str, Any]) -> dict[str, Any]:
    """A schedule row with its grace in minutes, as the API shows it (times as text)."""
    out = {k: v for k, v in r.items() if k not in ("grace", "set_by", "set_at", "reason")}
    out["local_times"] = [t.isoformat() for t in r["local_times"]]
    return {**out, "grace_minutes": int(r["grace"].total_seconds() // 60)}


def _schedule(conn: Conn, user: Principal, patient_id: str) -> Schedule:
    rows = qs.schedule(conn, user.scope, patient_id)
    entries = [
        ScheduleEntry(**_minutes(r), set_by=r["set_by"], set_at=r["set_at"], reason=r["reason"])
        for r in rows
    ]
    plan = [
        sched.KindSchedule(r["kind"], r["set_at"], tuple(r["local_times"]), r["times_per_day"],
                           r["grace"])
        for r in rows
    ]  # fmt: skip
    last = qs.last_readings(conn, user.scope, patient_id, [r["kind"] for r in rows]) if rows else {}
    late = sched.overdue(plan, last, datetime.now(UTC))
    return Schedule(
        patient_id=patient_id,
        kinds=entries,
        overdue=[OverdueKind(kind=o.kind, due_at=o.due_at, missed_at=o.missed_at,
                             last_measured_at=o.last_measured_at) for o in late],
    )  # fmt: skip


@router.get("/{patient_id}/schedule")
def schedule(patient_id: PatientId, conn: Conn, user: CurrentUser) -> Schedule:
    """When each kind is due, and which are missed now (due, missed since, last reading)."""
    scoped_patient(conn, user, patient_id)
    out = _schedule(conn, user, patient_id)
    audit(conn, user, "read_schedule", patient_id)
    return out


@router.put("/{patient_id}/schedule")
def set_schedule(
    patient_id: PatientId, body: ScheduleChange, conn: Conn, user: ScheduleEditor
) -> Schedule:
    """Replace the measurement schedule (nurses and physicians, with a reason; the old and
    the new one go to the audit log)."""
    kinds = [
        {"kind": k.kind.value, "local_times": k.local_times, "times_per_day": k.times_per_day,
         "grace": timedelta(minutes=k.grace_minutes)}
        for k in body.kinds
    ]  # fmt: skip
    with conn.transaction():
        old = qs.set_schedule(conn, user.scope, patient_id, kinds, by=user.user_id,
                              reason=body.reason)  # fmt: skip
        if old is None:
            raise NotFound(f"patient {patient_id!r} is not known")
        shown = [k.model_dump(mode="json") for k in body.kinds]
        before = [_minutes(r) for r in old]
        audit(conn, user, "set_schedule", patient_id, reason=body.reason, old=before, new=shown)
    return _schedule(conn, user, patient_id)
