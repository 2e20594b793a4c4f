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
from alerts.rules import Limits, Severity, missed_message, scheduled_missed_message
from alerts.ruleset import FULL, RuleSet
from alerts.series import PatientContext
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.kinds import Kind
from vitalvagt.quality import UNRELIABLE
from vitalvagt.schedule import KindSchedule, overdue

log = logging.getLogger(__name__)

WORK_ROWS = 200  # units of work taken per transaction (so at most this many patients)
# Behind (a full take), the take also gets the other waiting units of its patients, up to this
# many units in all: each patient is evaluated once for all of them, so a backlog shrinks
# in fewer, larger evaluations (the rules cost about the same for one reading or fifty).
TAKE_MAX_ROWS = 5000
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
    ``units == 0`` means there was no work (or all of it is being done by another engine).

    What the rules need is read once per take, for all its patients together (their
    advisory locks, the patients, their limits, their histories, their active alerts): a
    few round trips and one hypertable query per take instead of about seven per patient.
    Only a patient whose readings yield findings or clear an alert goes back to the
    database on their own."""
    result = WorkResult()
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, patient_id, observation_ids, measured_from, measured_to FROM alert_work"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        if not rows:
            return result
        if len(rows) == limit:
            rows += conn.execute(
                "SELECT id, patient_id, observation_ids, measured_from, measured_to"
                " FROM alert_work WHERE patient_id = ANY(%s) AND id > %s"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (sorted({r[1] for r in rows}), rows[-1][0], max(0, TAKE_MAX_ROWS - limit)),
            ).fetchall()
        work: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            work.setdefault(row[1], []).append(row)
        patients = sorted(work)  # one order for every engine: no deadlock
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(u.p))"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, n) ORDER BY u.n",
            (LOCK_SPACE, patients),
        )
        take = _Take.load(conn, work, ruleset)
        for patient_id in patients:
            _evaluate_patient(conn, patient_id, work[patient_id], ruleset, result, take)
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


@dataclass
class _Take:
    """What one take's patients need, read under their advisory locks in a few queries."""

    patients: dict[str, tuple[Any, ...]]  # id -> (team, group, active, scale2, oxygen)
    limits: dict[str, dict[Kind, Limits]]
    history: dict[str, list[tuple[Any, ...]]]
    clearable: dict[str, list[tuple[Any, ...]]]  # _clear_gone's rows, as the take began
    missed: dict[str, int]  # the active blue alert

    @classmethod
    def load(
        cls, conn: psycopg.Connection, work: dict[str, list[tuple[Any, ...]]], ruleset: RuleSet
    ) -> _Take:
        ids = sorted(work)
        patients = {r[0]: r[1:] for r in conn.execute(
            "SELECT id, team_id, patient_group::text, active, spo2_scale2, on_oxygen"
            " FROM patients WHERE id = ANY(%s)", (ids,)).fetchall()}  # fmt: skip
        live = [p for p in ids if p in patients and patients[p][2]]
        history: dict[str, list[tuple[Any, ...]]] = {p: [] for p in live}
        if not live:
            return cls(patients, {}, history, {}, {})
        back = timedelta(days=ruleset.history_days + 1)
        lo = [min(u[3] for u in work[p]) - back for p in live]
        hi = [max(u[4] for u in work[p]) for p in live]
        # Each patient's own window (as a query per patient would read it); the overall
        # bounds as constants let TimescaleDB leave out the chunks outside all of them. Never
        # prepared: a generic plan cannot leave chunks out and costs ten times as much.
        sql = (
            "SELECT o.patient_id, o.id, o.measured_at, o.ingested_at, o.kind, o.value, o.flags"
            " FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS w(pid, lo, hi)"
            " JOIN observations o ON o.patient_id = w.pid AND o.measured_at >= w.lo"
            "  AND o.measured_at <= w.hi"
            " WHERE o.measured_at >= %s AND o.measured_at <= %s"
        )
        with conn.cursor(binary=True) as cur:  # binary: no text to parse for times, uuids
            args = (live, lo, hi, min(lo), max(hi))
            rows = cur.execute(sql, args, prepare=False).fetchall()
        for r in rows:
            history[r[0]].append(r[1:])
        clearable: dict[str, list[tuple[Any, ...]]] = {}
        missed: dict[str, int] = {}
        for alert_id, pid, rule, measured_at, state, category in conn.execute(
            "SELECT id, patient_id, rule, measured_at, state::text, category FROM alerts"
            " WHERE patient_id = ANY(%s) AND state <> 'resolved' ORDER BY id",
            (live,),
        ).fetchall():
            if rule == "missed":
                missed[pid] = alert_id
            if (state in ("open", "acknowledged") and category != "missed"
                    and measured_at is not None):  # fmt: skip
                clearable.setdefault(pid, []).append((alert_id, rule, measured_at))
        limits: dict[str, dict[Kind, Limits]] = {}
        for (pid, kind), value in limits_of(conn, live).items():
            limits.setdefault(pid, {})[Kind(kind)] = value
        return cls(patients, limits, history, clearable, missed)


