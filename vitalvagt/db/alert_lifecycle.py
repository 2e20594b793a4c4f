"""The life cycle of an alert, where both the alert engine and the API can reach it.

States: open -> acknowledged (who, when, note) / snoozed until a time (no alert or
notification before it, then open again) -> resolved (who, when, why), by a person or by the
engine when the alert's condition is gone ("cleared"). One active alert per (patient, rule)
is the unique partial index ``alerts_one_active_idx``. Every change is a row of
``alert_transitions`` (from, to, who, when, reason, note), written in the transaction of the
change, so an alert's history can be read back.

The functions take an open connection and change nothing unless the alert is in a state
that allows the change (they return False then): a stale click cannot undo a newer change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row

ENGINE = "engine"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


ACTIVE = (AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.SNOOZED)
# Triage order: red, then yellow, then blue; within a colour the oldest first.
SEVERITY_RANK_SQL = "CASE a.severity WHEN 'red' THEN 0 WHEN 'yellow' THEN 1 ELSE 2 END"


@dataclass(frozen=True, slots=True)
class Transition:
    alert_id: int
    from_state: str | None
    to_state: str
    at: datetime
    by: str
    reason: str
    note: str | None


def record(
    cur: psycopg.Cursor | psycopg.Connection,
    alert_id: int,
    from_state: str | None,
    to_state: str,
    *,
    by: str,
    reason: str,
    note: str | None = None,
) -> None:
    cur.execute(
        "INSERT INTO alert_transitions (alert_id, from_state, to_state, by, reason, note)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (alert_id, from_state, to_state, by, reason, note),
    )


def _change(
    conn: psycopg.Connection,
    alert_id: int,
    *,
    allowed: Sequence[AlertState],
    to: AlertState | None,  # None: the state stays as it is
    sets: str,
    params: tuple[Any, ...],
    by: str,
    reason: str,
    note: str | None,
) -> bool:
    with conn.transaction():
        row = conn.execute(
            "SELECT state::text FROM alerts WHERE id = %s FOR UPDATE", (alert_id,)
        ).fetchone()
        if row is None or row[0] not in allowed:
            return False
        state = row[0] if to is None else to.value
        conn.execute(
            f"UPDATE alerts SET state = %s, {sets} WHERE id = %s",
            (state, *params, alert_id),
        )
        record(conn, alert_id, row[0], state, by=by, reason=reason, note=note)
    return True


def acknowledge(conn: psycopg.Connection, alert_id: int, *, by: str, note: str | None) -> bool:
    """ "I've got it": an open or snoozed alert is acknowledged."""
    return _change(
        conn, alert_id, allowed=(AlertState.OPEN, AlertState.SNOOZED),
        to=AlertState.ACKNOWLEDGED,
        sets="acknowledged_by = %s, acknowledged_at = now(), note = coalesce(%s, note),"
        " snoozed_until = NULL",
        params=(by, note), by=by, reason="acknowledged", note=note,
    )  # fmt: skip


def snooze(
    conn: psycopg.Connection, alert_id: int, *, by: str, until: datetime, note: str | None
) -> bool:
    """No alert or notification for it before ``until``; then it is open again."""
    return _change(
        conn, alert_id, allowed=(AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.SNOOZED),
        to=AlertState.SNOOZED, sets="snoozed_until = %s, snoozed_by = %s",
        params=(until, by), by=by, reason="snoozed", note=note,
    )  # fmt: skip


def resolve(conn: psycopg.Connection, alert_id: int, *, by: str, note: str | None) -> bool:
    """Resolved by a person (``note`` says why) or by the engine (``by=ENGINE``)."""
    return _change(
        conn, alert_id, allowed=ACTIVE, to=AlertState.RESOLVED,
        sets="resolved_by = %s, resolved_at = now(), note = coalesce(%s, note),"
        " snoozed_until = NULL",
        params=(by, note), by=by, reason="resolved" if by != ENGINE else "cleared", note=note,
    )  # fmt: skip


def add_note(conn: psycopg.Connection, alert_id: int, *, by: str, note: str) -> bool:
    """A note to an active alert without a change of state ("called her: measuring again"):
    the alert's note, and a transition of its own (reason ``noted``) that the history, the
    stream and the webhooks carry like any other."""
    return _change(
        conn, alert_id, allowed=ACTIVE, to=None, sets="note = %s", params=(note,), by=by,
        reason="noted", note=note,
    )  # fmt: skip


def end_snoozes(conn: psycopg.Connection, *, now: datetime) -> int:
    """Snoozes that have run out: the alerts are open again (a scheduled job)."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE alerts SET state = 'open', snoozed_until = NULL"
            " WHERE state = 'snoozed' AND snoozed_until <= %s RETURNING id",
            (now,),
        ).fetchall()
        for (alert_id,) in rows:
            record(conn, alert_id, "snoozed", "open", by=ENGINE, reason="snooze_ended")
    return len(rows)


def history(conn: psycopg.Connection, alert_id: int) -> list[Transition]:
    rows = conn.execute(
        "SELECT alert_id, from_state, to_state, at, by, reason, note FROM alert_transitions"
        " WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    ).fetchall()
    return [Transition(*r) for r in rows]


def triage(
    conn: psycopg.Connection,
    *,
    team_ids: Sequence[str] | None = None,
    states: Sequence[AlertState] = (AlertState.OPEN, AlertState.ACKNOWLEDGED),
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Active alerts in triage order: red, yellow, blue, then the oldest first. Snoozed ones
    only when asked for (``states``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT a.id, a.patient_id, a.team_id, a.rule, a.rule_version, a.category,"
            " a.severity, a.state::text AS state, a.kind, a.value, a.measured_at, a.message,"
            " a.opened_at, a.last_triggered_at, a.trigger_count, a.late_s, a.snoozed_until,"
            " a.acknowledged_by, a.acknowledged_at, a.note FROM alerts a"
            " WHERE a.state::text = ANY(%s) AND (%s::text[] IS NULL OR a.team_id = ANY(%s))"
            f" ORDER BY {SEVERITY_RANK_SQL}, a.opened_at, a.id LIMIT %s",
            ([s.value for s in states], team_ids, team_ids, limit),
        ).fetchall()
