"""The alert engine's database work: take ingest's units of work, evaluate each new reading
once, keep one active alert per (patient, rule) with its history.

Ingest writes a row of ``alert_work`` per patient and batch, naming the readings it inserted,
in the transaction that stores them (vitalvagt/db/migrations/0007_alert_work.sql). The
engine takes rows in order with ``FOR UPDATE SKIP LOCKED`` (two engines share the work),
serialises each patient with an advisory lock, evaluates exactly those readings against the
patient's history (``alerts.live``: the rule set's ``evaluate_new``, the same code as
``vitalvagt evaluate``), writes the alerts and their
transitions, and deletes the rows, all in one transaction: after a crash nothing is missed
and nothing doubled. A reading that arrived late is evaluated like any other; its alert says
how late it was.

Missed measurements (blue) are a scheduled sweep (``check_missed``), paused while a patient's
monitoring is paused, and resolve themselves when readings arrive again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from alerts.live import Candidate, PatientReadings, candidates
from alerts.rules import Limits, Severity, missed_message
from alerts.ruleset import FULL, RuleSet
from alerts.series import PatientContext
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.kinds import Kind

log = logging.getLogger(__name__)

WORK_ROWS = 200  # units of work taken per transaction
LOCK_SPACE = 0x5641  # advisory-lock name space of the engine ("VA"), with hashtext(patient)
SEVERITY_RANK = {Severity.RED.value: 0, Severity.YELLOW.value: 1, Severity.BLUE.value: 2}


@dataclass
class WorkResult:
    units: int = 0
    readings: int = 0
    opened: int = 0  # clinical alerts opened
    updated: int = 0
    notices: int = 0  # quality notices opened
    cleared: int = 0


def limits_of(
    conn: psycopg.Connection, patient_ids: Sequence[str]
) -> dict[tuple[str, str], Limits]:
    """Each patient's four limits per kind: their own where a physician set them, else the
    standard set of their group."""
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


def process_work(
    conn: psycopg.Connection,
    *,
    limit: int = WORK_ROWS,
    ruleset: RuleSet = FULL,
) -> WorkResult:
    """Take up to ``limit`` units of work, evaluate them and commit. Returns what it did;
    ``units == 0`` means there was no work (or all of it is being done by another engine)."""
    result = WorkResult()
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, patient_id, observation_ids, measured_from, measured_to FROM alert_work"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        if not rows:
            return result
        work: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            work.setdefault(row[1], []).append(row)
        for patient_id in sorted(work):  # one order for every engine: no deadlock
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_SPACE, patient_id))
            _evaluate_patient(conn, patient_id, work[patient_id], ruleset, result)
        conn.execute("DELETE FROM alert_work WHERE id = ANY(%s)", ([r[0] for r in rows],))
        result.units = len(rows)
    return result


def drain(conn: psycopg.Connection, *, ruleset: RuleSet = FULL) -> WorkResult:
    """Process work until none is left (catching up after a restart)."""
    total = WorkResult()
    while True:
        r = process_work(conn, ruleset=ruleset)
        if r.units == 0:
            return total
        for name in ("units", "readings", "opened", "updated", "notices", "cleared"):
            setattr(total, name, getattr(total, name) + getattr(r, name))


def _evaluate_patient(
    conn: psycopg.Connection,
    patient_id: str,
    units: list[tuple[Any, ...]],
    ruleset: RuleSet,
    result: WorkResult,
) -> None:
    patient = conn.execute(
        "SELECT team_id, patient_group::text, active, spo2_scale2, on_oxygen FROM patients"
        " WHERE id = %s",
        (patient_id,),
    ).fetchone()
    if patient is None or not patient[2]:
        return  # deactivated meanwhile: its readings are stored, nobody is to be alerted
    team_id, group, _, scale2, oxygen = patient
    ids = [i for u in units for i in u[2]]
    frm, to = min(u[3] for u in units), max(u[4] for u in units)
    history = conn.execute(
        "SELECT id, measured_at, ingested_at, kind, value, flags FROM observations"
        " WHERE patient_id = %s AND measured_at >= %s AND measured_at <= %s",
        (patient_id, frm - timedelta(days=ruleset.history_days + 1), to),
    ).fetchall()
    readings = PatientReadings.from_rows(history, new_ids=set(ids))
    result.readings += int(readings.new.sum())
    own = {Kind(k): v for (_, k), v in limits_of(conn, [patient_id]).items()}
    ctx = PatientContext(group=group, spo2_scale2=scale2, on_oxygen=oxygen, limits=own)
    for candidate in candidates(readings, ctx, ruleset):
        # In reading order, as offline: an alert whose condition was seen gone before this
        # finding clears first, and the finding opens a new one.
        _clear_gone(conn, patient_id, readings, ruleset, result,
                    rule=candidate.rule, before=candidate.measured_at)  # fmt: skip
        _apply(conn, patient_id, team_id, candidate, result)
    _clear_gone(conn, patient_id, readings, ruleset, result, rule=None, before=None)
    missed = conn.execute(
        "SELECT id FROM alerts WHERE patient_id = %s AND rule = 'missed' AND state <> 'resolved'",
        (patient_id,),
    ).fetchone()
    if missed and readings.new.any():
        lifecycle.resolve(conn, missed[0], by=lifecycle.ENGINE, note="readings arrived again")
        result.cleared += 1


def _late_note(late_s: float) -> str:
    hours = late_s / 3600
    if hours < 1:
        return ""
    span = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} hours"
    return f" Arrived {span} after it was measured."


def _apply(
    conn: psycopg.Connection,
    patient_id: str,
    team_id: str,
    c: Candidate,
    result: WorkResult,
) -> None:
    message = c.message + _late_note(c.late_s)
    active = conn.execute(
        "SELECT id, severity, state::text, measured_at FROM alerts WHERE patient_id = %s"
        " AND rule = %s AND state <> 'resolved' FOR UPDATE",
        (patient_id, c.rule),
    ).fetchone()
    if active is None:
        alert_id = conn.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, rule_version, category, severity,"
            " kind, value, observation_id, measured_at, message, late_s, details)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (patient_id, team_id, c.rule, c.version, c.category, c.severity.value,
             c.kind.value if c.kind else None, c.value, c.observation_id, c.measured_at,
             message, c.late_s, json.dumps(c.details)),
        ).fetchone()[0]  # fmt: skip
        lifecycle.record(conn, alert_id, None, "open", by=lifecycle.ENGINE, reason="opened")
        if c.category == "quality":
            result.notices += 1
        else:
            result.opened += 1
        log.warning("patient %s: alert %d opened (%s %s)", patient_id, alert_id, c.severity,
                    c.rule)  # fmt: skip
        return
    alert_id, severity, state, measured_at = active
    raised = SEVERITY_RANK[c.severity.value] < SEVERITY_RANK[severity]
    newer = measured_at is None or c.measured_at >= measured_at
    conn.execute(
        "UPDATE alerts SET trigger_count = trigger_count + 1, last_triggered_at = now(),"
        " severity = %s, value = CASE WHEN %s THEN %s ELSE value END,"
        " observation_id = CASE WHEN %s THEN %s ELSE observation_id END,"
        " measured_at = CASE WHEN %s THEN %s ELSE measured_at END,"
        " message = CASE WHEN %s THEN %s ELSE message END,"
        " late_s = CASE WHEN %s THEN %s ELSE late_s END WHERE id = %s",
        (c.severity.value if raised else severity, newer, c.value,
         newer, c.observation_id, newer, c.measured_at,
         newer, message, newer, c.late_s, alert_id),
    )  # fmt: skip
    if raised:
        # Severity rises while open; a snoozed alert stays snoozed (its time is respected).
        note = f"{severity} -> {c.severity.value}"
        lifecycle.record(
            conn, alert_id, state, state, by=lifecycle.ENGINE, reason="severity_raised", note=note
        )
    result.updated += 1


def _clear_gone(
    conn: psycopg.Connection,
    patient_id: str,
    readings: PatientReadings,
    ruleset: RuleSet,
    result: WorkResult,
    *,
    rule: str | None,
    before: datetime | None,
) -> None:
    """Auto-clear, the model ``vitalvagt evaluate`` counts with (alerts/replay.py,
    docs/clinical-rules.md): an open or acknowledged alert clears itself when its rule has not
    fired for ``RuleSet.clear_hours`` and a reliable reading arrived after that time (before
    ``before``, when given) without it firing. Silence alone clears nothing; a snoozed alert
    waits for its snooze; ``rule``: only that rule's alert."""
    rows = conn.execute(
        # Not one opened in this transaction (now() is its start): an alert stays open at
        # least until readings arrive after it, so a bad reading in a backlog is seen.
        "SELECT id, rule, measured_at FROM alerts WHERE patient_id = %s"
        " AND state IN ('open', 'acknowledged') AND category <> 'missed'"
        " AND measured_at IS NOT NULL AND opened_at < now()"
        " AND (%s::text IS NULL OR rule = %s)",
        (patient_id, rule, rule),
    ).fetchall()
    for alert_id, alert_rule, last_fired in rows:
        hours = ruleset.clear_hours(alert_rule)
        if readings.reliable_between(last_fired + timedelta(hours=hours), before):
            note = f"cleared: the rule has not fired for {hours:g} hours"
            lifecycle.resolve(conn, alert_id, by=lifecycle.ENGINE, note=note)
            result.cleared += 1


