"""The embedded stack against the real PostgreSQL + TimescaleDB and mosquitto."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from tests.conftest import kill_broker, temporary_stack
from tests.mqtt import connect, connect_gateway
from vitalvagt.broker import AUTOSAVE_INTERVAL_S
from vitalvagt.broker_process import BROKER_OPEN_FILES_LOW
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


def test_the_broker_accepts_clients_beyond_a_thousand_open_connections(stack: Stack) -> None:
    """A gateway holds one of the broker's files. Started through runuser, mosquitto had a soft
    limit of 1,024, and with a thousand homes connected it accepted nobody more, not even the
    hub's own services ("denied access by tcpd" in its log, no CONNACK)."""
    limit = stack.broker_open_files()
    assert limit is not None and (limit == -1 or limit >= BROKER_OPEN_FILES_LOW), limit
    assert stack.status()["mosquitto"]["open_files"] == limit
    held = 1500
    # Another process holds them: paho's select() loop cannot use a file number above 1,024.
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_CONNECTIONS, str(stack.settings.mqtt_port), str(held)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == f"holding {held}"
            c = connect(stack.settings.mqtt_port, "vv-sim", stack.secrets()["vv-sim"], timeout_s=10)
            assert not c.reason.is_failure
            c.close()
        finally:
            holder.kill()


_HOLD_CONNECTIONS = """
import resource, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("holding", len(held), flush=True)
sys.stdin.read()
"""


