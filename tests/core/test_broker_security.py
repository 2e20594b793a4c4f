"""The broker's security boundaries (issue 9) against the real mosquitto of the session stack.

Two listeners: services (plaintext, loopback) and gateways (TLS, client id forced to the
gateway id). Each test names the defect it guards against.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from pydantic import SecretStr

from tests.conftest import free_port, stack_env
from tests.mqtt import Connected, connect, connect_gateway, end_session
from vitalvagt.broker import (
    PROBE_USER,
    SERVICE_USERS,
    BrokerConfigError,
    gateway_password_lines,
    services_password_lines,
)
from vitalvagt.db.gateways import gateway_credential_hashes, provision_gateway
from vitalvagt.endpoints import mqtt_endpoint
from vitalvagt.settings import Settings
from vitalvagt.stack import Stack
from vitalvagt.tls import ensure_certificates
from vitalvagt.tls_files import TlsFiles

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
SESSION_S = 600


@pytest.fixture(scope="module")
def gateways(stack: Stack) -> dict[str, str]:
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        creds = {gw: provision_gateway(conn, gw) for gw in ("gw-sec-a", "gw-sec-b")}
    stack.sync_broker_users()
    return creds


def _close(*conns: Connected) -> None:
    for c in conns:
        c.close()


def _drain(conn: Connected, n: int, timeout_s: float = 5) -> list[tuple[str, bytes]]:
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        try:
            got.append(conn.messages.get(timeout=0.2))
        except queue.Empty:
            continue
    return got


# --- (2) session takeover ----------------------------------------------------------------


def test_a_gateway_using_ingests_client_id_does_not_disturb_ingests_session(
    stack: Stack, gateways: dict[str, str]
) -> None:
    """Issue 9 (2): a gateway that connected with ingest's client id took ingest's persistent
    session, and the readings queued for ingest were never stored."""
    ingest_id = f"vv-ingest-sec-{uuid.uuid4().hex[:6]}"
    secret = stack.secrets()["vv-ingest"]
    topic = "vv/v1/gw/gw-sec-a/obs"
    ingest = connect(stack.settings.mqtt_port, "vv-ingest", secret, client_id=ingest_id,
                     clean_start=False, session_expiry_s=SESSION_S, subscribe=topic)  # fmt: skip
    assert not ingest.reason.is_failure, ingest.reason
    ingest.close()  # offline: the broker queues for its session
    try:
        # The attacker asks for a clean start under ingest's id: that would wipe the session.
        rogue = connect_gateway(stack, "gw-sec-a", gateways["gw-sec-a"], client_id=ingest_id,
                                clean_start=True)  # fmt: skip
        assert not rogue.reason.is_failure, rogue.reason
        try:
            for i in range(40):
                assert not rogue.publish(topic, f"reading-{i}".encode()).is_failure
        finally:
            rogue.close()
        back = connect(stack.settings.mqtt_port, "vv-ingest", secret, client_id=ingest_id,
                       clean_start=False, session_expiry_s=SESSION_S)  # fmt: skip
        try:
            assert back.session_present, "ingest's session was taken over and discarded"
            got = _drain(back, 40)
            assert [p for _, p in got] == [f"reading-{i}".encode() for i in range(40)]
        finally:
            back.close()
    finally:
        end_session(stack, "vv-ingest", ingest_id)


def test_a_gateway_using_another_gateways_client_id_neither_kicks_it_nor_drops_its_commands(
    stack: Stack, gateways: dict[str, str]
) -> None:
    """Issue 9 (2): a gateway using another's client id (``vv-gw-<id>``, as the publisher
    sends it, or the bare id) kicked it off and destroyed its queued commands."""
    a, b = "gw-sec-a", "gw-sec-b"
    cmd = f"vv/v1/gw/{a}/cmd"
    api = connect(stack.settings.mqtt_port, "vv-api", stack.secrets()["vv-api"])
    victim = connect_gateway(stack, a, gateways[a], client_id=f"vv-gw-{a}", clean_start=False,
                             session_expiry_s=SESSION_S, subscribe=cmd)  # fmt: skip
    assert not victim.reason.is_failure, victim.reason
    try:
        for stolen in (f"vv-gw-{a}", a):
            rogue = connect_gateway(stack, b, gateways[b], client_id=stolen, clean_start=True)
            assert not rogue.reason.is_failure, rogue.reason
            rogue.close()
        time.sleep(0.5)
        assert victim.disconnects.empty(), f"kicked off: {victim.disconnects.get()}"
        assert victim.client.is_connected()
        assert not api.publish(cmd, b"live").is_failure
        assert victim.messages.get(timeout=5) == (cmd, b"live")

        victim.close()  # offline: commands queue in its session
        assert not api.publish(cmd, b"queued").is_failure
        for stolen in (f"vv-gw-{a}", a):
            rogue = connect_gateway(stack, b, gateways[b], client_id=stolen, clean_start=True)
            rogue.close()
        victim = connect_gateway(stack, a, gateways[a], client_id=f"vv-gw-{a}",
                                 clean_start=False, session_expiry_s=SESSION_S)  # fmt: skip
        assert victim.session_present, "the gateway's session was discarded"
        assert _drain(victim, 1) == [(cmd, b"queued")]
    finally:
        victim.close()
        api.close()
        end = connect_gateway(stack, a, gateways[a], clean_start=True)
        end.close()


def test_the_gateways_session_is_keyed_by_its_gateway_id_whatever_client_id_it_sends(
    stack: Stack, gateways: dict[str, str]
) -> None:
    """The broker replaces the client id with the user name, so the publisher's
    ``vv-gw-<id>`` and any other id resume the same session."""
    a = "gw-sec-a"
    cmd = f"vv/v1/gw/{a}/cmd"
    api = connect(stack.settings.mqtt_port, "vv-api", stack.secrets()["vv-api"])
    first = connect_gateway(stack, a, gateways[a], client_id=f"vv-gw-{a}", clean_start=False,
                            session_expiry_s=SESSION_S, subscribe=cmd)  # fmt: skip
    first.close()
    try:
        assert not api.publish(cmd, b"for-a").is_failure
        again = connect_gateway(stack, a, gateways[a], client_id="another-id-entirely",
                                clean_start=False, session_expiry_s=SESSION_S)  # fmt: skip
        assert again.session_present
        assert _drain(again, 1) == [(cmd, b"for-a")]
        again.close()
    finally:
        api.close()
        connect_gateway(stack, a, gateways[a], clean_start=True).close()


# --- listeners: who may log in where -------------------------------------------------------


def test_gateways_cannot_log_in_on_the_services_listener_nor_services_on_the_gateways(
    stack: Stack, gateways: dict[str, str]
) -> None:
    gw_on_services = connect(stack.settings.mqtt_port, "gw-sec-a", gateways["gw-sec-a"])
    service_on_gateways = connect_gateway(stack, "vv-ingest", stack.secrets()["vv-ingest"])
    probe_on_gateways = connect_gateway(stack, PROBE_USER, "whatever")
    _close(gw_on_services, service_on_gateways, probe_on_gateways)
    for c in (gw_on_services, service_on_gateways, probe_on_gateways):
        assert c.reason.is_failure and c.reason.getName() == "Not authorized", c.reason
    ok = connect(stack.settings.mqtt_port, "vv-ingest", stack.secrets()["vv-ingest"])
    ok.close()
    assert not ok.reason.is_failure


def test_the_services_listener_is_on_loopback_only(stack: Stack) -> None:
    conf = stack.paths.mq_conf.read_text()
    assert f"listener {stack.settings.mqtt_port} 127.0.0.1\n" in conf
    assert f"listener {stack.settings.mqtt_tls_port} {stack.settings.host}\n" in conf


# --- (14) TLS ------------------------------------------------------------------------------


def test_the_gateway_listener_speaks_tls_verified_by_the_stacks_ca_and_refuses_plaintext(
    stack: Stack, gateways: dict[str, str], tmp_path: Path
) -> None:
    """Issue 9 (14): the broker offered no TLS at all."""
    gw = connect_gateway(stack, "gw-sec-a", gateways["gw-sec-a"])
    gw.close()
    assert not gw.reason.is_failure, gw.reason
    with pytest.raises(AssertionError, match="no CONNACK"):  # plaintext on the TLS port
        connect(stack.settings.mqtt_tls_port, "gw-sec-a", gateways["gw-sec-a"], timeout_s=2)
    # A client that trusts another CA refuses the broker's certificate.
    other = TlsFiles(ca_dir=tmp_path, server_dir=tmp_path)
    ensure_certificates(other, ["127.0.0.1"])
    untrusting = ssl.create_default_context(cafile=str(other.ca_cert))
    with socket.create_connection(("127.0.0.1", stack.settings.mqtt_tls_port), 5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.wrap_socket(raw, server_hostname="127.0.0.1")
    # The handshake itself: the certificate is good for 127.0.0.1 and localhost.
    ctx = ssl.create_default_context(cafile=str(stack.paths.ca_cert))
    for name in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", stack.settings.mqtt_tls_port), 5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_tls_key_files_are_private_and_the_ca_key_is_not_the_brokers(stack: Stack) -> None:
    tls = stack.paths.tls
    for key in (tls.ca_key, tls.server_key):
        assert key.stat().st_mode & 0o777 == 0o600, key
    if os.geteuid() == 0:
        import pwd

        assert tls.server_key.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid
        assert tls.ca_key.stat().st_uid == 0
        assert tls.server_key.parent != tls.ca_key.parent


def test_mqtt_endpoint_gives_gateways_the_tls_listener_and_services_the_plaintext_one(
    stack: Stack,
) -> None:
    s = stack.settings
    gw = mqtt_endpoint(s.model_copy(update={"mqtt_password": SecretStr("pw")}), "gw-sec-a")
    assert (gw.host, gw.port, gw.tls_ca) == ("127.0.0.1", s.mqtt_tls_port, str(stack.paths.ca_cert))
    for user in SERVICE_USERS:
        ep = mqtt_endpoint(s, user)
        assert (ep.host, ep.port, ep.tls_ca, ep.username) == ("127.0.0.1", s.mqtt_port, None, user)
        assert ep.password == stack.secrets()[user]
    remote = s.model_copy(update={"mqtt_host": "hub.example", "mqtt_tls_port": 8883,
                                  "mqtt_tls_ca": Path("/etc/hub-ca.crt"),
                                  "mqtt_password": SecretStr("pw")})  # fmt: skip
    ep = mqtt_endpoint(remote, "gw-sec-a")
    assert (ep.host, ep.port, ep.tls_ca) == ("hub.example", 8883, "/etc/hub-ca.crt")

    from gateway.app import broker_config

    cfg = broker_config(s.model_copy(update={"gateway_id": "gw-sec-a",
                                             "mqtt_password": SecretStr("pw")}))  # fmt: skip
    assert (cfg.port, cfg.tls_ca) == (s.mqtt_tls_port, stack.paths.ca_cert)


def test_an_mqtt_311_refusal_looks_like_success_so_gateways_must_use_mqtt_5(
    stack: Stack, gateways: dict[str, str]
) -> None:
    """Issue 9 (14): the wire format said 3.1.1 works for publishing; its PUBACK cannot carry
    a refusal, so a refused publish is acknowledged like a stored one."""
    forged = "vv/v1/gw/gw-sec-b/obs"
    v5 = connect_gateway(stack, "gw-sec-a", gateways["gw-sec-a"])
    assert v5.publish(forged, b"x").getName() == "Not authorized"
    v5.close()
    v311 = connect_gateway(stack, "gw-sec-a", gateways["gw-sec-a"], protocol=mqtt.MQTTv311)
    assert not v311.reason.is_failure
    assert not v311.publish(forged, b"x").is_failure  # refused, yet "acknowledged"
    v311.close()
    doc = (ROOT / "docs" / "wire-format.md").read_text()
    connection = doc.split("## Connection", 1)[1].split("\n## ", 1)[0]
    assert "3.1.1 works" not in connection
    assert "MQTT 5 is required" in connection


# --- (10) name spaces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "gateway_id", [*SERVICE_USERS, PROBE_USER, "vv-ingest-1", "vv-gw-home", "vv-simulator"]
)
def test_provisioning_refuses_a_gateway_id_in_the_service_name_space(
    db: psycopg.Connection, gateway_id: str
) -> None:
    """Issue 9 (10): `admin add-gateway vv-sim` wrote a second vv-sim password line."""
    with pytest.raises(BrokerConfigError, match="name space"):
        provision_gateway(db, gateway_id)
    assert db.execute("SELECT 1 FROM gateways WHERE id = %s", (gateway_id,)).fetchone() is None


def test_the_database_refuses_a_service_name_as_gateway_id(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="gateways_id_not_service_user"):
        db.execute("INSERT INTO gateways (id, credential_hash) VALUES ('vv-sim', 'x')")


def test_the_cli_refuses_a_service_name_and_the_service_keeps_its_login(stack: Stack) -> None:
    env = stack_env(stack)
    res = subprocess.run(
        [sys.executable, "-m", "vitalvagt.cli", "admin", "add-gateway", "vv-sim"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "service users' name space" in res.stderr
    assert "password" not in res.stdout
    assert "vv-sim" not in gateway_credential_hashes(stack.database_url())
    assert "vv-sim:" not in stack.paths.mq_files.gateways_passwd.read_text()
    sim = connect(stack.settings.mqtt_port, "vv-sim", stack.secrets()["vv-sim"])
    sim.close()
    assert not sim.reason.is_failure, "the service was locked out"


def test_password_files_never_mix_services_and_gateways() -> None:
    h = "$7$1000$x$y"
    with pytest.raises(BrokerConfigError):
        gateway_password_lines({"gw-ok": h, "vv-sim": h})
    with pytest.raises(BrokerConfigError):
        services_password_lines({"vv-sim": "pw", "gw-home": "pw"})
    assert gateway_password_lines({"gw-b": h, "gw-a": h}) == f"gw-a:{h}\ngw-b:{h}\n"


# --- docker-compose's config, on the real mosquitto ----------------------------------------


def test_broker_config_writes_a_working_tls_gateway_listener(
    database_url: str, gateways: dict[str, str]
) -> None:
    """`vitalvagt broker config` (the compose deployment's) on this machine's mosquitto:
    gateways on TLS with the generated CA, services on plaintext, each only on its own."""
    base = Path(tempfile_dir())
    try:
        out, ca_dir, data = base / "config", base / "ca", base / "data"
        data.mkdir(parents=True)
        services, tls = free_port(), free_port()
        env = {
            **os.environ,
            "VV_DATABASE_URL": database_url,
            "VV_BROKER_SERVICE_PASSWORDS": '{"vv-ingest": "ingest-pw", "vv-api": "api-pw"}',
            "PYTHONPATH": str(ROOT),
        }
        res = subprocess.run(
            [sys.executable, "-m", "vitalvagt.cli", "broker", "config", "--out", str(out),
             "--services-listen", f"127.0.0.1:{services}", "--gateway-listen",
             f"127.0.0.1:{tls}", "--ca-dir", str(ca_dir), "--tls-name", "hub.example",
             "--data-dir", str(data), "--log-file", str(base / "mosquitto.log")],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert (out / "tls" / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
        assert not (out / "tls" / "ca.key").exists(), "the CA key must not reach the broker"
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "mosquitto", str(base)], check=True)
        cmd = ["mosquitto", "-c", str(out / "mosquitto.conf")]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "mosquitto", "--", *cmd]
        broker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", tls)) == 0:
                        break
                assert time.monotonic() < deadline, (base / "mosquitto.log").read_text()
                time.sleep(0.05)
            time.sleep(0.2)
            ca = out / "tls" / "ca.crt"
            gw = connect(tls, "gw-sec-a", gateways["gw-sec-a"], ca=ca)
            ing = connect(services, "vv-ingest", "ingest-pw")
            gw_plain = connect(services, "gw-sec-a", gateways["gw-sec-a"])
            svc_tls = connect(tls, "vv-ingest", "ingest-pw", ca=ca)
            _close(gw, ing, gw_plain, svc_tls)
            assert not gw.reason.is_failure, gw.reason
            assert not ing.reason.is_failure, ing.reason
            assert gw_plain.reason.is_failure and svc_tls.reason.is_failure
        finally:
            broker.terminate()
            broker.wait(10)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def tempfile_dir() -> str:
    import tempfile

    d = tempfile.mkdtemp(prefix="vv-test-broker-config-", dir="/tmp")
    os.chmod(d, 0o755)  # the mosquitto user must reach it
    return d


def test_settings_default_tls_port() -> None:
    assert Settings.model_fields["mqtt_tls_port"].default == 58883


def test_migration_0005_switches_off_gateways_already_in_the_service_name_space(
    stack: Stack,
) -> None:
    """A database from before the name-space rule may hold a `vv-...` gateway: the migration
    switches it off (the broker no longer lists it) and keeps its row."""
    from vitalvagt.db.migrate import migrate

    name = "vv_test_migration_0005"
    admin = f"host={stack.paths.pg_run} port={stack.settings.pg_port} user=postgres"
    with psycopg.connect(admin + " dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} OWNER vitalvagt")
    try:
        with psycopg.connect(admin + f" dbname={name}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION timescaledb")
        url = stack.database_url().rsplit("/", 1)[0] + f"/{name}"
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:  # back to before 0005
            conn.execute("ALTER TABLE gateways DROP CONSTRAINT gateways_id_not_service_user")
            conn.execute("DELETE FROM schema_migrations WHERE version = 5")
            conn.execute(
                "INSERT INTO gateways (id, credential_hash) VALUES ('vv-sim', 'h'), ('gw-ok', 'h')"
            )
        assert migrate(url) == [5]
        assert gateway_credential_hashes(url) == {"gw-ok": "h"}
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT active FROM gateways WHERE id = 'vv-sim'").fetchone() == (
                False,
            )
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("UPDATE gateways SET active = true WHERE id = 'vv-sim'")
    finally:
        with psycopg.connect(admin + " dbname=postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
