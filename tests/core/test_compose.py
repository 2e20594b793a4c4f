"""docker-compose.yml: no container engine runs here, so the file is checked statically.

Each service's command must be a real `vitalvagt` subcommand (parsed by the real CLI
parser), the broker must use the generated configuration, and the image must be the official
TimescaleDB one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vitalvagt.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = sorted(n for n, s in SERVICES.items() if s.get("image") == "vitalvagt:latest")


def test_compose_has_the_required_services() -> None:
    assert {"timescaledb", "mosquitto", "ingest", "alerts", "api", "simulator"} <= set(SERVICES)
    assert SERVICES["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert SERVICES["mosquitto"]["image"].startswith("eclipse-mosquitto:")
    assert SERVICES["simulator"]["profiles"] == ["demo"]
    for name in ("ingest", "alerts", "api"):
        assert SERVICES[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / "deploy" / "Dockerfile").exists()


def _component_built(command: list[str]) -> bool:
    top = command[0]
    module = {
        "ingest": "ingest.cli",
        "alerts": "alerts.cli",
        "api": "api.cli",
        "simulate": "simulator.cli",
    }.get(top)
    return module is None or importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_command_is_a_real_vitalvagt_subcommand(service: str) -> None:
    command = SERVICES[service]["command"]
    if not _component_built(command):
        pytest.xfail(f"the component behind `vitalvagt {command[0]}` is not built yet")
    parser = build_parser()
    try:
        args = parser.parse_args(command)
    except SystemExit as exc:  # argparse exits on an unknown command or option
        raise AssertionError(f"{service}: `vitalvagt {' '.join(command)}` does not parse") from exc
    assert callable(args.handler)


def test_broker_uses_the_generated_config_and_acl() -> None:
    from vitalvagt.broker import gateway_acl_text

    assert SERVICES["mosquitto"]["command"][-1] == "/mosquitto/config/mosquitto.conf"
    assert SERVICES["broker-config"]["command"][:2] == ["broker", "config"]
    assert "pattern write vv/v1/gw/%u/obs" in gateway_acl_text()
    # One open file per gateway: a 1,024 limit would shut everyone out at a thousand homes.
    assert SERVICES["mosquitto"]["ulimits"]["nofile"]["soft"] >= 65536


def _listeners(conf: str) -> dict[int, dict[str, str]]:
    """mosquitto.conf's listener blocks (per_listener_settings): port -> option -> value."""
    out: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in conf.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "listener":
            port, _, host = value.partition(" ")
            current = out[int(port)] = {"host": host}
        elif current is not None and key and not key.startswith("#"):
            current[key] = value
    return out


def test_published_8883_is_the_tls_gateway_listener_and_1883_is_not_published(
    tmp_path: Path,
) -> None:
    """Issue 9 (14): compose mapped plaintext 1883 to host port 8883."""
    from vitalvagt.cli import write_broker_config

    ports = SERVICES["mosquitto"]["ports"]
    published = {int(p.split(":")[-1]): int(p.split(":")[-2]) for p in ports}  # container: host
    assert published == {8883: 8883}, ports
    # The broker-config service's own arguments, with the directories moved here.
    command = SERVICES["broker-config"]["command"]
    assert command[command.index("--out") + 1] == "/mosquitto/config"  # the broker's volume
    args = build_parser().parse_args(
        [*command, "--out", str(tmp_path / "config"), "--ca-dir", str(tmp_path / "ca"),
         "--data-dir", str(tmp_path / "data"), "--log-file", str(tmp_path / "log")]
    )  # fmt: skip
    write_broker_config(args, {"vv-ingest": "pw"}, {})
    conf = (tmp_path / "config" / "mosquitto.conf").read_text()
    assert "per_listener_settings true" in conf
    listeners = _listeners(conf)
    assert set(listeners) == {1883, 8883}
    tls = listeners[8883]
    assert tls["use_username_as_clientid"] == "true"
    assert tls["tls_version"] == "tlsv1.2"
    assert tls["password_file"].endswith("gateways.passwd")
    assert tls["certfile"] == str(tmp_path / "config" / "tls" / "server.crt")
    assert tls["keyfile"] == str(tmp_path / "config" / "tls" / "server.key")
    assert (tmp_path / "config" / "tls" / "server.crt").exists()
    assert (tmp_path / "config" / "tls" / "ca.crt").exists()
    assert not (tmp_path / "config" / "tls" / "ca.key").exists()
    services = listeners[1883]
    assert "certfile" not in services and services["password_file"].endswith("services.passwd")
    # Gateways (and the demo simulator, whose homes are gateways) reach 8883 by these names.
    assert "mosquitto" in command and "${VV_BROKER_HOSTNAME" in " ".join(command)
    sim = SERVICES["simulator"]["environment"]
    assert sim["VV_MQTT_TLS_PORT"] == "8883"
    assert sim["VV_MQTT_TLS_CA"] == "/mosquitto/config/tls/ca.crt"


