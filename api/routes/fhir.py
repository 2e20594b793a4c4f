"""FHIR R4: a patient's readings as a Bundle (PHD IG; api/fhir.py), for the user's own view
and for export to an outside recipient, which needs the patient's consent in force for that
recipient (Health Act section 43-44: written, recipient named, at most a year; recorded here
with ``POST /patients/{id}/consents``). Without one the export is a 403 problem saying why.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from api.audit import audit
from api.errors import Forbidden, NotFound
from api.fhir import bundle
from api.params import PatientId, check_window
from api.queries import observations as obs
from api.queries import patients as q
from api.routes.patients import Consent, scoped_patient
from api.security import Clinician, Conn, CurrentUser
from vitalvagt.kinds import Kind

router = APIRouter(prefix="/patients", tags=["fhir"])
FHIR_JSON = "application/fhir+json"
_BUNDLE = {
    200: {
        "description": "a FHIR R4 Bundle (type collection)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
Recipient = Annotated[str, Field(min_length=2, max_length=200, pattern=r"^[^\x00]*$")]


class NewConsent(BaseModel):
    recipient: Recipient
    given_at: date
    valid_until: date

    @model_validator(mode="after")
    def at_most_a_year(self) -> NewConsent:
        if self.valid_until < self.given_at:
            raise ValueError("valid_until: not before given_at")
        try:
            limit = self.given_at.replace(year=self.given_at.year + 1)
        except ValueError:  # 29 February
            limit = self.given_at.replace(year=self.given_at.year + 1, day=28)
        if self.valid_until > limit:
            raise ValueError("valid_until: a consent lapses after a year at most")
        return self


class Export(BaseModel):
    recipient: Recipient
    kind: Kind | None = None
    since: datetime | None = None
    until: datetime | None = None


def _rows(
    conn: Conn,
    user: CurrentUser,
    patient_id: str,
    kind: Kind | None,
    since: datetime | None,
    until: datetime | None,
) -> list[dict[str, Any]]:
    check_window(since, until)
    scoped_patient(conn, user, patient_id)
    return obs.for_fhir(
        conn, user.scope, patient_id, kind=kind, since=since, until=until, limit=10_000
    )


@router.get("/{patient_id}/fhir", responses=_BUNDLE)
def fhir_bundle(
    patient_id: PatientId,
    conn: Conn,
    user: CurrentUser,
    kind: Kind | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The patient's readings in [since, until) (at most 10,000) as a FHIR Bundle."""
    rows = _rows(conn, user, patient_id, kind, since, until)
    audit(conn, user, "read_fhir", patient_id, rows=len(rows))
    return bundle(patient_id, rows)


@router.post("/{patient_id}/fhir/export", responses=_BUNDLE)
def fhir_export(patient_id: PatientId, body: Export, conn: Conn, user: Clinician) -> dict[str, Any]:
    """The Bundle for an outside recipient: only with the patient's consent in force for it."""
    rows = _rows(conn, user, patient_id, body.kind, body.since, body.until)
    consent, why = q.valid_consent(conn, user.scope, patient_id, body.recipient)
    if consent is None:
        audit(conn, user, "export_fhir_refused", patient_id, reason=why, recipient=body.recipient)
        raise Forbidden(f"no export: {why}")
    audit(
        conn,
        user,
        "export_fhir",
        patient_id,
        recipient=body.recipient,
        consent=consent["id"],
        rows=len(rows),
    )
    return bundle(patient_id, rows, recipient=body.recipient)


@router.post("/{patient_id}/consents", status_code=201)
def add_consent(patient_id: PatientId, body: NewConsent, conn: Conn, user: Clinician) -> Consent:
    """Record a written consent to pass data on to a named recipient (at most a year)."""
    c = q.add_consent(
        conn,
        user.scope,
        patient_id,
        recipient=body.recipient,
        given_at=body.given_at,
        valid_until=body.valid_until,
        by=user.user_id,
    )
    if c is None:
        raise NotFound(f"patient {patient_id!r} is not known")
    audit(
        conn,
        user,
        "add_consent",
        patient_id,
        recipient=body.recipient,
        valid_until=body.valid_until.isoformat(),
    )
    return Consent(**c)