def test_status_cli_reports_how_to_connect(stack: Stack) -> None:
    env = {
        "VV_STATE_DIR": str(stack.paths.root),
        "VV_PG_PORT": str(stack.settings.pg_port),
        "VV_MQTT_PORT": str(stack.settings.mqtt_port),
        "VV_MQTT_TLS_PORT": str(stack.settings.mqtt_tls_port),
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
    assert f"127.0.0.1:{stack.settings.mqtt_tls_port} (TLS)" in res.stdout
    assert f"TLS CA file (give it to gateways): {stack.paths.ca_cert}" in res.stdout
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
    gw = connect_gateway(stack, "gw-acl-a", two_gateways["gw-acl-a"])
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
    for anon in (
        connect(stack.settings.mqtt_port, None, None),
        connect(stack.settings.mqtt_tls_port, None, None, ca=stack.paths.ca_cert),
    ):
        anon.close()
        assert anon.reason.is_failure and anon.reason.getName() == "Not authorized", anon.reason
    wrong = connect_gateway(stack, "gw-acl-a", two_gateways["gw-acl-b"])
    wrong.close()
    assert wrong.reason.is_failure


def test_gateway_reads_only_its_own_command_topic(
    stack: Stack, two_gateways: dict[str, str]
) -> None:
    port = stack.settings.mqtt_port
    gw_b = connect_gateway(stack, "gw-acl-b", two_gateways["gw-acl-b"], subscribe="vv/v1/gw/+/cmd")
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


# --- a stack of its own, for tests that kill and restart the broker ---------------------


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    with temporary_stack("vv-test-own-stack-") as st:
        yield st


def test_up_right_after_the_broker_was_killed_works_every_time(own_stack: Stack) -> None:
    """Issue 9 (15): `stack up` right after a SIGKILL of mosquitto failed ("did not load its
    new password file"): the killed broker, not yet reaped, still looked alive, so `up`
    signalled a zombie instead of starting one."""
    for attempt in range(6):
        old = kill_broker(own_stack)
        own_stack.up()  # at once: the killed process may not be reaped yet
        pid = own_stack.mq_pid()
        assert pid is not None and pid != old, f"attempt {attempt}: no new broker"
        probe = connect(own_stack.settings.mqtt_port, "vv-api", own_stack.secrets()["vv-api"])
        probe.close()
        assert not probe.reason.is_failure, f"attempt {attempt}: {probe.reason}"


def test_a_fresh_broker_gets_no_sighup_and_a_running_one_reloads(own_stack: Stack) -> None:
    """Issue 9 (15): a SIGHUP before mosquitto installed its handlers kills it. A broker the
    stack just started has loaded its files, so it is not reloaded at all (a reload is now a
    clean restart, and only when a gateway changed)."""
    reloads: list[int | None] = []
    real_reload = own_stack.reload_broker

    def reload_broker() -> bool:
        reloads.append(own_stack.mq_pid())
        return real_reload()

    own_stack.reload_broker = reload_broker  # type: ignore[method-assign]
    try:
        kill_broker(own_stack)
        own_stack.up()
        assert reloads == [], "a freshly started broker was sent SIGHUP"
        with psycopg.connect(own_stack.database_url(), autocommit=True) as conn:
            password = provision_gateway(conn, "gw-own-reload")
        before = own_stack.mq_pid()
        own_stack.sync_broker_users()  # running: reloaded, and the new gateway is let in
        assert reloads == [before] and own_stack.mq_pid() is not None
        own_stack.sync_broker_users()  # no gateway changed: nothing to reload
        assert reloads == [before]
    finally:
        del own_stack.reload_broker
    gw = connect_gateway(own_stack, "gw-own-reload", password)
    gw.close()
    assert not gw.reason.is_failure, gw.reason


def test_up_restarts_a_broker_whose_config_changed(own_stack: Stack) -> None:
    """A broker still running an old configuration (e.g. the single plaintext listener before
    issue 9) is restarted by `up`: listeners are not reloaded by SIGHUP."""
    conf = own_stack.paths.mq_conf
    conf.write_text(conf.read_text().replace("use_username_as_clientid true\n", ""))
    pid = own_stack.mq_pid()
    own_stack.up()
    assert own_stack.mq_pid() not in (None, pid)
    assert "use_username_as_clientid true" in conf.read_text()


@pytest.mark.slow
def test_queued_messages_saved_by_autosave_survive_a_broker_kill(own_stack: Stack) -> None:
    """Issue 9 (3): the docs claimed queued messages survive a restart; with autosave every
    30 s a kill lost them. Now what waited longer than the autosave interval survives; the
    rest is the receipts' job (docs/operations.md)."""
    with psycopg.connect(own_stack.database_url(), autocommit=True) as conn:
        password = provision_gateway(conn, "gw-own-persist")
    own_stack.sync_broker_users()
    port, secret = own_stack.settings.mqtt_port, own_stack.secrets()["vv-ingest"]
    topic = "vv/v1/gw/gw-own-persist/obs"
    ingest = connect(port, "vv-ingest", secret, client_id="vv-ingest-persist", clean_start=False,
                     session_expiry_s=3600, subscribe=topic)  # fmt: skip
    ingest.close()
    gw = connect_gateway(own_stack, "gw-own-persist", password)
    for i in range(20):
        assert not gw.publish(topic, f"queued-{i}".encode()).is_failure
    gw.close()
    time.sleep(AUTOSAVE_INTERVAL_S + 1.5)
    kill_broker(own_stack)
    own_stack.up()
    back = connect(port, "vv-ingest", secret, client_id="vv-ingest-persist", clean_start=False,
                   session_expiry_s=3600)  # fmt: skip
    try:
        assert back.session_present
        got = []
        with contextlib.suppress(queue.Empty):
            while len(got) < 20:
                got.append(back.messages.get(timeout=5)[1])
        assert got == [f"queued-{i}".encode() for i in range(20)]
    finally:
        back.close()


def test_reloads_after_a_restart_do_not_crash_the_broker(own_stack: Stack) -> None:
    """mosquitto segfaulted (the flake of the full suite): after a restart, a SIGHUP filed
    every offline session restored from persistence for expiry a second time, and once such
    a client came back and its session ended, the expiry sweep touched freed memory. The
    stack's reload is a clean restart now; this is the crash's recipe."""
    port, password = own_stack.settings.mqtt_port, own_stack.secrets()["vv-ingest"]
    ids = [f"vv-ingest-expiry-{i}" for i in range(20)]
    parked = time.monotonic()
    for cid in ids:  # offline sessions that outlive the restart below, then expire
        connect(port, "vv-ingest", password, client_id=cid, clean_start=False,
                session_expiry_s=EXPIRY_S).close()  # fmt: skip
    own_stack.down()
    own_stack.up()  # the sessions come back from the persistence file
    for i in range(3):  # a tablet provisioned each time, as in the fleet test
        with psycopg.connect(own_stack.database_url(), autocommit=True) as conn:
            provision_gateway(conn, f"gw-own-expiry-{i}")
        own_stack.sync_broker_users()
    reloaded = time.monotonic()
    assert reloaded - parked < EXPIRY_S - 2, "too slow to test the expiry"
    pid = own_stack.mq_pid()
    for cid in ids:  # the clients come back with a clean start, and leave
        connect(port, "vv-ingest", password, client_id=cid, clean_start=True).close()
    # past the expiry the last reload would have filed them for: the sweep walks the list
    time.sleep(max(0.0, EXPIRY_S + 3 - (time.monotonic() - reloaded)))
    assert own_stack.mq_pid() == pid, "mosquitto died"
    probe = connect(port, "vv-ingest", password)
    assert not probe.reason.is_failure
    probe.close()
    # On its way out it frees every session filed for expiry: where that crashed, the pid
    # file it removes last stays behind.
    own_stack.down()
    assert not own_stack.paths.mq_pid.exists(), "mosquitto crashed while stopping"
    own_stack.up()  # for the module's next test


EXPIRY_S = 10


def test_offline_sessions_survive_a_reload_and_a_clean_restart(own_stack: Stack) -> None:
    """With per_listener_settings, mosquitto re-checks every session's login on SIGHUP:
    ingest's and a gateway's offline sessions (and what is queued for them) must survive
    `sync_broker_users` (each `admin add-gateway`) and `down`/`up`."""
    with psycopg.connect(own_stack.database_url(), autocommit=True) as conn:
        password = provision_gateway(conn, "gw-own-offline")
    own_stack.sync_broker_users()
    port, sec = own_stack.settings.mqtt_port, own_stack.secrets()
    obs, cmd = "vv/v1/gw/gw-own-offline/obs", "vv/v1/gw/gw-own-offline/cmd"

    def park() -> None:
        ingest = connect(port, "vv-ingest", sec["vv-ingest"], client_id="vv-ingest-offline",
                         clean_start=False, session_expiry_s=3600, subscribe=obs)  # fmt: skip
        ingest.close()
        gw = connect_gateway(own_stack, "gw-own-offline", password, clean_start=False,
                             session_expiry_s=3600, subscribe=cmd)  # fmt: skip
        assert not gw.publish(obs, b"reading").is_failure
        gw.close()
        api = connect(port, "vv-api", sec["vv-api"])
        assert not api.publish(cmd, b"command").is_failure
        api.close()

    def resume(what: str) -> None:
        ingest = connect(port, "vv-ingest", sec["vv-ingest"], client_id="vv-ingest-offline",
                         clean_start=False, session_expiry_s=3600)  # fmt: skip
        gw = connect_gateway(own_stack, "gw-own-offline", password, clean_start=False,
                             session_expiry_s=3600)  # fmt: skip
        try:
            assert ingest.session_present and gw.session_present, what
            assert ingest.messages.get(timeout=5) == (obs, b"reading"), what
            assert gw.messages.get(timeout=5) == (cmd, b"command"), what
        finally:
            ingest.close()
            gw.close()

    park()
    own_stack.sync_broker_users()
    resume("after a reload")
    park()
    own_stack.down()
    own_stack.up()
    own_stack.sync_broker_users()
    resume("after a clean restart and a reload")
