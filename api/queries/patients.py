"""SQL of the patient routes: every query takes the caller's scope (``SCOPE_SQL``)."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.security import SCOPE_SQL

LIMIT_FIELDS = ("alert_low", "warn_low", "warn_high", "alert_high")
# The worst active alert gives the patient's colour; none: green.
_STATUS_SQL = (
    "coalesce((SELECT a.severity FROM alerts a WHERE a.patient_id = p.id"
    " AND a.state IN ('open', 'acknowledged')"
    " ORDER BY CASE a.severity WHEN 'red' THEN 0 WHEN 'yellow' THEN 1 ELSE 2 END LIMIT 1),"
    " 'green')"
)
_LATEST_SQL = (
    "(SELECT coalesce(jsonb_agg(jsonb_build_object('kind', x.kind, 'value', x.value,"
    " 'unit', x.unit, 'measured_at', x.measured_at) ORDER BY x.kind), '[]'::jsonb) FROM"
    " (SELECT DISTINCT ON (o.kind) o.kind, o.value, o.unit, o.measured_at FROM observations o"
    " WHERE o.patient_id = p.id AND o.measured_at > now() - interval '30 days'"
    " ORDER BY o.kind, o.measured_at DESC) x)"
)


def fetch(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()  # type: ignore[arg-type]


def list_patients(
    conn: psycopg.Connection, scope: dict[str, Any], *, team: str | None, limit: int
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT p.id, p.patient_group::text AS group, p.team_id, p.municipality_id,"
        f" {_STATUS_SQL} AS status, {_LATEST_SQL} AS latest"
        f" FROM patients p WHERE p.active AND {SCOPE_SQL}"
        " AND (%(team)s::text IS NULL OR p.team_id = %(team)s) ORDER BY p.id LIMIT %(limit)s",
        {**scope, "team": team, "limit": limit},
    )


def get_patient(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str
) -> dict[str, Any] | None:
    rows = fetch(
        conn,
        "SELECT p.id, p.patient_group::text AS group, p.team_id, t.name AS team,"
        " p.municipality_id, p.gp_name, p.active, p.on_oxygen, p.spo2_scale2,"
        " p.paused_until, p.paused_reason, p.consent_until, g.id AS gateway_id,"
        f" g.last_seen_at AS gateway_last_seen, {_STATUS_SQL} AS status FROM patients p"
        " JOIN acute_teams t ON t.id = p.team_id"
        " LEFT JOIN LATERAL (SELECT id, last_seen_at FROM gateways WHERE patient_id = p.id"
        "  AND active ORDER BY created_at DESC LIMIT 1) g ON true"
        f" WHERE p.id = %(patient)s AND {SCOPE_SQL}",
        {**scope, "patient": patient_id},
    )
    return rows[0] if rows else None


def latest_readings(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str
) -> list[dict[str, Any]]:
    """Each kind's latest reading.

    Not a DISTINCT ON over all the patient's readings: with continuous night oximetry that
    is millions of rows (17 s with 6 months, bench/web_bench.py). The last 2 days are read
    raw (fresh, whatever the roll-up job has done yet); an older kind is found through its
    daily roll-ups' latest ``last_at`` and read at exactly that time, by the (patient, time)
    index (a kind whose raw readings retention has dropped is left out).
    """
    cols = (
        "o.kind, o.value, o.unit, o.measured_at, o.flags, o.device_address, o.device_model,"
        " o.gateway_id"
    )
    return fetch(
        conn,
        f"WITH recent AS (SELECT DISTINCT ON (o.kind) {cols}"
        " FROM observations o JOIN patients p ON p.id = o.patient_id"
        f" WHERE o.patient_id = %(patient)s AND {SCOPE_SQL}"
        "  AND o.measured_at > now() - interval '2 days' ORDER BY o.kind, o.measured_at DESC),"
        " older AS (SELECT r.kind, max(r.last_at) AS at FROM observation_rollups r"
        "  JOIN patients p ON p.id = r.patient_id"
        f"  WHERE r.resolution = 'day' AND r.patient_id = %(patient)s AND {SCOPE_SQL}"
        "  AND r.kind NOT IN (SELECT kind FROM recent) GROUP BY r.kind)"
        " SELECT * FROM recent UNION ALL"
        f" SELECT x.* FROM older JOIN LATERAL (SELECT {cols} FROM observations o"
        "  WHERE o.patient_id = %(patient)s AND o.measured_at = older.at AND o.kind = older.kind"
        "  LIMIT 1) x ON true"
        " ORDER BY kind",
        {**scope, "patient": patient_id},
    )


def thresholds(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str
) -> list[dict[str, Any]]:
    """The limits in force per kind: the patient's own where a physician set them, else the
    group's defaults."""
    return fetch(
        conn,
        "SELECT DISTINCT ON (l.kind) l.kind, l.alert_low, l.warn_low, l.warn_high,"
        " l.alert_high, CASE WHEN l.patient_id IS NULL THEN 'group' ELSE 'patient' END"
        " AS source, l.set_by, l.set_at FROM patients p JOIN alert_limits l"
        " ON l.patient_id = p.id OR (l.patient_id IS NULL AND l.patient_group = p.patient_group)"
        f" WHERE p.id = %(patient)s AND {SCOPE_SQL}"
        " ORDER BY l.kind, l.patient_id IS NULL",
        {**scope, "patient": patient_id},
    )


