"""The embedded stack: a private PostgreSQL 15 cluster with TimescaleDB and a mosquitto broker.

Both run as unprivileged processes with all their state under one directory (``VV_STATE_DIR``,
default ``.vv/`` in the checkout). As root, PostgreSQL runs as the ``postgres`` user and
mosquitto as the ``mosquitto`` user, because PostgreSQL refuses root and a broker has no
business with it. ``up`` is idempotent, ``down`` stops the processes and keeps the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from vitalvagt.broker import acl_text, mosquitto_conf, password_lines
from vitalvagt.errors import VitalvagtError
from vitalvagt.settings import Settings

log = logging.getLogger(__name__)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_NAME = "vitalvagt"
DB_USER = "vitalvagt"
SERVICE_USERS = ("vv-ingest", "vv-alerts", "vv-api", "vv-sim")
PROBE_USER = "vv-probe"  # no ACL rights; proves that the broker loaded the password file


class StackError(VitalvagtError):
    """The embedded stack could not be started, stopped or reached."""


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @property
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def pg_data(self) -> Path:
        return self.pg / "data"

    @property
    def pg_run(self) -> Path:
        return self.pg / "run"

    @property
    def pg_log(self) -> Path:
        return self.pg / "postgresql.log"

    @property
    def mq(self) -> Path:
        return self.root / "mosquitto"

    @property
    def mq_conf(self) -> Path:
        return self.mq / "mosquitto.conf"

    @property
    def mq_passwd(self) -> Path:
        return self.mq / "passwd"

    @property
    def mq_acl(self) -> Path:
        return self.mq / "acl"

    @property
    def mq_pid(self) -> Path:
        return self.mq / "mosquitto.pid"

    @property
    def mq_log(self) -> Path:
        return self.mq / "mosquitto.log"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"


def _is_root() -> bool:
    return os.geteuid() == 0


def _run(
    cmd: list[str], *, user: str | None = None, what: str, env: dict[str, str] | None = None
) -> str:
    if user and _is_root():
        cmd = ["runuser", "-u", user, "--", *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {cmd[0]} is not installed; run `make setup`") from exc
    if res.returncode != 0:
        raise StackError(
            f"{what} failed ({' '.join(cmd)}): {res.stderr.strip() or res.stdout.strip()}"
        )
    return res.stdout


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _wait_port(host: str, port: int, *, timeout_s: float, what: str, log_file: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return
        time.sleep(0.1)
    tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else "(no log)"
    raise StackError(f"{what} did not open {host}:{port} within {timeout_s:.0f}s; log:\n{tail}")


class Stack:
    """Start, stop and describe the embedded stack. Construct cheaply; nothing runs in __init__."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = StackPaths(settings.state_dir.resolve())
        self._probe_password = secrets.token_urlsafe(12)

    # --- secrets -----------------------------------------------------------------------
    def secrets(self) -> dict[str, str]:
        """Passwords of the database role and the broker's service users (created on first use)."""
        p = self.paths.secrets
        if p.exists():
            return json.loads(p.read_text())
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {"pg_password": secrets.token_urlsafe(18)}
        data.update({u: secrets.token_urlsafe(18) for u in SERVICE_USERS})
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        return data

    def database_url(self) -> str:
        pw = self.secrets()["pg_password"]
        return f"postgresql://{DB_USER}:{pw}@{self.settings.host}:{self.settings.pg_port}/{DB_NAME}"

    def admin_dsn(self) -> str:
        # Superuser over the private Unix socket (trust for the cluster owner only).
        return (
            f"host={self.paths.pg_run} port={self.settings.pg_port} user=postgres dbname={DB_NAME}"
        )

    # --- ownership when running as root ---------------------------------------------------
    def _own(self, path: Path, user: str) -> None:
        if not _is_root():
            return
        pw = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.lchown(p, pw.pw_uid, pw.pw_gid)

    def _service_dir(self, path: Path, user: str) -> None:
        """Create a state directory the service user can use; as root, relocate if unreachable."""
        if path.is_symlink():
            path.resolve().mkdir(parents=True, exist_ok=True)
            self._own(path.resolve(), user)
            return
        path.mkdir(parents=True, exist_ok=True)
        if not _is_root():
            return
        self._own(path, user)
        ok = subprocess.run(["runuser", "-u", user, "--", "test", "-w", str(path)]).returncode == 0
        if ok:
            return
        # e.g. a checkout under /root (mode 700): the service user cannot reach it. Keep the
        # data in /var/lib and leave a link in the state directory so everything is found there.
        tag = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        target = Path("/var/lib/vitalvagt") / tag / path.name
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent.parent, 0o755)
        os.chmod(target.parent, 0o755)
        if not any(path.iterdir()):
            path.rmdir()
            path.symlink_to(target)
        self._own(target, user)
        log.warning(
            "stack: %s is not reachable by user %s; its data lives in %s", path, user, target
        )

    # --- PostgreSQL ------------------------------------------------------------------------
    def pg_running(self) -> bool:
        if not (self.paths.pg_data / "PG_VERSION").exists():
            return False
        res = subprocess.run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.paths.pg_data), "status"],
            capture_output=True,
            user="postgres" if _is_root() else None,
        )
        return res.returncode == 0

    def _pg_init(self) -> None:
        p = self.paths
        self._service_dir(p.pg, "postgres")
        p.pg_run.mkdir(exist_ok=True)
        self._own(p.pg_run, "postgres")
        if (p.pg_data / "PG_VERSION").exists():
            return
        if not (PG_BIN / "initdb").exists():
            raise StackError(
                f"PostgreSQL 15 is not installed ({PG_BIN}/initdb missing); run `make setup`"
            )
        pwfile = p.pg / ".pwfile"
        pwfile.write_text(self.secrets()["pg_password"] + "\n")
        self._own(pwfile, "postgres")
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(p.pg_data),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "-A",
                "scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            user="postgres",
            what="initdb",
        )
        pwfile.unlink()

    def _pg_configure(self) -> None:
        conf = self.paths.pg_data / "postgresql.auto.conf"
        lines = {
            "port": str(self.settings.pg_port),
            "listen_addresses": f"'{self.settings.host}'",
            "unix_socket_directories": f"'{self.paths.pg_run}'",
            "shared_preload_libraries": "'timescaledb'",
            "timescaledb.telemetry_level": "'off'",
            "max_connections": "100",
            "shared_buffers": "'256MB'",
            "max_wal_size": "'2GB'",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        text = "# Written by `vitalvagt stack up`; edits are overwritten.\n" + "".join(
            f"{k} = {v}\n" for k, v in lines.items()
        )
        conf.write_text(text)
        self._own(conf, "postgres")
        # Local socket: only the cluster owner, trusted. TCP: password (scram) on loopback.
        hba = self.paths.pg_data / "pg_hba.conf"
        hba.write_text(
            "local all postgres trust\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        self._own(hba, "postgres")

    def _pg_start(self) -> None:
        if self.pg_running():
            return
        if _port_open(self.settings.host, self.settings.pg_port):
            raise StackError(
                f"port {self.settings.pg_port} is taken by another program;"
                " set VV_PG_PORT to a free port"
            )
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.paths.pg_data),
                "-l",
                str(self.paths.pg_log),
                "-w",
                "-t",
                "60",
                "start",
            ],
            user="postgres",
            what="starting PostgreSQL",
        )

    def _pg_bootstrap(self) -> None:
        """Create the role, the database and the extension (idempotent)."""
        import psycopg
        from psycopg import sql

        pw = self.secrets()["pg_password"]
        base = f"host={self.paths.pg_run} port={self.settings.pg_port} user=postgres"
        with psycopg.connect(base + " dbname=postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(DB_USER), sql.Literal(pw)
                    )
                )
            else:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(DB_USER), sql.Literal(pw)
                    )
                )
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
            ).fetchone():
                conn.execute(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
        with psycopg.connect(base + f" dbname={DB_NAME}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")

    # --- mosquitto ------------------------------------------------------------------------
    def mq_pid(self) -> int | None:
        try:
            pid = int(self.paths.mq_pid.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # exists, owned by another user
        return pid

    def write_broker_files(self, gateway_hashes: dict[str, str] | None = None) -> None:
        """Config, ACL and password file. Gateways come from the database (credential hashes)."""
        p = self.paths
        self._service_dir(p.mq, "mosquitto")
        (p.mq / "data").mkdir(exist_ok=True)
        p.mq_conf.write_text(
            mosquitto_conf(
                host=self.settings.host,
                port=self.settings.mqtt_port,
                passwd=p.mq_passwd,
                acl=p.mq_acl,
                pid_file=p.mq_pid,
                data_dir=p.mq / "data",
                log_file=p.mq_log,
            )
        )
        p.mq_acl.write_text(acl_text())
        sec = self.secrets()
        p.mq_passwd.write_text(
            password_lines(
                {u: sec[u] for u in SERVICE_USERS} | {PROBE_USER: self._probe_password},
                gateway_hashes or {},
            )
        )
        os.chmod(p.mq_passwd, 0o600)
        self._own(p.mq, "mosquitto")

    def reload_broker(self) -> None:
        """Make mosquitto re-read its password file and ACL (SIGHUP)."""
        pid = self.mq_pid()
        if pid:
            os.kill(pid, signal.SIGHUP)

    def _mq_start(self) -> None:
        if self.mq_pid():
            return
        if _port_open(self.settings.host, self.settings.mqtt_port):
            raise StackError(
                f"port {self.settings.mqtt_port} is taken by another program;"
                " set VV_MQTT_PORT to a free port"
            )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise StackError("mosquitto is not installed; run `make setup`")
        self.paths.mq_pid.unlink(missing_ok=True)
        _run(
            [exe, "-c", str(self.paths.mq_conf), "-d"], user="mosquitto", what="starting mosquitto"
        )
        _wait_port(
            self.settings.host,
            self.settings.mqtt_port,
            timeout_s=15,
            what="mosquitto",
            log_file=self.paths.mq_log,
        )

    # --- the whole stack ------------------------------------------------------------------
    def up(self) -> None:
        from vitalvagt.db.migrate import migrate

        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.secrets()
        self._pg_init()
        self._pg_configure()
        self._pg_start()
        self._pg_bootstrap()
        migrate(self.database_url())
        self.sync_broker_users(start=True)

    def sync_broker_users(self, *, start: bool = False) -> None:
        """Rewrite the broker's password file from the database's gateways, then reload."""
        from vitalvagt.db.gateways import gateway_credential_hashes

        self._probe_password = secrets.token_urlsafe(12)
        self.write_broker_files(gateway_credential_hashes(self.database_url()))
        if start:
            self._mq_start()
        self.reload_broker()
        self._wait_reloaded()

    def _wait_reloaded(self, timeout_s: float = 10.0) -> None:
        """SIGHUP is handled asynchronously: wait until the broker accepts this sync's probe
        password, so that a gateway provisioned just now is not refused."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vv-probe")
            client.username_pw_set(PROBE_USER, self._probe_password)
            try:
                client.connect(self.settings.host, self.settings.mqtt_port, keepalive=5)
                for _ in range(50):
                    client.loop(timeout=0.02)
                    if client.is_connected():
                        return
            except OSError:
                pass
            finally:
                client.disconnect()
                client.loop(timeout=0)
                client.socket() and client.socket().close()  # type: ignore[union-attr]
            time.sleep(0.05)
        raise StackError(f"mosquitto did not load its new password file within {timeout_s:.0f}s;"
                         f" see {self.paths.mq_log}")

    def down(self) -> None:
        pid = self.mq_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not self.mq_pid():
                    break
                time.sleep(0.05)
        if self.pg_running():
            _run(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.paths.pg_data), "-m", "fast", "-w", "stop"],
                user="postgres",
                what="stopping PostgreSQL",
            )

    def status(self) -> dict[str, object]:
        s = self.settings
        pg_up = self.pg_running()
        mq = self.mq_pid()
        return {
            "state_dir": str(self.paths.root),
            "postgresql": {
                "running": pg_up,
                "address": f"{s.host}:{s.pg_port}",
                "database": DB_NAME,
                "user": DB_USER,
                "connect": f"psql 'postgresql://{DB_USER}@{s.host}:{s.pg_port}/{DB_NAME}'"
                " (password: pg_password in secrets.json)",
                "data": str(self.paths.pg_data.resolve()),
                "log": str(self.paths.pg_log.resolve()),
            },
            "mosquitto": {
                "running": mq is not None,
                "pid": mq,
                "address": f"{s.host}:{s.mqtt_port}",
                "service_users": list(SERVICE_USERS),
                "connect": f"mosquitto_sub -h {s.host} -p {s.mqtt_port} -u vv-ingest -P <secret>"
                " -t 'vv/v1/gw/+/obs' (passwords in secrets.json)",
                "config": str(self.paths.mq_conf),
                "log": str(self.paths.mq_log.resolve()),
            },
            "secrets": str(self.paths.secrets),
        }


def describe(status: dict[str, object]) -> str:
    pg = status["postgresql"]
    mq = status["mosquitto"]
    assert isinstance(pg, dict) and isinstance(mq, dict)
    state = lambda up: "running" if up else "stopped"  # noqa: E731
    return "\n".join(
        [
            f"state directory: {status['state_dir']}",
            f"PostgreSQL 15 + TimescaleDB: {state(pg['running'])} on {pg['address']}",
            f"  connect: {pg['connect']}",
            f"  data: {pg['data']}   log: {pg['log']}",
            f"mosquitto: {state(mq['running'])} on {mq['address']}"
            + (f" (pid {mq['pid']})" if mq["pid"] else ""),
            f"  connect: {mq['connect']}",
            f"  config: {mq['config']}   log: {mq['log']}",
            f"secrets (mode 600): {status['secrets']}",
        ]
    )


def with_stack_defaults(settings: Settings) -> Settings:
    """Fill the database URL from the embedded stack when none was configured."""
    if settings.database_url is None:
        with contextlib.suppress(FileNotFoundError):
            url = Stack(settings).database_url()
            return settings.model_copy(update={"database_url": SecretStr(url)})
    return settings


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str
    password: str
    tls_ca: str | None


def mqtt_endpoint(settings: Settings, service_user: str) -> MqttEndpoint:
    """The broker and credentials for a service: VV_MQTT_* if set, else the embedded stack's."""
    username = settings.mqtt_username or service_user
    if settings.mqtt_password is not None:
        password = settings.mqtt_password.get_secret_value()
    else:
        stack = Stack(settings)
        if not stack.paths.secrets.exists():
            raise StackError(
                "no MQTT password: set VV_MQTT_PASSWORD or run `vitalvagt stack up` first"
            )
        password = stack.secrets().get(username, "")
        if not password:
            raise StackError(f"the embedded stack has no MQTT user {username!r}")
    return MqttEndpoint(
        host=settings.mqtt_host or settings.host,
        port=settings.mqtt_port,
        username=username,
        password=password,
        tls_ca=str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None,
    )


def database_url(settings: Settings) -> str:
    """VV_DATABASE_URL if set, else the embedded stack's database."""
    url = with_stack_defaults(settings).database_url
    if url is None:
        raise StackError("no database: set VV_DATABASE_URL or run `vitalvagt stack up` first")
    return url.get_secret_value()
