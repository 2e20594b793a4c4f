"""The missed-measurement sweep reads each patient's ``last_measured_at``, which ingest keeps
in the transaction that stores the readings (vitalvagt/db/migrations/0010_sweep.sql)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts.engine import check_missed, drain
from alerts.ruleset import GUIDELINE
from tests.ingest.conftest import add_home, add_homes, ingest, publish_as, wait_for  # noqa: F401 - fixture
from vitalvagt.kinds import Kind
from vitalvagt.observation import DeviceRef, Observation
from vitalvagt.stack import Stack
from vitalvagt.wire import encode, make_batch

pytestmark = [pytest.mark.stack]

DEVICE = DeviceRef(address="00:11:22:33:44:77", model="PO-60", serial="9")


def _spo2(gw: str, at: datetime) -> Observation:
    return Observation.create(gateway_id=gw, kind=Kind.SPO2, value=95, unit="%", measured_at=at,
                              received_at=at, device=DEVICE)  # fmt: skip


def _last(conn: psycopg.Connection, patient: str) -> datetime | None:
    sql = "SELECT last_measured_at FROM patients WHERE id = %s"
    return conn.execute(sql, (patient,)).fetchone()[0]


def _missed(conn: psycopg.Connection, patient: str) -> list[tuple]:
    return conn.execute(
        "SELECT state::text, measured_at FROM alerts WHERE patient_id = %s AND rule = 'missed'"
        " ORDER BY id", (patient,)).fetchall()  # fmt: skip


@pytest.mark.usefixtures("ingest")
def test_ingest_keeps_last_measured_at_and_a_late_reading_never_moves_it_back(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gw, pw, p = add_home(registry, stack, "sweep-last")
    assert _last(registry, p) is None
    now = datetime.now(UTC).replace(microsecond=0)
    newest = now - timedelta(hours=2)
    publish_as(stack, gw, pw, [encode(make_batch(gw, [_spo2(gw, now - timedelta(hours=5)),
                                                       _spo2(gw, newest)]))])  # fmt: skip
    wait_for(lambda: _last(registry, p) == newest, 20, "last_measured_at after the batch")
    late = now - timedelta(days=3)  # a backlog delivered late: older than the newest
    publish_as(stack, gw, pw, [encode(make_batch(gw, [_spo2(gw, late)]))])
    wait_for(lambda: registry.execute("SELECT count(*) FROM observations WHERE patient_id = %s",
                                      (p,)).fetchone()[0] == 3, 20, "the late reading")  # fmt: skip
    assert _last(registry, p) == newest


def test_check_missed_uses_last_measured_at(stack: Stack, registry: psycopg.Connection) -> None:
    """Silent by last_measured_at: blue, once, naming the last reading; recent: nothing;
    paused: nothing; a new reading resolves the blue alert (the engine, as before)."""
    drain(registry, ruleset=GUIDELINE)  # work left by earlier tests is not this test's
    now = datetime.now(UTC).replace(microsecond=0)
    names = ("silent", "recent", "paused")
    homes = dict(zip(names, add_homes(registry, stack, [f"sweep-{n}" for n in names]), strict=True))
    for name, (gw, _, p) in homes.items():
        registry.execute("UPDATE gateways SET created_at = %s WHERE id = %s",
                         (now - timedelta(days=5), gw))  # fmt: skip
        ago = timedelta(hours=1) if name == "recent" else timedelta(hours=50)
        registry.execute("UPDATE patients SET last_measured_at = %s WHERE id = %s", (now - ago, p))
    registry.execute("UPDATE patients SET paused_until = %s WHERE id = %s",
                     (now + timedelta(days=1), homes["paused"][2]))  # fmt: skip
    assert check_missed(registry, hours=36, now=now) >= 1
    assert check_missed(registry, hours=36, now=now) == 0  # one active blue alert, not two
    silent = homes["silent"][2]
    assert _missed(registry, silent) == [("open", now - timedelta(hours=50))]
    message = registry.execute("SELECT message FROM alerts WHERE patient_id = %s AND"
                               " rule = 'missed'", (silent,)).fetchone()[0]  # fmt: skip
    assert "50" in message
    assert _missed(registry, homes["recent"][2]) == []
    assert _missed(registry, homes["paused"][2]) == []
    transitions = registry.execute(
        "SELECT t.from_state, t.to_state, t.reason FROM alert_transitions t JOIN alerts a"
        " ON a.id = t.alert_id WHERE a.patient_id = %s", (silent,)).fetchall()  # fmt: skip
    assert transitions == [(None, "open", "opened")]