def test_the_demo_simulator_rewrites_the_broker_password_file_it_mounts() -> None:
    """Issue 10: with VV_DATABASE_URL set, the simulator provisioned gateways whose passwords
    never reached the broker's password file, so the demo's homes could not log in."""
    sim = SERVICES["simulator"]
    command = sim["command"]
    config_dir = command[command.index("--broker-config-dir") + 1]
    assert config_dir == SERVICES["broker-config"]["command"][3] == "/mosquitto/config"
    assert f"mqconfig:{config_dir}" in sim["volumes"], "the simulator must be able to write it"
    assert "mqconfig:/mosquitto/config" in SERVICES["mosquitto"]["volumes"]
    args = build_parser().parse_args(command)
    assert args.broker_config_dir == Path(config_dir)


@pytest.mark.stack
def test_the_fleets_provisioned_gateways_reach_a_container_brokers_password_file(
    database_url: str, tmp_path: Path
) -> None:
    """The function the simulator's fleet command calls once it has provisioned its homes
    (simulator.cli.broker_sync) writes each home's gateway into the password file that
    `vitalvagt broker config` wrote, with a hash of the password the home logs in with."""
    import base64
    import hashlib

    from pydantic import SecretStr

    from simulator.cli import broker_sync
    from simulator.fleet import provision_fleet
    from simulator.parameters import Group
    from vitalvagt.broker import BrokerFiles
    from vitalvagt.cli import write_broker_config
    from vitalvagt.settings import Settings

    command = SERVICES["broker-config"]["command"]
    config = tmp_path / "config"
    args = build_parser().parse_args(
        [*command, "--out", str(config), "--ca-dir", str(tmp_path / "ca"),
         "--data-dir", str(tmp_path / "data"), "--log-file", str(tmp_path / "log")]
    )  # fmt: skip
    write_broker_config(args, {"vv-ingest": "pw"}, {})  # before the fleet: no gateways yet
    files = BrokerFiles(config)
    services_before = files.services_passwd.read_text()

    @dataclass
    class Patient:  # the fields provision_fleet reads of a cohort's PatientRecord
        patient_id: str
        gateway_id: str
        group: Group

    patients = [Patient(f"compose-p{i}", f"compose-gw-{i}", Group.COPD) for i in range(3)]
    passwords = provision_fleet(database_url, patients)  # type: ignore[arg-type]
    sync = broker_sync(Settings(database_url=SecretStr(database_url)), config)
    assert sync is not None, "nothing would write the broker's password file"
    sync()
    lines = dict(
        line.split(":", 1) for line in files.gateways_passwd.read_text().splitlines() if line
    )
    for gateway, password in passwords.items():
        _, scheme, iterations, salt, digest = lines[gateway].split("$")
        assert scheme == "7"
        expected = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations)
        )
        assert base64.b64decode(digest) == expected, gateway
    assert files.services_passwd.read_text() == services_before  # services untouched
    assert oct(files.gateways_passwd.stat().st_mode & 0o777) == "0o600"
    _retire(database_url, list(passwords), [p.patient_id for p in patients])


