"""SQL of a patient's measurement schedule (``measurement_schedules``), scoped like every
patient query: read it, replace it, and the latest reading of each kind it names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from api.queries.patients import fetch
from api.security import SCOPE_SQL


def schedule(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT s.kind, s.local_times, s.times_per_day, s.grace, s.set_by, s.set_at, s.reason"
        " FROM measurement_schedules s JOIN patients p ON p.id = s.patient_id"
        f" WHERE s.patient_id = %(patient)s AND {SCOPE_SQL} ORDER BY s.kind",
        {**scope, "patient": patient_id},
    )


def last_readings(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str, kinds: list[str]
) -> dict[str, datetime]:
    """The latest measured_at of each of ``kinds`` (one index probe per kind)."""
    rows = conn.execute(
        "SELECT k.kind, (SELECT max(o.measured_at) FROM observations o"
        "  WHERE o.patient_id = p.id AND o.kind = k.kind)"
        " FROM patients p CROSS JOIN unnest(%(kinds)s::text[]) AS k(kind)"
        f" WHERE p.id = %(patient)s AND {SCOPE_SQL}",
        {**scope, "patient": patient_id, "kinds": kinds},
    ).fetchall()
    return {kind: at for kind, at in rows if at is not None}


def set_schedule(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    kinds: list[dict[str, Any]],
    *,
    by: str,
    reason: str,
) -> list[dict[str, Any]] | None:
    """Replace the patient's schedule by ``kinds`` (kind, local_times, times_per_day, grace);
    returns the old one (for the audit log), or None when the patient is not in scope. A
    kind whose settings are unchanged keeps its set_at (the start of its due times)."""
    with conn.transaction():
        rows = fetch(
            conn,
            f"SELECT p.id FROM patients p WHERE p.id = %(patient)s AND {SCOPE_SQL} FOR UPDATE",
            {**scope, "patient": patient_id},
        )
        if not rows:
            return None
        old = schedule(conn, scope, patient_id)
        conn.execute(
            "DELETE FROM measurement_schedules WHERE patient_id = %s AND NOT kind = ANY(%s)",
            (patient_id, [k["kind"] for k in kinds]),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO measurement_schedules AS s (patient_id, kind, local_times,"
                " times_per_day, grace, set_by, reason) VALUES (%(patient)s, %(kind)s,"
                " %(local_times)s::time[], %(times_per_day)s, %(grace)s, %(by)s, %(reason)s)"
                " ON CONFLICT (patient_id, kind) DO UPDATE SET"
                " local_times = EXCLUDED.local_times, times_per_day = EXCLUDED.times_per_day,"
                " grace = EXCLUDED.grace, set_by = EXCLUDED.set_by, reason = EXCLUDED.reason,"
                " set_at = CASE WHEN (s.local_times, s.times_per_day, s.grace) IS NOT DISTINCT"
                "  FROM (EXCLUDED.local_times, EXCLUDED.times_per_day, EXCLUDED.grace)"
                "  THEN s.set_at ELSE now() END",
                [{**k, "patient": patient_id, "by": by, "reason": reason} for k in kinds],
            )
    return old