def _evaluate_patient(
    conn: psycopg.Connection,
    patient_id: str,
    units: list[tuple[Any, ...]],
    ruleset: RuleSet,
    result: WorkResult,
    take: _Take,
) -> None:
    patient = take.patients.get(patient_id)
    if patient is None or not patient[2]:
        return  # deactivated meanwhile: its readings are stored, nobody is to be alerted
    team_id, group, _, scale2, oxygen = patient
    ids = [i for u in units for i in u[2]]
    readings = PatientReadings.from_rows(take.history[patient_id], new_ids=set(ids))
    result.readings += int(readings.new.sum())
    own = take.limits.get(patient_id, {})
    ctx = PatientContext(group=group, spo2_scale2=scale2, on_oxygen=oxygen, limits=own)
    found = candidates(readings, ctx, ruleset)
    for candidate in found:
        # In reading order, as offline: an alert whose condition was seen gone before this
        # finding clears first, and the finding opens a new one.
        _clear_gone(conn, patient_id, readings, ruleset, result,
                    rule=candidate.rule, before=candidate.measured_at)  # fmt: skip
        _apply(conn, patient_id, team_id, candidate, result)
    # Without findings nothing of this patient's changed since the take began (their
    # advisory lock is held): the alerts read then are the ones to look at.
    _clear_gone(conn, patient_id, readings, ruleset, result, rule=None, before=None,
                rows=None if found else take.clearable.get(patient_id, []))  # fmt: skip
    missed = take.missed.get(patient_id)
    if missed and readings.new.any():
        lifecycle.resolve(conn, missed, by=lifecycle.ENGINE, note="readings arrived again")
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
    rows: list[tuple[Any, ...]] | None = None,
) -> None:
    """Auto-clear, the model ``vitalvagt evaluate`` counts with (alerts/replay.py,
    docs/clinical-rules.md): an open or acknowledged alert clears itself when its rule has not
    fired for ``RuleSet.clear_hours`` and a reliable reading arrived after that time (before
    ``before``, when given) without it firing. Silence alone clears nothing; a snoozed alert
    waits for its snooze; ``rule``: only that rule's alert."""
    read_before = rows is not None  # as the take began: checked again before it clears
    if rows is None:
        rows = _clearable(conn, patient_id, rule)
    for alert_id, alert_rule, last_fired in rows:
        hours = ruleset.clear_hours(alert_rule)
        if readings.reliable_between(last_fired + timedelta(hours=hours), before) and (
            not read_before or _still_clearable(conn, alert_id)
        ):
            note = f"cleared: the rule has not fired for {hours:g} hours"
            lifecycle.resolve(conn, alert_id, by=lifecycle.ENGINE, note=note)
            result.cleared += 1


