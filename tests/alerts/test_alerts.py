"""Alert rules (pure) and the engine against the real database."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts.engine import check_missed, drain
from alerts.rules import Limits, Severity, classify, evaluate_reading, limit_message
from alerts.ruleset import GUIDELINE
from alerts.service import AlertService
from tests.ingest.conftest import add_home
from vitalvagt.db.alert_lifecycle import acknowledge, resolve
from vitalvagt.kinds import Kind
from vitalvagt.stack import Stack

SPO2 = Limits(alert_low=85, warn_low=88)
NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("value", "severity"),
    [(95, None), (88, None), (87.9, Severity.YELLOW), (85, Severity.YELLOW), (84, Severity.RED)],
)
def test_four_limits_edges(value: float, severity: Severity | None) -> None:
    finding = classify(value, SPO2)
    assert (finding.severity if finding else None) == severity


def test_high_limits_and_unreliable_readings() -> None:
    pulse = Limits(40, 50, 110, 130)
    assert classify(131, pulse).severity is Severity.RED  # type: ignore[union-attr]
    assert classify(111, pulse).severity is Severity.YELLOW  # type: ignore[union-attr]
    assert evaluate_reading(Kind.SPO2, 80, ["low_perfusion"], SPO2) is None
    assert evaluate_reading(Kind.SPO2, 80, ["validated"], SPO2) is not None


def test_message_says_what_happened_and_what_to_do() -> None:
    msg = limit_message(Kind.SPO2, 84, classify(84, SPO2), datetime(2026, 1, 5, 2, 12, tzinfo=UTC))  # type: ignore[arg-type]
    assert msg.startswith("Oxygen saturation 84 % at 05-01 03:12 is below the alert limit 85 %.")
    assert "Call the patient now" in msg


def _reading(conn: psycopg.Connection, patient: str, gw: str, kind: str, value: float,
             at: datetime, flags: list[str] | None = None) -> None:  # fmt: skip
    """A reading stored as ingest stores it: the row and the engine's unit of work."""
    obs_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
        " device_address, kind, value, unit, flags) VALUES (%s, %s, %s, %s, %s, 'AA', %s, %s,"
        " 'x', %s)",
        (obs_id, at, at, patient, gw, kind, value, flags or []),
    )
    conn.execute(
        "INSERT INTO alert_work (patient_id, observation_ids, measured_from, measured_to)"
        " VALUES (%s, %s, %s, %s)",
        (patient, [obs_id], at, at),
    )


def evaluate(conn: psycopg.Connection, _patients: list[str]):  # type: ignore[no-untyped-def]
    """The engine's catch-up: every unit of work waiting (the tests' patients' and any left
    by earlier tests), with the guideline rules: these tests are about the mechanics, one
    reading against fixed limits."""
    return drain(conn, ruleset=GUIDELINE)


def _alerts(conn: psycopg.Connection, patient: str) -> list[tuple]:
    return conn.execute(
        "SELECT rule, severity, state::text, trigger_count FROM alerts WHERE patient_id = %s"
        " ORDER BY id", (patient,)).fetchall()  # fmt: skip


@pytest.mark.stack
def test_one_active_alert_per_patient_and_rule(stack: Stack, registry: psycopg.Connection) -> None:
    gw, _, p = add_home(registry, stack, "alert-limit")
    drain(registry, ruleset=GUIDELINE)  # work left by earlier tests is not this test's
    _reading(registry, p, gw, "spo2", 87, NOW - timedelta(minutes=30))
    assert evaluate(registry, [p]).opened == 1
    assert _alerts(registry, p) == [("limit:spo2", "yellow", "open", 1)]
    evaluate(registry, [p])  # the same reading again (a second NOTIFY): nothing new
    _reading(registry, p, gw, "spo2", 83, NOW - timedelta(minutes=10))
    result = evaluate(registry, [p])
    assert (result.opened, result.updated) == (0, 1)
    assert _alerts(registry, p) == [("limit:spo2", "red", "open", 2)]
    with pytest.raises(psycopg.errors.UniqueViolation):  # the database enforces it
        registry.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, severity, message)"
            " VALUES (%s, 'team-test', 'limit:spo2', 'red', 'dup')",
            (p,),
        )
    alert_id = registry.execute("SELECT id FROM alerts WHERE patient_id = %s", (p,)).fetchone()[0]
    assert acknowledge(registry, alert_id, by="nurse-anne", note="called, fine")
    assert not acknowledge(registry, alert_id, by="nurse-anne", note=None)
    assert resolve(registry, alert_id, by="nurse-anne", note=None)
    _reading(registry, p, gw, "spo2", 82, NOW - timedelta(minutes=1))
    assert evaluate(registry, [p]).opened == 1  # after resolution a new finding opens anew


