"""SQL of the gateway and dead-letter routes: a gateway is in scope through its patient."""

from __future__ import annotations

from typing import Any

import psycopg

from api.queries.patients import fetch
from api.security import SCOPE_SQL


def gateway_owner(conn: psycopg.Connection, gateway_id: str) -> tuple[bool, str | None] | None:
    """(exists, patient) of a gateway id, or None when there is none: for provisioning."""
    row = conn.execute("SELECT patient_id FROM gateways WHERE id = %s", (gateway_id,)).fetchone()
    return None if row is None else (True, row[0])


_STATE_SQL = "CASE WHEN g.online THEN 'online' WHEN NOT g.online THEN 'offline' ELSE 'unknown' END"


def get_gateway(
    conn: psycopg.Connection, scope: dict[str, Any], gateway_id: str
) -> dict[str, Any] | None:
    rows = fetch(
        conn,
        "SELECT g.id, g.patient_id, g.active, g.created_at, g.last_seen_at, g.last_status,"
        f" {_STATE_SQL} AS state, g.status_since AS since, g.status_at,"
        " (SELECT coalesce(jsonb_agg(jsonb_build_object('address', d.address, 'model', d.model,"
        "  'serial', d.serial, 'firmware', d.firmware, 'last_seen_at', d.last_seen_at,"
        "  'active', d.active, 'battery_level', d.battery_level, 'battery_at', d.battery_at)"
        "  ORDER BY d.address), '[]'::jsonb) FROM devices d"
        "  WHERE d.gateway_id = g.id) AS devices"
        " FROM gateways g JOIN patients p ON p.id = g.patient_id"
        f" WHERE g.id = %(gateway)s AND {SCOPE_SQL}",
        {**scope, "gateway": gateway_id},
    )
    return rows[0] if rows else None


def list_gateways(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    *,
    state: str | None,
    team: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The active gateways of the caller's teams: offline first (the longest offline
    first), then unknown, then online; optionally of one state or team. Each with the
    lowest battery level of its active devices (null: none known)."""
    return fetch(
        conn,
        f"SELECT g.id, g.patient_id, p.team_id, {_STATE_SQL} AS state, g.status_since AS since,"
        " g.status_at, g.last_seen_at, (SELECT min(d.battery_level) FROM devices d"
        "  WHERE d.gateway_id = g.id AND d.active) AS lowest_battery"
        " FROM gateways g JOIN patients p ON p.id = g.patient_id"
        f" WHERE g.active AND {SCOPE_SQL}"
        f" AND (%(state)s::text IS NULL OR {_STATE_SQL} = %(state)s)"
        " AND (%(team)s::text IS NULL OR p.team_id = %(team)s)"
        " ORDER BY CASE WHEN g.online THEN 2 WHEN NOT g.online THEN 0 ELSE 1 END,"
        " g.status_since NULLS LAST, g.id LIMIT %(limit)s",
        {**scope, "state": state, "team": team, "limit": limit},
    )


def revoke_gateway(conn: psycopg.Connection, scope: dict[str, Any], gateway_id: str) -> bool:
    row = conn.execute(
        "UPDATE gateways g SET active = false FROM patients p WHERE p.id = g.patient_id"
        f" AND g.id = %(gateway)s AND {SCOPE_SQL} RETURNING g.id",
        {**scope, "gateway": gateway_id},
    ).fetchone()
    return row is not None


_DL_SCOPE = (
    "FROM dead_letters d JOIN gateways g ON g.id = d.gateway_id"
    f" JOIN patients p ON p.id = g.patient_id WHERE {SCOPE_SQL}"
)


def dead_letters(
    conn: psycopg.Connection, scope: dict[str, Any], *, include_replayed: bool, limit: int
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT d.id, d.received_at, d.topic, d.gateway_id, d.reason_code, d.reason,"
        " d.payload_size, d.payload_truncated, d.replayed_at, d.replay_result"
        f" {_DL_SCOPE} AND (%(all)s OR d.replayed_at IS NULL) ORDER BY d.id DESC"
        " LIMIT %(limit)s",
        {**scope, "all": include_replayed, "limit": limit},
    )


def dead_letter(
    conn: psycopg.Connection, scope: dict[str, Any], dead_letter_id: int
) -> dict[str, Any] | None:
    rows = fetch(
        conn,
        "SELECT d.id, d.received_at, d.topic, d.gateway_id, g.patient_id, d.reason_code,"
        " d.reason, d.payload_size, d.payload_truncated, d.replayed_at, d.replay_result,"
        f" d.payload, encode(d.payload_sha256, 'hex') AS payload_sha256 {_DL_SCOPE}"
        " AND d.id = %(id)s",
        {**scope, "id": dead_letter_id},
    )
    return rows[0] if rows else None


def audit_of_patient(
    conn: psycopg.Connection, scope: dict[str, Any], patient_id: str, *, limit: int
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT l.id, l.at, l.actor, l.action, l.patient_id, l.detail FROM audit_log l"
        f" JOIN patients p ON p.id = l.patient_id WHERE l.patient_id = %(patient)s"
        f" AND {SCOPE_SQL} ORDER BY l.id DESC LIMIT %(limit)s",
        {**scope, "patient": patient_id, "limit": limit},
    )