def check_missed(conn: psycopg.Connection, *, hours: float, now: datetime | None = None) -> int:
    """Open a blue alert for active patients with a gateway but no reading for ``hours``,
    unless their monitoring is paused (an admission, a holiday)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(hours=hours)
    opened = 0
    with conn.transaction():
        rows = conn.execute(
            "SELECT p.id, p.team_id, (SELECT max(measured_at) FROM observations o"
            "  WHERE o.patient_id = p.id AND o.measured_at > %s - interval '90 days') AS last"
            " FROM patients p JOIN gateways g ON g.patient_id = p.id AND g.active"
            " WHERE p.active AND g.created_at < %s"
            " AND (p.paused_until IS NULL OR p.paused_until <= %s)",
            (now, cutoff, now),
        ).fetchall()
        for pid, team, last in rows:
            if last is not None and last >= cutoff:
                continue
            silent = (now - last).total_seconds() / 3600 if last else hours
            row = conn.execute(
                "INSERT INTO alerts (patient_id, team_id, rule, category, severity, measured_at,"
                " message) VALUES (%s, %s, 'missed', 'missed', %s, %s, %s)"
                " ON CONFLICT (patient_id, rule) WHERE state <> 'resolved' DO NOTHING"
                " RETURNING id",
                (pid, team, Severity.BLUE.value, last, missed_message(silent, last)),
            ).fetchone()
            if row:
                lifecycle.record(conn, row[0], None, "open", by=lifecycle.ENGINE, reason="opened")
                opened += 1
    return opened