def set_threshold(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    kind: str,
    limits: dict[str, float | None],
    *,
    by: str,
    reason: str,
) -> bool:
    """Set the patient's own limits of one kind, keeping the old ones in the history.
    False when the patient is not in scope."""
    with conn.transaction():
        rows = fetch(
            conn,
            "SELECT p.id FROM patients p WHERE p.id = %(patient)s AND " + SCOPE_SQL + " FOR UPDATE",
            {**scope, "patient": patient_id},
        )
        if not rows:
            return False
        old = fetch(
            conn,
            "SELECT alert_low, warn_low, warn_high, alert_high FROM alert_limits"
            " WHERE patient_id = %(patient)s AND kind = %(kind)s",
            {"patient": patient_id, "kind": kind},
        )
        conn.execute(
            "INSERT INTO alert_limits (patient_id, kind, alert_low, warn_low, warn_high,"
            " alert_high, set_by, set_at) VALUES (%(patient)s, %(kind)s, %(alert_low)s,"
            " %(warn_low)s, %(warn_high)s, %(alert_high)s, %(by)s, now())"
            " ON CONFLICT (patient_id, kind) WHERE patient_id IS NOT NULL DO UPDATE SET"
            " alert_low = EXCLUDED.alert_low, warn_low = EXCLUDED.warn_low,"
            " warn_high = EXCLUDED.warn_high, alert_high = EXCLUDED.alert_high,"
            " set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at",
            {"patient": patient_id, "kind": kind, "by": by, **limits},
        )
        conn.execute(
            "INSERT INTO alert_limit_history (patient_id, kind, old_limits, new_limits, set_by,"
            " reason) VALUES (%s, %s, %s, %s, %s, %s)",
            (patient_id, kind, Jsonb(old[0]) if old else None, Jsonb(limits), by, reason),
        )
    return True


def threshold_history(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT h.id, h.kind, h.old_limits, h.new_limits, h.set_by, h.set_at, h.reason"
        " FROM alert_limit_history h JOIN patients p ON p.id = h.patient_id"
        f" WHERE h.patient_id = %(patient)s AND {SCOPE_SQL} ORDER BY h.id",
        {**scope, "patient": patient_id},
    )


def consents(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT c.id, c.recipient, c.given_at, c.valid_until, c.recorded_by, c.recorded_at,"
        " c.revoked_at, (c.revoked_at IS NULL AND current_date BETWEEN c.given_at AND"
        " c.valid_until) AS valid FROM consents c JOIN patients p ON p.id = c.patient_id"
        f" WHERE c.patient_id = %(patient)s AND {SCOPE_SQL} ORDER BY c.id",
        {**scope, "patient": patient_id},
    )


def add_consent(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    *,
    recipient: str,
    given_at: date,
    valid_until: date,
    by: str,
) -> dict[str, Any] | None:
    rows = fetch(
        conn,
        "INSERT INTO consents (patient_id, recipient, given_at, valid_until, recorded_by)"
        " SELECT p.id, %(recipient)s, %(given)s, %(until)s, %(by)s FROM patients p"
        f" WHERE p.id = %(patient)s AND {SCOPE_SQL} RETURNING id",
        {
            **scope,
            "patient": patient_id,
            "recipient": recipient,
            "given": given_at,
            "until": valid_until,
            "by": by,
        },
    )
    if not rows:
        return None
    return next(c for c in consents(conn, scope, patient_id) if c["id"] == rows[0]["id"])


def valid_consent(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str, recipient: str
) -> tuple[dict[str, Any] | None, str]:
    """The consent in force today for ``recipient``, or None and why there is none."""
    mine = [c for c in consents(conn, scope, patient_id) if c["recipient"] == recipient]
    if valid := [c for c in mine if c["valid"]]:
        return valid[-1], ""
    if not mine:
        return None, f"the patient has given no consent to pass data on to {recipient!r}"
    last = mine[-1]
    if last["revoked_at"] is not None:
        return None, f"the consent for {recipient!r} was revoked on {last['revoked_at']:%Y-%m-%d}"
    return None, (
        f"the consent for {recipient!r} is valid {last['given_at']} to {last['valid_until']} only"
    )