@pytest.mark.stack
def test_unreliable_reading_and_patient_limits(stack: Stack, registry: psycopg.Connection) -> None:
    gw, _, p = add_home(registry, stack, "alert-own")
    drain(registry, ruleset=GUIDELINE)  # work left by earlier tests is not this test's
    _reading(registry, p, gw, "spo2", 80, NOW - timedelta(minutes=5), ["sensor_displaced"])
    assert evaluate(registry, [p]).opened == 0
    _reading(registry, p, gw, "spo2", 86, NOW - timedelta(minutes=1))
    # The physician set this patient's own limits: 86 % is their normal.
    registry.execute(
        "INSERT INTO alert_limits (patient_id, kind, alert_low, warn_low, set_by)"
        " VALUES (%s, 'spo2', 82, 84, 'dr-hansen')",
        (p,),
    )
    assert evaluate(registry, [p]).opened == 0
    # No clinical alert; the unreliable 80 % is a quality notice asking for a new measurement
    # (issue 11: device quality).
    assert _alerts(registry, p) == [("quality:spo2", "yellow", "open", 1)]


@pytest.mark.stack
def test_missed_measurements_open_blue_and_resolve_on_reading(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gw, _, p = add_home(registry, stack, "alert-missed")
    drain(registry, ruleset=GUIDELINE)  # work left by earlier tests is not this test's
    registry.execute(
        "UPDATE gateways SET created_at = now() - interval '5 days' WHERE id = %s", (gw,)
    )
    _reading(registry, p, gw, "weight", 80, NOW - timedelta(hours=50))
    assert check_missed(registry, hours=36) >= 1
    check_missed(registry, hours=36)
    assert _alerts(registry, p) == [("missed", "blue", "open", 1)]
    _reading(registry, p, gw, "weight", 80.2, NOW - timedelta(minutes=2))
    evaluate(registry, [p])
    assert _alerts(registry, p) == [("missed", "blue", "resolved", 1)]


@pytest.mark.stack
def test_service_reacts_to_ingest_notify(stack: Stack, registry: psycopg.Connection) -> None:
    gw, _, p = add_home(registry, stack, "alert-notify")
    drain(registry, ruleset=GUIDELINE)  # work left by earlier tests is not this test's
    service = AlertService(stack.database_url(), missed_hours=36, missed_every_s=3600,
                           ruleset=GUIDELINE)  # fmt: skip
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        time.sleep(1.0)
        with registry.transaction():
            _reading(registry, p, gw, "pulse", 140, NOW - timedelta(minutes=1))
            registry.execute(
                "SELECT pg_notify('vv_observations', %s)", (f'{{"patients": ["{p}"]}}',)
            )
        deadline = time.monotonic() + 10
        while not _alerts(registry, p) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alerts(registry, p) == [("limit:pulse", "red", "open", 1)]
    finally:
        service.stop()
        thread.join(10)


@pytest.mark.stack
def test_a_patient_with_a_schedule_is_missed_by_it_not_by_silence(
    stack: Stack, registry: psycopg.Connection
) -> None:
    """Issue 11: missed measurements against each patient's schedule, with its grace."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Copenhagen")
    gw, _, p = add_home(registry, stack, "alert-sched")
    registry.execute(
        "UPDATE gateways SET created_at = now() - interval '5 days' WHERE id = %s", (gw,)
    )
    today = datetime.now(UTC).astimezone(zone).date() - timedelta(days=1)
    at = lambda h, m: datetime(today.year, today.month, today.day, h, m, tzinfo=zone)  # noqa: E731
    registry.execute(
        "INSERT INTO measurement_schedules (patient_id, kind, local_times, grace, set_by,"
        " set_at, reason) VALUES (%s, 'weight', '{08:00}', '2 hours', 'nurse-ida', %s,"
        " 'daily weight')",
        (p, at(6, 0) - timedelta(days=3)),
    )
    _reading(registry, p, gw, "weight", 80, at(8, 5) - timedelta(days=1))
    # 09:59: yesterday's weight, today's not yet due past its grace: nothing (the silence
    # rule alone, 20 hours, would have opened a blue alert).
    check_missed(registry, hours=20, now=at(9, 59))  # (other tests' patients may open some)
    assert _alerts(registry, p) == []
    check_missed(registry, hours=20, now=at(10, 1))
    (rule, severity, state, _), = _alerts(registry, p)
    assert (rule, severity, state) == ("missed", "blue", "open")
    message = registry.execute(
        "SELECT message FROM alerts WHERE patient_id = %s", (p,)
    ).fetchone()[0]
    assert message.startswith("Scheduled measurement missed: body weight (due")
