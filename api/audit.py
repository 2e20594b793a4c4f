"""The access log (Health Act): every read of patient data and every change, with who, what,
when (the row's time), from where (the client's address) and why. Never the token."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from api.security import Principal


def audit(
    conn: psycopg.Connection,
    user: Principal,
    action: str,
    patient_id: str | None = None,
    *,
    reason: str | None = None,
    **detail: Any,
) -> None:
    body = {"address": user.address, "role": user.role.value, **detail}
    if reason is not None:
        body["reason"] = reason
    conn.execute(
        "INSERT INTO audit_log (actor, action, patient_id, detail) VALUES (%s, %s, %s, %s)",
        (user.user_id, action, patient_id, Jsonb(body)),
    )


def audit_anonymous(
    conn: psycopg.Connection, actor: str, action: str, address: str, **detail: Any
) -> None:
    """Events without a principal (a login, failed or not): the claimed name as actor."""
    conn.execute(
        "INSERT INTO audit_log (actor, action, detail) VALUES (%s, %s, %s)",
        (actor[:100], action, Jsonb({"address": address, **detail})),
    )
