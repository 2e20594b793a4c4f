"""``/patients``: the list with the latest readings and a status colour, one patient, the
alert limits (read; change by a physician with a reason, history kept) and consents.

A patient outside the caller's teams is "not found", exactly like one that does not exist.
The schema holds no measurement schedule yet: there is no route for one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from api.audit import audit
from api.errors import NotFound
from api.params import PatientId
from api.queries import patients as q
from api.security import Conn, CurrentUser, Physician
from vitalvagt.kinds import Kind

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
    latest: list[Reading]


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
    """One patient and the latest reading of each kind."""
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
