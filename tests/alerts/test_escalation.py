"""Escalation (issue 12, point 2) against the real database, with the clock passed in: at the
deadline and not before, stopped by an acknowledgement, paused by a snooze, exact after a
restart in the middle of a deadline (the deadline is read from the database)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from alerts.delivery_jobs import register_jobs
from alerts.escalation import sweep
from alerts.routing import route_pending
from tests.alerts.delivery_helpers import add_alert, add_patient, add_teams, reasons
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack
CPH = ZoneInfo("Europe/Copenhagen")
T0 = datetime(2026, 1, 14, 10, 0, tzinfo=CPH)  # a Wednesday: the day team covers
LEAD = "level 1: team lead of Akutteam Dag (Teamleder Dag, tel. +45 7000 0009)"
TOP = "level 2: escalation team Weekendteam (tel. +45 7000 0003)"


@pytest.fixture
def home(registry: psycopg.Connection) -> tuple[str, str]:
    day, _, _ = add_teams(registry, "9102")
    return add_patient(registry, "p-escalation", "9102", day), day


def _new(conn: psycopg.Connection, home: tuple[str, str], **kw: object) -> int:
    """A fresh alert (the patient has one active alert per rule: resolve the last one)."""
    pid, team = home
    for (old,) in conn.execute("SELECT id FROM alerts WHERE patient_id = %s AND state <> "
                               "'resolved'", (pid,)).fetchall():  # fmt: skip
        lifecycle.resolve(conn, old, by="nurse-test", note="next test")
    alert_id = add_alert(conn, pid, team, **kw)  # type: ignore[arg-type]
    route_pending(conn)
    return alert_id


def _steps(conn: psycopg.Connection, alert_id: int, now: datetime) -> list[int]:
    return [level for a, level in sweep(conn, now=now) if a == alert_id]


def _escalations(conn: psycopg.Connection, alert_id: int) -> list[str | None]:
    return [note for reason, note in reasons(conn, alert_id) if reason == "escalated"]


def test_red_escalates_at_its_deadline_and_not_before(
    stack: Stack, registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    a = _new(registry, home, opened_at=T0)
    m = timedelta(minutes=1)
    assert _steps(registry, a, T0 + 15 * m - timedelta(seconds=1)) == []
    assert _steps(registry, a, T0 + 15 * m) == [1]
    assert _steps(registry, a, T0 + 15 * m) == []  # one step once
    assert _steps(registry, a, T0 + 30 * m - timedelta(seconds=1)) == []
    assert _steps(registry, a, T0 + 30 * m) == [2]
    assert _steps(registry, a, T0 + 600 * m) == []  # the chain ends at the escalation team
    assert _escalations(registry, a) == [LEAD, TOP]
    state, level, at = registry.execute(
        "SELECT state::text, escalation_level, escalated_at FROM alerts WHERE id = %s",
        (a,)).fetchone()  # fmt: skip
    assert (state, level, at) == ("open", 2, T0 + 30 * m)  # the state stays as it is
    history = lifecycle.history(registry, a)
    assert [(t.from_state, t.to_state, t.by) for t in history if t.reason == "escalated"] == [
        ("open", "open", "engine")] * 2  # fmt: skip


def test_yellow_waits_two_hours_and_blue_never_escalates(
    stack: Stack, registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    a = _new(registry, home, opened_at=T0, severity="yellow")
    assert _steps(registry, a, T0 + timedelta(hours=2) - timedelta(seconds=1)) == []
    assert _steps(registry, a, T0 + timedelta(hours=2)) == [1]
    b = _new(registry, home, opened_at=T0, severity="blue", rule="missed", kind=None,
             value=None, category="missed")  # fmt: skip
    assert _steps(registry, b, T0 + timedelta(days=3)) == []


def test_acknowledging_stops_the_chain(
    stack: Stack, registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    a = _new(registry, home, opened_at=T0)
    assert _steps(registry, a, T0 + timedelta(minutes=15)) == [1]
    assert lifecycle.acknowledge(registry, a, by="nurse-anne", note="I have called")
    assert _steps(registry, a, T0 + timedelta(hours=5)) == []
    assert _escalations(registry, a) == [LEAD]
    b = _new(registry, home, opened_at=T0)
    assert lifecycle.acknowledge(registry, b, by="nurse-anne", note=None)
    assert _steps(registry, b, T0 + timedelta(hours=5)) == []  # acknowledged before any step


def test_a_snooze_pauses_the_chain_which_counts_from_its_end(
    stack: Stack, registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    a = _new(registry, home, opened_at=T0)
    m = timedelta(minutes=1)
    assert lifecycle.snooze(registry, a, by="nurse-anne", until=T0 + 40 * m, note="calls back")
    assert _steps(registry, a, T0 + 20 * m) == []  # snoozed: paused
    # The snooze sweep runs a little late: the clock counts from the snooze's end regardless
    assert lifecycle.end_snoozes(registry, now=T0 + 40 * m + timedelta(seconds=12)) >= 1
    assert _steps(registry, a, T0 + 55 * m - timedelta(seconds=1)) == []
    assert _steps(registry, a, T0 + 55 * m) == [1]
    # A snooze after the first step: the second step counts from that snooze's end
    assert lifecycle.snooze(registry, a, by="nurse-anne", until=T0 + 80 * m, note=None)
    lifecycle.end_snoozes(registry, now=T0 + 80 * m)
    assert _steps(registry, a, T0 + 95 * m - timedelta(seconds=1)) == []
    assert _steps(registry, a, T0 + 95 * m) == [2]


def test_exact_after_a_restart_and_a_late_sweep_takes_every_step(
    stack: Stack, registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    a = _new(registry, home, opened_at=T0)
    assert _steps(registry, a, T0 + timedelta(minutes=7)) == []  # mid-deadline, then "restart"
    with psycopg.connect(stack.database_url(), autocommit=True) as fresh:
        assert _steps(fresh, a, T0 + timedelta(minutes=15) - timedelta(microseconds=1)) == []
        assert _steps(fresh, a, T0 + timedelta(minutes=15)) == [1]
    b = _new(registry, home, opened_at=T0)
    # Down for 45 minutes: both steps at once, each recorded with its own due time
    assert _steps(registry, b, T0 + timedelta(minutes=45)) == [1, 2]
    assert registry.execute("SELECT escalated_at FROM alerts WHERE id = %s",
                            (b,)).fetchone()[0] == T0 + timedelta(minutes=30)  # fmt: skip
    assert _escalations(registry, b) == [LEAD, TOP]


def test_the_scheduled_job_routes_and_escalates_across_a_restart(
    stack: Stack, registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    """The apscheduler jobs as the alert service registers them, stopped and started again
    in the middle of a deadline (a real clock: the deadline falls 3 s after the restart)."""
    first = BackgroundScheduler(timezone="UTC")
    undo = register_jobs(first, stack.database_url(), webhooks_every_s=3600)
    first.start()
    opened = datetime.now(UTC) - timedelta(minutes=15) + timedelta(seconds=4)
    a = _new(registry, home, opened_at=opened)
    registry.execute("UPDATE alerts SET routing = NULL WHERE id = %s", (a,))  # for the job
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if registry.execute("SELECT routing IS NOT NULL FROM alerts WHERE id = %s",
                            (a,)).fetchone()[0]:  # fmt: skip
            break
        time.sleep(0.1)
    else:
        pytest.fail("not routed within 3 s")
    assert _escalations(registry, a) == []
    undo()
    first.shutdown(wait=True)  # the "restart", mid-deadline
    second = BackgroundScheduler(timezone="UTC")
    undo = register_jobs(second, stack.database_url(), webhooks_every_s=3600)
    second.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _escalations(registry, a):
            time.sleep(0.2)
        team = registry.execute("SELECT routing->'team'->>'name' FROM alerts WHERE id = %s",
                                (a,)).fetchone()[0]  # fmt: skip
        notes = _escalations(registry, a)
        assert len(notes) == 1 and notes[0].startswith(f"level 1: team lead of {team}")  # type: ignore[union-attr]
        at = registry.execute("SELECT escalated_at FROM alerts WHERE id = %s", (a,)).fetchone()[0]
        assert at == opened + timedelta(minutes=15)  # exact: from the database, not a timer
    finally:
        undo()
        second.shutdown(wait=True)
    lifecycle.resolve(registry, a, by="nurse-test", note="done")