def _retire(database_url: str, gateways: list[str], patients: list[str]) -> None:
    """Leave the session's database without this test's gateways and patients active."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE gateways SET active = false WHERE id = ANY(%s)", (gateways,))
        conn.execute("UPDATE patients SET active = false WHERE id = ANY(%s)", (patients,))


def _gateway_login(port: int, ca: Path, gateway: str, password: str) -> str:
    """'ok' or why the broker's TLS gateway listener refused ``gateway``."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from vitalvagt.mqtt_cleanup import client_tls_context, close_leftover_socket

    done, result = threading.Event(), {"reason": "no CONNACK"}

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        result["reason"] = "ok" if not getattr(reason, "is_failure", False) else str(reason)
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gateway, protocol=mqtt.MQTTv5)
    client.username_pw_set(gateway, password)
    client.tls_set_context(client_tls_context(ca))
    client.on_connect = on_connect
    try:
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        done.wait(10)
    except OSError:
        pass  # not listening yet
    finally:
        client.disconnect()
        client.loop_stop()
        close_leftover_socket(client)  # a login the restarting broker cut short
    return result["reason"]


@pytest.mark.stack
@pytest.mark.slow
def test_the_compose_broker_lets_a_gateway_in_once_its_password_file_changes(
    database_url: str,
) -> None:
    """The mosquitto service's own command, run here with the real mosquitto: after the
    simulator's sync rewrote the gateway password file, the broker reloads it by itself and
    a home provisioned while it runs logs in (no `docker compose kill -s HUP` by anyone)."""
    import os
    import pwd
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    from pydantic import SecretStr

    from simulator.cli import broker_sync
    from tests.conftest import free_port
    from vitalvagt.cli import write_broker_config
    from vitalvagt.db.gateways import provision_gateway
    from vitalvagt.settings import Settings

    if shutil.which("mosquitto", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("no mosquitto binary")
    services_port, gateway_port = free_port(), free_port()
    tmp_path = Path(tempfile.mkdtemp(prefix="vv-test-compose-"))
    config = tmp_path / "config"
    (tmp_path / "data").mkdir()
    args = build_parser().parse_args(
        [*SERVICES["broker-config"]["command"], "--out", str(config),
         "--ca-dir", str(tmp_path / "ca"), "--data-dir", str(tmp_path / "data"),
         "--log-file", str(tmp_path / "mosquitto.log"),
         "--services-listen", f"127.0.0.1:{services_port}",
         "--gateway-listen", f"127.0.0.1:{gateway_port}"]
    )  # fmt: skip
    write_broker_config(args, {"vv-ingest": "pw"}, {})
    if os.geteuid() == 0:  # as the image's entrypoint: the volumes are mosquitto's, who it runs as
        tmp_path.chmod(0o755)
        user = pwd.getpwnam("mosquitto")
        for path in [tmp_path, *tmp_path.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
    # The service's command, with compose's $$ escapes undone and the config moved here.
    sh, flag, script, name, _conf = SERVICES["mosquitto"]["command"]
    script = script.replace("$$", "$")
    env = {"PATH": "/usr/sbin:/usr/bin:/bin"}
    broker = subprocess.Popen([sh, flag, script, name, str(config / "mosquitto.conf")], env=env)
    try:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            password = provision_gateway(conn, "compose-reload-gw")
        ca = config / "tls" / "ca.crt"
        deadline = time.monotonic() + 10
        while _gateway_login(gateway_port, ca, "compose-reload-gw", password) == "no CONNACK":
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.3)
        assert _gateway_login(gateway_port, ca, "compose-reload-gw", password) != "ok"
        sync = broker_sync(Settings(database_url=SecretStr(database_url)), config)
        assert sync is not None
        sync()
        deadline = time.monotonic() + 15
        while (reason := _gateway_login(gateway_port, ca, "compose-reload-gw", password)) != "ok":
            assert time.monotonic() < deadline, f"still refused after the sync: {reason}"
            time.sleep(0.5)
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
        shutil.rmtree(tmp_path, ignore_errors=True)
        _retire(database_url, ["compose-reload-gw"], [])
