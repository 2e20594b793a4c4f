"""``/admin``: dead letters (without payloads; one by id with its payload, that read
audited) and the access log of a patient. Admins only, within their teams: a dead letter is
in scope through its gateway's patient (one whose topic named no known gateway is left to
the operators' command line)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from api.audit import audit
from api.errors import NotFound
from api.params import PatientId
from api.queries import gateways as q
from api.routes.patients import scoped_patient
from api.security import Admin, Conn

router = APIRouter(prefix="/admin", tags=["admin"])


class DeadLetter(BaseModel):
    id: int
    received_at: datetime
    topic: str
    gateway_id: str | None
    reason_code: str
    reason: str
    payload_size: int
    payload_truncated: bool
    replayed_at: datetime | None
    replay_result: str | None


class DeadLetterWithPayload(DeadLetter):
    patient_id: str | None
    payload_base64: str
    payload_sha256: str | None


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    patient_id: str | None
    detail: dict[str, Any]


@router.get("/dead-letters")
def dead_letters(
    conn: Conn,
    user: Admin,
    include_replayed: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetter]:
    """Refused messages of the admin's teams' gateways, newest first, without payloads."""
    rows = q.dead_letters(conn, user.scope, include_replayed=include_replayed, limit=limit)
    audit(conn, user, "list_dead_letters", None, rows=len(rows))
    return [DeadLetter(**r) for r in rows]


@router.get("/dead-letters/{dead_letter_id}")
def dead_letter(
    dead_letter_id: Annotated[int, Path(ge=1, le=2**63 - 1)], conn: Conn, user: Admin
) -> DeadLetterWithPayload:
    """One dead letter with its payload (which may hold personal data): the read is audited."""
    d = q.dead_letter(conn, user.scope, dead_letter_id)
    if d is None:
        raise NotFound(f"dead letter {dead_letter_id} is not known")
    payload = bytes(d.pop("payload"))
    audit(conn, user, "read_dead_letter_payload", d["patient_id"], dead_letter=dead_letter_id)
    return DeadLetterWithPayload(**d, payload_base64=base64.b64encode(payload).decode())


@router.get("/audit/{patient_id}")
def audit_log(
    patient_id: PatientId,
    conn: Conn,
    user: Admin,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AuditEntry]:
    """Who read or changed this patient's data, when, from where and why (newest first)."""
    scoped_patient(conn, user, patient_id)
    rows = q.audit_of_patient(conn, user.scope, patient_id, limit=limit)
    audit(conn, user, "read_audit_log", patient_id)
    return [AuditEntry(**r) for r in rows]
