"""The alert engine's database work: evaluate patients, keep one active alert per rule.

The latest reading of each kind is checked against the patient's limits (the patient's own
if a physician set them, else the group default). A new finding opens an alert; a repeated
finding updates the active one (the unique index on (patient, rule) for active alerts makes
a duplicate impossible, even from two engines at once). Missed measurements open a blue
alert that resolves itself when readings arrive again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from alerts.rules import Limits, Severity, evaluate_reading, limit_message, missed_message
from vitalvagt.kinds import Kind

log = logging.getLogger(__name__)

LOOKBACK = timedelta(days=2)  # only recent readings can open an alert


@dataclass(frozen=True)
class Evaluation:
    opened: int
    updated: int


def _limits(conn: psycopg.Connection, patient_ids: Sequence[str]) -> dict[tuple[str, str], Limits]:
    rows = conn.execute(
        "SELECT p.id, l.kind, l.alert_low, l.warn_low, l.warn_high, l.alert_high, l.patient_id"
        " FROM patients p JOIN alert_limits l ON l.patient_id = p.id"
        " OR (l.patient_id IS NULL AND l.patient_group = p.patient_group)"
        " WHERE p.id = ANY(%s) ORDER BY l.patient_id NULLS FIRST",
        (list(patient_ids),),
    ).fetchall()
    out: dict[tuple[str, str], Limits] = {}
    for pid, kind, *values, _own in rows:  # the patient's own limits come last and win
        out[(pid, kind)] = Limits(*values)
    return out


def evaluate(conn: psycopg.Connection, patient_ids: Sequence[str],
             *, now: datetime | None = None) -> Evaluation:  # fmt: skip
    now = now or datetime.now(UTC)
    opened = updated = 0
    with conn.transaction():
        # Readings arrived: a missed-measurement alert is over.
        conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = 'engine'"
            " WHERE rule = 'missed' AND state <> 'resolved' AND patient_id = ANY(%s)"
            " AND EXISTS (SELECT 1 FROM observations o WHERE o.patient_id = alerts.patient_id"
            " AND o.measured_at > coalesce(alerts.measured_at, '-infinity'))",
            (list(patient_ids),),
        )
        limits = _limits(conn, patient_ids)
        latest = conn.execute(
            "SELECT DISTINCT ON (o.patient_id, o.kind) o.patient_id, p.team_id, o.kind, o.value,"
            " o.id, o.measured_at, o.flags FROM observations o JOIN patients p"
            " ON p.id = o.patient_id WHERE o.patient_id = ANY(%s) AND p.active"
            " AND o.measured_at > %s ORDER BY o.patient_id, o.kind, o.measured_at DESC",
            (list(patient_ids), now - LOOKBACK),
        ).fetchall()
        for pid, team, kind, value, obs_id, measured_at, flags in latest:
            lim = limits.get((pid, kind))
            finding = lim and evaluate_reading(Kind(kind), value, flags, lim)
            if not finding:
                continue
            message = limit_message(Kind(kind), value, finding, measured_at)
            row = conn.execute(
                "INSERT INTO alerts (patient_id, team_id, rule, severity, kind, value,"
                " observation_id, measured_at, message) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (patient_id, rule) WHERE state <> 'resolved' DO UPDATE SET"
                " severity = CASE WHEN EXCLUDED.severity = 'red' THEN 'red'"
                "   ELSE alerts.severity END,"
                " trigger_count = alerts.trigger_count"
                "   + (alerts.observation_id IS DISTINCT FROM EXCLUDED.observation_id)::int,"
                " last_triggered_at = now(), value = EXCLUDED.value,"
                " observation_id = EXCLUDED.observation_id, measured_at = EXCLUDED.measured_at,"
                " message = EXCLUDED.message"
                " RETURNING id, (xmax = 0) AS inserted",
                (pid, team, f"limit:{kind}", finding.severity.value, kind, value, obs_id,
                 measured_at, message),
            ).fetchone()  # fmt: skip
            if row[1]:
                opened += 1
                log.warning(
                    "patient %s: alert %d opened (%s %s)", pid, row[0], finding.severity, kind
                )
            else:
                updated += 1
    return Evaluation(opened, updated)


def check_missed(conn: psycopg.Connection, *, hours: float, now: datetime | None = None) -> int:
    """Open a blue alert for active patients with a gateway but no reading for ``hours``."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(hours=hours)
    opened = 0
    with conn.transaction():
        rows = conn.execute(
            "SELECT p.id, p.team_id, (SELECT max(measured_at) FROM observations o"
            "  WHERE o.patient_id = p.id AND o.measured_at > %s - interval '90 days') AS last"
            " FROM patients p JOIN gateways g ON g.patient_id = p.id AND g.active"
            " WHERE p.active AND g.created_at < %s",
            (now, cutoff),
        ).fetchall()
        for pid, team, last in rows:
            if last is not None and last >= cutoff:
                continue
            silent = (now - last).total_seconds() / 3600 if last else hours
            cur = conn.execute(
                "INSERT INTO alerts (patient_id, team_id, rule, severity, measured_at, message)"
                " VALUES (%s, %s, 'missed', %s, %s, %s)"
                " ON CONFLICT (patient_id, rule) WHERE state <> 'resolved' DO NOTHING",
                (pid, team, Severity.BLUE.value, last, missed_message(silent, last)),
            )
            opened += cur.rowcount
    return opened


def acknowledge(conn: psycopg.Connection, alert_id: int, *, by: str, note: str | None) -> bool:
    cur = conn.execute(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_by = %s, acknowledged_at = now(),"
        " note = %s WHERE id = %s AND state = 'open'",
        (by, note, alert_id),
    )
    return cur.rowcount == 1


def resolve(conn: psycopg.Connection, alert_id: int, *, by: str, note: str | None) -> bool:
    cur = conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_by = %s, resolved_at = now(),"
        " note = coalesce(%s, note) WHERE id = %s AND state <> 'resolved'",
        (by, note, alert_id),
    )
    return cur.rowcount == 1
