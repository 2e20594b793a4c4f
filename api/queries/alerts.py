"""SQL of the alert routes, scoped like every patient query; the changes themselves go
through the core's life cycle (vitalvagt.db.alert_lifecycle)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from api.queries.patients import fetch
from api.security import SCOPE_SQL
from vitalvagt.db.alert_lifecycle import SEVERITY_RANK_SQL

_COLUMNS = (
    "a.id, a.patient_id, a.team_id, a.rule, a.rule_version, a.category, a.severity,"
    " a.state::text AS state, a.kind, a.value, a.measured_at, a.message, a.opened_at,"
    " a.last_triggered_at, a.trigger_count, a.late_s, a.snoozed_until, a.acknowledged_by,"
    " a.acknowledged_at, a.resolved_by, a.resolved_at, a.note, p.patient_group::text AS group,"
    " a.details"
)


def triage(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    *,
    states: list[str],
    severities: list[str] | None,
    team: str | None,
    patient: str | None,
    limit: int,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """Alerts in triage order (red, yellow, blue; the oldest first): the ordering of
    ``alert_lifecycle.triage``, with the caller's scope and the filters in the query.
    ``since``: opened then or later, or still active (not resolved) whenever it opened."""
    return fetch(
        conn,
        f"SELECT {_COLUMNS} FROM alerts a JOIN patients p ON p.id = a.patient_id"
        f" WHERE {SCOPE_SQL} AND a.team_id = ANY(%(teams)s) AND a.state::text = ANY(%(states)s)"
        # Spelled out when no resolved alert is asked for, so that the planner can use the
        # partial index of active alerts (alerts_team_open_idx) instead of every alert.
        + (" AND a.state <> 'resolved'" if "resolved" not in states else "")
        + " AND (%(severities)s::text[] IS NULL OR a.severity = ANY(%(severities)s))"
        " AND (%(team)s::text IS NULL OR a.team_id = %(team)s)"
        " AND (%(patient)s::text IS NULL OR a.patient_id = %(patient)s)"
        " AND (%(since)s::timestamptz IS NULL OR a.opened_at >= %(since)s"
        "  OR a.state <> 'resolved')"
        f" ORDER BY {SEVERITY_RANK_SQL}, a.opened_at, a.id LIMIT %(limit)s",
        {
            **scope,
            "states": states,
            "severities": severities,
            "team": team,
            "patient": patient,
            "since": since,
            "limit": limit,
        },
    )


def get_alert(
    conn: psycopg.Connection, scope: dict[str, Any], alert_id: int
) -> dict[str, Any] | None:
    rows = fetch(
        conn,
        f"SELECT {_COLUMNS}, a.observation_id FROM alerts a"
        " JOIN patients p ON p.id = a.patient_id"
        f" WHERE a.id = %(alert)s AND {SCOPE_SQL} AND a.team_id = ANY(%(teams)s)",
        {**scope, "alert": alert_id},
    )
    return rows[0] if rows else None


def triggering_readings(
    conn: psycopg.Connection, scope: dict[str, Any], alert: dict[str, Any]
) -> list[dict[str, Any]]:
    """The reading that triggered the alert and the parts of the same measurement (a blood
    pressure's systolic, diastolic and mean share a reading id)."""
    if alert["observation_id"] is None or alert["measured_at"] is None:
        return []
    return fetch(
        conn,
        "WITH t AS (SELECT o.reading_id FROM observations o WHERE o.id = %(obs)s"
        "  AND o.measured_at = %(at)s AND o.patient_id = %(patient)s)"
        " SELECT o.id, o.kind, o.value, o.unit, o.measured_at, o.received_at, o.flags,"
        " o.reading_id, o.device_address, o.gateway_id FROM observations o"
        " JOIN patients p ON p.id = o.patient_id"
        f" WHERE o.patient_id = %(patient)s AND {SCOPE_SQL} AND o.measured_at = %(at)s"
        " AND (o.id = %(obs)s OR o.reading_id = (SELECT reading_id FROM t))"
        " ORDER BY o.kind",
        {
            **scope,
            "obs": alert["observation_id"],
            "at": alert["measured_at"],
            "patient": alert["patient_id"],
        },
    )