def _clearable(
    conn: psycopg.Connection, patient_id: str, rule: str | None
) -> list[tuple[Any, ...]]:
    return conn.execute(
        # Not one opened in this transaction (now() is its start): an alert stays open at
        # least until readings arrive after it, so a bad reading in a backlog is seen.
        "SELECT id, rule, measured_at FROM alerts WHERE patient_id = %s"
        " AND state IN ('open', 'acknowledged') AND category <> 'missed'"
        " AND measured_at IS NOT NULL AND opened_at < now()"
        " AND (%s::text IS NULL OR rule = %s)",
        (patient_id, rule, rule),
    ).fetchall()


def _still_clearable(conn: psycopg.Connection, alert_id: int) -> bool:
    """Open or acknowledged still (a nurse may have snoozed it since it was read), and
    locked so until the take commits."""
    sql = "SELECT 1 FROM alerts WHERE id = %s AND state IN ('open', 'acknowledged') FOR UPDATE"
    return conn.execute(sql, (alert_id,)).fetchone() is not None


def check_missed(conn: psycopg.Connection, *, hours: float, now: datetime | None = None) -> int:
    """Open a blue alert for active patients with a gateway but no reading for ``hours``,
    unless their monitoring is paused (an admission, a holiday).

    Reads each patient's ``last_measured_at``, which ingest keeps in the transaction that
    stores the readings (vitalvagt/db/migrations/0010_sweep.sql): the index hands over only
    the silent patients, and those with an active blue alert already are skipped, so a
    sweep over 100,000 patients costs milliseconds, not an index probe per patient and
    chunk of the hypertable. A reading more than 90 days old counts as none, as before."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(hours=hours)
    horizon = now - timedelta(days=90)
    opened = 0
    with conn.transaction():
        rows = conn.execute(
            "SELECT DISTINCT p.id, p.team_id, p.last_measured_at FROM patients p"
            " JOIN gateways g ON g.patient_id = p.id AND g.active"
            " WHERE p.active AND g.created_at < %s"
            " AND (p.last_measured_at IS NULL OR p.last_measured_at < %s)"
            " AND (p.paused_until IS NULL OR p.paused_until <= %s)"
            " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.patient_id = p.id"
            "  AND a.rule = 'missed' AND a.state <> 'resolved')"
            # A patient with a measurement schedule follows it instead (below).
            " AND NOT EXISTS (SELECT 1 FROM measurement_schedules ms WHERE ms.patient_id = p.id)"
            " ORDER BY p.id",
            (cutoff, cutoff, now),
        ).fetchall()
        new: list[tuple[str, str, datetime | None, str]] = []
        for pid, team, last in rows:
            if last is not None and last <= horizon:
                last = None
            silent = (now - last).total_seconds() / 3600 if last else hours
            new.append((pid, team, last, missed_message(silent, last)))
        new += _missed_by_schedule(conn, now=now, horizon=horizon)
        if not new:
            return 0
        ids = conn.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, category, severity, measured_at,"
            " message) SELECT s.pid, s.team, 'missed', 'missed', %s, s.last, s.message"
            " FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[])"
            "  AS s(pid, team, last, message)"
            " ON CONFLICT (patient_id, rule) WHERE state <> 'resolved' DO NOTHING"
            " RETURNING id",
            (Severity.BLUE.value, *map(list, zip(*new, strict=True))),
        ).fetchall()
        with conn.pipeline():  # one round trip for all the transitions
            for (alert_id,) in ids:
                lifecycle.record(conn, alert_id, None, "open", by=lifecycle.ENGINE, reason="opened")
        opened = len(ids)
    return opened


def _missed_by_schedule(
    conn: psycopg.Connection, *, now: datetime, horizon: datetime
) -> list[tuple[str, str, datetime | None, str]]:
    """Patients with a measurement schedule (vitalvagt/schedule.py): a blue alert when a
    scheduled kind is missed, i.e. not measured by its due time plus the grace. Paused
    patients and those with an active blue alert are skipped, as in the silence rule."""
    rows = conn.execute(
        "SELECT p.id, p.team_id, ms.kind, ms.set_at, ms.local_times, ms.times_per_day,"
        " ms.grace FROM measurement_schedules ms JOIN patients p ON p.id = ms.patient_id"
        " WHERE p.active AND (p.paused_until IS NULL OR p.paused_until <= %s)"
        " AND EXISTS (SELECT 1 FROM gateways g WHERE g.patient_id = p.id AND g.active)"
        " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.patient_id = p.id"
        "  AND a.rule = 'missed' AND a.state <> 'resolved') ORDER BY p.id, ms.kind",
        (now,),
    ).fetchall()
    if not rows:
        return []
    schedules: dict[str, tuple[str, list[KindSchedule]]] = {}
    for pid, team, kind, set_at, times, per_day, grace in rows:
        entry = schedules.setdefault(pid, (team, []))
        entry[1].append(KindSchedule(kind, set_at, tuple(times), per_day, grace))
    last = {
        (pid, kind): at
        for pid, kind, at in conn.execute(
            "SELECT patient_id, kind, max(measured_at) FROM observations"
            " WHERE patient_id = ANY(%s) AND measured_at > %s GROUP BY 1, 2",
            (list(schedules), horizon),
        )
    }
    out = []
    for pid, (team, kinds) in schedules.items():
        missed = overdue(kinds, {k.kind: last.get((pid, k.kind)) for k in kinds}, now)
        if missed:
            first = min(missed, key=lambda m: m.due_at)
            out.append((pid, team, first.last_measured_at, scheduled_missed_message(missed)))
    return out


def clear_gone_sweep(
    conn: psycopg.Connection, *, ruleset: RuleSet = FULL, now: datetime | None = None
) -> int:
    """Auto-clear as a sweep over every patient: the model of ``_clear_gone`` (an open or
    acknowledged alert clears itself when its rule has not fired for
    ``RuleSet.clear_hours`` and a reliable reading arrived after that time), asked of all
    active alerts at once. The engine applies it to a patient whenever their readings are
    evaluated; the sweep is the same question for all patients (a backstop, and what
    ``bench/alert_bench.py`` times). Returns the alerts cleared."""
    now = now or datetime.now(UTC)
    cleared = 0
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, patient_id, rule, measured_at FROM alerts"
            " WHERE state IN ('open', 'acknowledged') AND category <> 'missed'"
            " AND measured_at IS NOT NULL AND opened_at < now()"
        ).fetchall()
        if not rows:
            return 0
        after = [r[3] + timedelta(hours=ruleset.clear_hours(r[2])) for r in rows]
        # Locked as seen (the engine's _apply takes the same row lock): an alert that fired
        # again meanwhile has a newer measured_at and is left alone.
        gone = conn.execute(
            "SELECT a.id, a.rule FROM alerts a"
            " JOIN unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[])"
            "  AS s(id, fired, after) ON s.id = a.id AND a.measured_at = s.fired"
            " WHERE a.state IN ('open', 'acknowledged') AND s.after < %s"
            " AND EXISTS (SELECT 1 FROM observations o WHERE o.patient_id = a.patient_id"
            "  AND o.measured_at > s.after AND o.measured_at <= %s"
            "  AND NOT (o.flags && %s::text[]))"
            " ORDER BY a.id FOR UPDATE OF a",
            ([r[0] for r in rows], [r[3] for r in rows], after, now, now,
             sorted(UNRELIABLE)),
        ).fetchall()  # fmt: skip
        for alert_id, rule in gone:
            note = f"cleared: the rule has not fired for {ruleset.clear_hours(rule):g} hours"
            if lifecycle.resolve(conn, alert_id, by=lifecycle.ENGINE, note=note):
                cleared += 1
    return cleared
