"""The embedded stack against the real PostgreSQL + TimescaleDB and mosquitto."""

from __future__ import annotations

import queue
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from tests.mqtt import connect
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.db.migrate import available, migrate
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack


def test_migrations_apply_once_and_again_change_nothing(
    database_url: str, db: psycopg.Connection
) -> None:
    # The session's `stack up` applied them; a second run applies none and changes no table.
    before = db.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
    ).fetchone()
    assert migrate(database_url) == []
    assert migrate(database_url) == []
    after = db.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
    ).fetchone()
    assert before == after
    versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in available()]


def test_observations_is_a_hypertable_with_one_day_chunks(db: psycopg.Connection) -> None:
    row = db.execute(
        "SELECT d.column_name, d.time_interval FROM timescaledb_information.dimensions d"
        " WHERE d.hypertable_name = 'observations'"
    ).fetchone()
    assert row is not None, "observations is not a hypertable"
    assert row[0] == "measured_at"
    assert row[1].total_seconds() == 86400


def _insert(db: psycopg.Connection, obs_id: uuid.UUID, at: datetime, value: float) -> int:
    cur = db.execute(
        "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
        " device_address, kind, value, unit)"
        " VALUES (%s, %s, %s, 'p-core-dup', 'gw-core-dup', 'AA', 'spo2', %s, '%%')"
        " ON CONFLICT DO NOTHING",
        (obs_id, at, at, value),
    )
    return cur.rowcount


def test_same_observation_twice_is_stored_once(db: psycopg.Connection) -> None:
    obs_id = uuid.uuid4()
    at = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    assert _insert(db, obs_id, at, 95) == 1
    assert _insert(db, obs_id, at, 95) == 0
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
            " device_address, kind, value, unit)"
            " VALUES (%s, %s, %s, 'p', 'g', 'AA', 'spo2', 95, '%%')",
            (obs_id, at, at),
        )
    n = db.execute("SELECT count(*) FROM observations WHERE id = %s", (obs_id,)).fetchone()
    assert n == (1,)


def test_up_twice_is_harmless_and_status_says_running(stack: Stack) -> None:
    pid = stack.mq_pid()
    stack.up()
    assert stack.mq_pid() == pid, "a second `up` restarted mosquitto"
    status = stack.status()
    assert status["postgresql"]["running"] and status["mosquitto"]["running"]
    assert str(stack.settings.pg_port) in status["postgresql"]["address"]


def test_status_cli_reports_how_to_connect(stack: Stack) -> None:
    env = {
        "VV_STATE_DIR": str(stack.paths.root),
        "VV_PG_PORT": str(stack.settings.pg_port),
        "VV_MQTT_PORT": str(stack.settings.mqtt_port),
        "PATH": "/usr/bin:/bin",
    }
    res = subprocess.run(
        [sys.executable, "-m", "vitalvagt.cli", "stack", "status"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "PostgreSQL 15 + TimescaleDB: running" in res.stdout
    assert f"127.0.0.1:{stack.settings.mqtt_port}" in res.stdout
    assert "psql" in res.stdout


@pytest.fixture(scope="module")
def two_gateways(stack: Stack) -> dict[str, str]:
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        creds = {gw: provision_gateway(conn, gw) for gw in ("gw-acl-a", "gw-acl-b")}
    stack.sync_broker_users()
    return creds


def test_gateway_publishes_only_under_its_own_topics(
    stack: Stack, two_gateways: dict[str, str]
) -> None:
    port = stack.settings.mqtt_port
    watcher = connect(port, "vv-ingest", stack.secrets()["vv-ingest"], subscribe="vv/v1/gw/+/obs")
    gw = connect(port, "gw-acl-a", two_gateways["gw-acl-a"])
    try:
        assert not gw.reason.is_failure, gw.reason
        own = gw.publish("vv/v1/gw/gw-acl-a/obs", b"own")
        other = gw.publish("vv/v1/gw/gw-acl-b/obs", b"forged")
        assert not own.is_failure
        assert other.is_failure and other.getName() == "Not authorized", other
        got = watcher.messages.get(timeout=5)
        assert got == ("vv/v1/gw/gw-acl-a/obs", b"own")
        with pytest.raises(queue.Empty):  # the forged one never arrives
            watcher.messages.get(timeout=1)
    finally:
        gw.close()
        watcher.close()


def test_wrong_password_and_anonymous_are_refused(
    stack: Stack, two_gateways: dict[str, str]
) -> None:
    port = stack.settings.mqtt_port
    anon = connect(port, None, None)
    anon.close()
    assert anon.reason.is_failure and anon.reason.getName() == "Not authorized", anon.reason
    wrong = connect(port, "gw-acl-a", two_gateways["gw-acl-b"])
    wrong.close()
    assert wrong.reason.is_failure


def test_gateway_reads_only_its_own_command_topic(
    stack: Stack, two_gateways: dict[str, str]
) -> None:
    port = stack.settings.mqtt_port
    gw_b = connect(port, "gw-acl-b", two_gateways["gw-acl-b"], subscribe="vv/v1/gw/+/cmd")
    api = connect(port, "vv-api", stack.secrets()["vv-api"])
    try:
        assert not api.publish("vv/v1/gw/gw-acl-a/cmd", b"for-a").is_failure
        assert not api.publish("vv/v1/gw/gw-acl-b/cmd", b"for-b").is_failure
        assert gw_b.messages.get(timeout=5) == ("vv/v1/gw/gw-acl-b/cmd", b"for-b")
        with pytest.raises(queue.Empty):  # a's command is not readable
            gw_b.messages.get(timeout=1)
    finally:
        gw_b.close()
        api.close()
