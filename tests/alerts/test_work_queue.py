"""Every reading is evaluated exactly once (issue 11): ingest's units of work, the engine's
catch-up after a restart or a SIGKILL, two engines sharing the work, late readings,
snoozes. Against the real broker, ingest and database. The mechanics are tested with the
guideline rules (one reading against fixed limits), whose findings are easy to foresee;
tests/alerts/test_live_rules.py runs the full set through the same engine."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts.engine import drain, process_work
from alerts.ruleset import GUIDELINE
from tests.conftest import stack_env
from tests.ingest.conftest import (
    add_home,
    add_homes,
    ingest,  # noqa: F401 - the fixture
    payloads,
    publish_as,
    readings,
    wait_for,
)
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.kinds import Kind
from vitalvagt.observation import DeviceRef, Observation
from vitalvagt.stack import Stack
from vitalvagt.wire import encode, make_batch

pytestmark = [pytest.mark.stack, pytest.mark.usefixtures("ingest")]

DEVICE = DeviceRef(address="00:11:22:33:44:66", model="PO-60", serial="7")


def _spo2(gw: str, value: float, at: datetime) -> Observation:
    return Observation.create(
        gateway_id=gw, kind=Kind.SPO2, value=value, unit="%", measured_at=at,
        received_at=at + timedelta(seconds=1), device=DEVICE,
    )  # fmt: skip


def _pulse(gw: str, value: float, at: datetime) -> Observation:
    return Observation.create(
        gateway_id=gw, kind=Kind.PULSE, value=value, unit="/min", measured_at=at,
        received_at=at + timedelta(seconds=1), device=DEVICE,
    )  # fmt: skip


def _alerts(conn: psycopg.Connection, patient: str) -> list[tuple]:
    return conn.execute(
        "SELECT rule, severity, state::text, trigger_count FROM alerts WHERE patient_id = %s"
        " ORDER BY id",
        (patient,),
    ).fetchall()


def _stored(conn: psycopg.Connection, patient: str, n: int) -> None:
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM observations WHERE patient_id = %s", (patient,)
            ).fetchone()[0]
            >= n
        ),
        20,
        f"{n} readings of {patient}",
    )


def _send(stack: Stack, gw: str, pw: str, obs: list[Observation]) -> None:
    publish_as(stack, gw, pw, [encode(make_batch(gw, obs))])


def test_a_bad_reading_early_in_a_backlog_opens_its_alert(
    stack: Stack, registry: psycopg.Connection
) -> None:
    """Defect: only the latest reading per kind was evaluated, so SpO2 80 followed ten
    minutes later by 95 in one batch opened nothing."""
    gw, pw, p = add_home(registry, stack, "wq-backlog")
    drain(registry, ruleset=GUIDELINE)
    now = datetime.now(UTC).replace(microsecond=0)
    _send(stack, gw, pw, [_spo2(gw, 80, now - timedelta(minutes=20)),
                          _spo2(gw, 95, now - timedelta(minutes=10))])  # fmt: skip
    _stored(registry, p, 2)
    drain(registry, ruleset=GUIDELINE)
    assert _alerts(registry, p) == [("limit:spo2", "red", "open", 1)]


def test_a_red_reading_three_days_late_opens_and_says_how_late(
    stack: Stack, registry: psycopg.Connection
) -> None:
    """Defect: readings older than two days were ignored, so a tablet offline for three
    days that then delivered a red reading raised nothing. A 3-day backlog with the red
    reading in its middle."""
    gw, pw, p = add_home(registry, stack, "wq-late")
    drain(registry, ruleset=GUIDELINE)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    backlog = [_spo2(gw, 95 if i != 36 else 82, start + timedelta(hours=i)) for i in range(72)]
    _send(stack, gw, pw, backlog)
    _stored(registry, p, 72)
    drain(registry, ruleset=GUIDELINE)
    assert _alerts(registry, p) == [("limit:spo2", "red", "open", 1)]
    late_s, message, measured = registry.execute(
        "SELECT late_s, message, measured_at FROM alerts WHERE patient_id = %s", (p,)
    ).fetchone()
    assert measured == backlog[36].measured_at
    assert late_s > 35 * 3600
    assert "Arrived 36 hours after it was measured." in message


def test_a_resolved_alert_does_not_reopen_on_the_reading_already_handled(
    stack: Stack, registry: psycopg.Connection
) -> None:
    """Defect: after `resolve`, any later evaluation (a reading of another kind, an engine
    restart) opened the alert again on the same old reading."""
    gw, pw, p = add_home(registry, stack, "wq-resolved")
    drain(registry, ruleset=GUIDELINE)
    now = datetime.now(UTC).replace(microsecond=0)
    _send(stack, gw, pw, [_spo2(gw, 83, now - timedelta(minutes=30))])
    _stored(registry, p, 1)
    drain(registry, ruleset=GUIDELINE)
    (alert_id, *_), = registry.execute(
        "SELECT id FROM alerts WHERE patient_id = %s", (p,)
    ).fetchall()  # fmt: skip
    assert lifecycle.resolve(registry, alert_id, by="nurse-ida", note="called; sensor on wrong")
    _send(stack, gw, pw, [_pulse(gw, 72, now - timedelta(minutes=5))])  # another kind
    _stored(registry, p, 2)
    drain(registry, ruleset=GUIDELINE)
    drain(registry, ruleset=GUIDELINE)  # as after a restart
    assert _alerts(registry, p) == [("limit:spo2", "red", "resolved", 1)]
    _send(stack, gw, pw, [_spo2(gw, 84, now - timedelta(minutes=1))])  # a NEW bad reading
    _stored(registry, p, 3)
    drain(registry, ruleset=GUIDELINE)
    assert _alerts(registry, p)[-1] == ("limit:spo2", "red", "open", 1)
    steps = [(t.from_state, t.to_state, t.reason) for t in lifecycle.history(registry, alert_id)]
    assert steps == [(None, "open", "opened"), ("open", "resolved", "resolved")]


def test_two_near_simultaneous_readings_give_one_alert_with_two_engines(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gw, pw, p = add_home(registry, stack, "wq-twin")
    drain(registry, ruleset=GUIDELINE)
    now = datetime.now(UTC).replace(microsecond=0)
    urls = [stack.database_url()] * 2
    stop = threading.Event()

    def engine(url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                if process_work(conn, ruleset=GUIDELINE).units == 0:
                    time.sleep(0.005)

    engines = [threading.Thread(target=engine, args=(u,)) for u in urls]
    for t in engines:
        t.start()
    try:
        # Two messages 1 ms apart, each with a red reading: two units of work.
        _send(stack, gw, pw, [_spo2(gw, 81, now - timedelta(seconds=2))])
        _send(stack, gw, pw, [_spo2(gw, 82, now - timedelta(seconds=1))])
        _stored(registry, p, 2)
        wait_for(lambda: registry.execute("SELECT count(*) FROM alert_work").fetchone()[0] == 0,
                 10, "the engines to finish")  # fmt: skip
    finally:
        stop.set()
        for t in engines:
            t.join(10)
    assert _alerts(registry, p) == [("limit:spo2", "red", "open", 2)]


def test_a_snooze_is_respected_then_the_alert_is_back(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gw, pw, p = add_home(registry, stack, "wq-snooze")
    drain(registry, ruleset=GUIDELINE)
    now = datetime.now(UTC).replace(microsecond=0)
    _send(stack, gw, pw, [_spo2(gw, 87, now - timedelta(minutes=20))])
    _stored(registry, p, 1)
    drain(registry, ruleset=GUIDELINE)
    (alert_id,) = registry.execute("SELECT id FROM alerts WHERE patient_id = %s", (p,)).fetchone()
    until = datetime.now(UTC) + timedelta(hours=1)
    assert lifecycle.snooze(registry, alert_id, by="nurse-ida", until=until, note="calls back")
    # A worse reading while snoozed: the alert records it and rises, but stays snoozed.
    _send(stack, gw, pw, [_spo2(gw, 83, now - timedelta(minutes=5))])
    _stored(registry, p, 2)
    drain(registry, ruleset=GUIDELINE)
    assert _alerts(registry, p) == [("limit:spo2", "red", "snoozed", 2)]
    # Not in the triage list while snoozed.
    assert all(a["id"] != alert_id for a in lifecycle.triage(registry, team_ids=["team-test"]))
    assert lifecycle.end_snoozes(registry, now=until - timedelta(minutes=1)) == 0
    assert _alerts(registry, p)[0][2] == "snoozed"
    assert lifecycle.end_snoozes(registry, now=until + timedelta(seconds=1)) == 1
    assert _alerts(registry, p) == [("limit:spo2", "red", "open", 2)]
    steps = [t.reason for t in lifecycle.history(registry, alert_id)]
    assert steps == ["opened", "snoozed", "severity_raised", "snooze_ended"]


@pytest.mark.slow
def test_engine_killed_mid_stream_misses_and_doubles_nothing(
    stack: Stack, registry: psycopg.Connection
) -> None:
    """20,000 red readings for 20 patients; the engine process is SIGKILLed while it works
    and started again. Each reading is evaluated exactly once: every patient ends with one
    alert whose trigger count is exactly their number of readings."""
    homes = add_homes(registry, stack, [f"wq-kill{i}" for i in range(20)])
    drain(registry, ruleset=GUIDELINE)
    per_home = 1_000
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    env = stack_env(stack)
    argv = [
        sys.executable,
        "-m",
        "vitalvagt.cli",
        "alerts",
        "run",
        "--missed-every-s",
        "3600",
        "--rules",
        "guideline",
    ]

    def publish_all() -> None:
        for gw, pw, _ in homes:
            obs = readings(gw, per_home, kind=Kind.SPO2, t0=t0)
            obs = [o.model_copy(update={"value": 80.0}) for o in obs]  # every one red
            publish_as(stack, gw, pw, payloads(gw, obs, 50))

    engine = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    publisher = threading.Thread(target=publish_all)
    publisher.start()
    try:
        wait_for(
            lambda: (
                registry.execute(
                    "SELECT coalesce(sum(trigger_count), 0) FROM alerts WHERE patient_id LIKE"
                    " 'p-wq-kill%%'"
                ).fetchone()[0]
                > 3_000
            ),
            120,
            "the engine to be under way",
        )
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        at_kill = registry.execute(
            "SELECT coalesce(sum(trigger_count), 0) FROM alerts WHERE patient_id LIKE 'p-wq-kill%%'"
        ).fetchone()[0]
        assert at_kill < 20 * per_home, "the kill came too late to test anything"
        publisher.join(180)
        engine = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        for _, _, p in homes:
            _stored(registry, p, per_home)
        wait_for(lambda: registry.execute("SELECT count(*) FROM alert_work").fetchone()[0] == 0,
                 120, "the restarted engine to catch up")  # fmt: skip
    finally:
        if engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
            engine.wait(20)
        publisher.join(5)
    for _, _, p in homes:
        assert _alerts(registry, p) == [("limit:spo2", "red", "open", per_home)], p
