"""The embedded stack: a private PostgreSQL 15 cluster with TimescaleDB and a mosquitto broker.

Both run as unprivileged processes with all their state under one directory (``VV_STATE_DIR``,
default ``.vv/`` in the checkout). As root, PostgreSQL runs as the ``postgres`` user and
mosquitto as the ``mosquitto`` user, because PostgreSQL refuses root and a broker has no
business with it. ``up`` is idempotent, ``down`` stops the processes and keeps the data.

mosquitto has two listeners (vitalvagt/broker.py): the services' plaintext one on loopback
(``VV_MQTT_PORT``) and the gateways' TLS one on ``VV_HOST`` (``VV_MQTT_TLS_PORT``), whose
certificate is signed by a private CA made once in ``tls/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from vitalvagt.broker import (
    PROBE_USER,
    SERVICE_USERS,
    mosquitto_conf,
    write_broker_files,
)
from vitalvagt.broker_process import (
    BROKER_OPEN_FILES,
    BROKER_OPEN_FILES_LOW,
    RECONNECT_WAIT_S,
    WITH_OPEN_FILES,
    connected_clients,
    open_files_limit,
)
from vitalvagt.errors import VitalvagtError
from vitalvagt.mqtt_cleanup import close_leftover_socket
from vitalvagt.settings import Settings
from vitalvagt.stack_state import (
    DB_NAME,
    DB_USER,
    SERVICES_HOST,
    connect_host,
    embedded_database_url,
    stack_paths,
    stack_secrets,
)
from vitalvagt.tls import ensure_certificates, server_names

log = logging.getLogger(__name__)

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class StackError(VitalvagtError):
    """The embedded stack could not be started, stopped or reached."""


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


class Stack:
    """Start, stop and describe the embedded stack. Construct cheaply; nothing runs in __init__."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = stack_paths(settings)
        self._probe_password = secrets.token_urlsafe(12)

    # --- secrets -----------------------------------------------------------------------
    def secrets(self) -> dict[str, str]:
        """Passwords of the database role and the broker's service users (created on first use)."""
        return stack_secrets(self.paths, create=True)

    def database_url(self) -> str:
        return embedded_database_url(self.settings, create=True)

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
        """The running broker's pid, or None. A killed broker that its parent has not reaped
        yet (a zombie: containers' init processes may take seconds) is not running."""
        try:
            pid = int(self.paths.mq_pid.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # exists, owned by another user
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return None  # exited between kill(0) and now
        except OSError:
            return pid  # no /proc: trust kill(0)
        # "pid (comm) state ...": comm may contain spaces and parentheses.
        comm, _, rest = stat.partition(" (")[2].rpartition(") ")
        if rest[:1] in ("Z", "X") or not comm.startswith("mosquitto"):
            return None  # dead, or the pid was reused by another program
        return pid

    def _broker_conf(self) -> str:
        s, p = self.settings, self.paths
        return mosquitto_conf(
            files=p.mq_files,
            services_host=SERVICES_HOST,
            services_port=s.mqtt_port,
            gateway_host=s.host,
            gateway_port=s.mqtt_tls_port,
            certfile=p.tls.server_cert,
            keyfile=p.tls.server_key,
            pid_file=p.mq_pid,
            data_dir=p.mq / "data",
            log_file=p.mq_log,
        )

    def write_broker_files(self, gateway_hashes: dict[str, str] | None = None) -> bool:
        """Config, ACLs, password files and TLS certificate (the CA is made once). Gateways
        come from the database (credential hashes). Returns whether the config or the server
        certificate changed, which a running broker only picks up on a restart."""
        p = self.paths
        self._service_dir(p.mq, "mosquitto")
        (p.mq / "data").mkdir(exist_ok=True)
        p.tls.ca_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(p.tls.ca_dir, 0o755)  # ca.crt is public; ca.key is mode 600
        reissued = ensure_certificates(p.tls, server_names(self.settings.host))
        conf = self._broker_conf()
        try:
            changed = p.mq_conf.read_text() != conf
        except FileNotFoundError:
            changed = True
        sec = self.secrets()
        write_broker_files(
            p.mq_files,
            conf=conf,
            service_passwords={u: sec[u] for u in SERVICE_USERS}
            | {PROBE_USER: self._probe_password},
            gateway_hashes=gateway_hashes or {},
        )
        for old in ("passwd", "acl"):  # the single-listener layout before issue 9
            (p.mq / old).unlink(missing_ok=True)
        self._own(p.mq, "mosquitto")
        return changed or reissued

    def reload_broker(self) -> bool:
        """Make a running mosquitto use its rewritten password files and ACLs: a clean
        restart (sessions and queued messages saved and restored), not a SIGHUP. False if it
        is not running.

        Why not SIGHUP: with ``per_listener_settings``, mosquitto (2.0.11 here; the code is
        the same through 2.0.20) answers a SIGHUP by disconnecting, once more, every offline
        session restored from its persistence file (such a session has no listener), and
        each time it files the session for expiry again without taking the old entry out.
        When that client comes back and its session ends, the expiry sweep walks into freed
        memory: a segfault (`tests/core/test_stack.py` reproduces it). A broker that has been
        restarted once has such sessions, so every provisioning's reload was a crash waiting
        for its client. Clients lose their connection for the moment of the restart and come
        back with their sessions; a gateway keeps every reading until ingest's receipt."""
        if self.mq_pid() is None:
            return False
        login = self._count_login()
        # The retained count, at once: mosquitto renews it every 2 s, so it may miss a client
        # that came in the last moments (ingest connects long before a provisioning), or
        # count one gone since (the wait below then ends at its bound).
        before = connected_clients(login, live=False)
        self._mq_stop()
        self._mq_start()  # waits until it answers with the files just written
        if before:
            # The services (ingest's shared subscription above all) and the tablets come back
            # within seconds; what is published before ingest has subscribed again finds no
            # subscriber (mosquitto 2.0.11 does not restore a $share subscription).
            connected_clients(login, live=True, at_least=before, timeout_s=RECONNECT_WAIT_S)
            time.sleep(0.5)  # counted once connected; their SUBSCRIBE follows the CONNACK
        return True

    def _count_login(self) -> tuple[str, int, str, str]:
        """Where and as whom the broker's client count is read (vv-sim, whose password
        outlives a sync, unlike the probe's)."""
        return SERVICES_HOST, self.settings.mqtt_port, "vv-sim", self.secrets()["vv-sim"]

    def _mq_check_ports(self) -> None:
        s = self.settings
        for host, port, var in (
            (SERVICES_HOST, s.mqtt_port, "VV_MQTT_PORT"),
            (connect_host(s.host), s.mqtt_tls_port, "VV_MQTT_TLS_PORT"),
        ):
            if _port_open(host, port):
                raise StackError(
                    f"port {port} is taken by another program; set {var} to a free port"
                )

    def _mq_start(self) -> None:
        """Start mosquitto and wait until it accepts the probe user. It has then loaded its
        files (no SIGHUP needed) and installed its signal handlers: a SIGHUP before that
        kills it."""
        self._mq_check_ports()
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise StackError("mosquitto is not installed; run `make setup`")
        self.paths.mq_pid.unlink(missing_ok=True)
        wrapper = ["sh", "-c", WITH_OPEN_FILES.format(n=BROKER_OPEN_FILES), exe]
        _run(
            [*wrapper, "-c", str(self.paths.mq_conf), "-d"],
            user="mosquitto",
            what="starting mosquitto",
        )
        self._wait_probe(timeout_s=15, what="mosquitto did not start and accept its probe user")
        limit = self.broker_open_files()
        if limit is not None and 0 <= limit < BROKER_OPEN_FILES_LOW:
            log.warning(
                "stack: mosquitto can keep about %d connections open (its hard limit of open"
                " files); raise it (`ulimit -Hn %d` as root) for more gateways",
                limit,
                BROKER_OPEN_FILES,
            )

    def broker_open_files(self) -> int | None:
        """The running broker's limit of open files (its soft RLIMIT_NOFILE; -1: unlimited)."""
        pid = self.mq_pid()
        return open_files_limit(pid) if pid else None

    def _mq_stop(self) -> None:
        pid = self.mq_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)  # a clean stop saves the persistence file
            deadline = time.monotonic() + 30
            while self.mq_pid() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.mq_pid():
                raise StackError(f"mosquitto (pid {pid}) did not stop within 30 s")

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

    def sync_broker_users(self, *, start: bool = False) -> bool:
        """Rewrite the broker's files from the database's gateways and make the broker use
        them: restart a running broker (``reload_broker``: no SIGHUP), or start it if
        ``start``. True if the broker was (re)started: its clients were disconnected."""
        from vitalvagt.db.gateways import gateway_credential_hashes

        self._probe_password = secrets.token_urlsafe(12)
        try:
            gateways_before: str | None = self.paths.mq_files.gateways_passwd.read_text()
        except FileNotFoundError:
            gateways_before = None
        changed = self.write_broker_files(gateway_credential_hashes(self.database_url()))
        # The gateways' lines are the database's hashes, so an unchanged file means no
        # gateway came, went or was re-keyed: a running broker need not restart for it.
        # (The services' lines differ each time by their salt and this sync's probe.)
        gateways_changed = self.paths.mq_files.gateways_passwd.read_text() != gateways_before
        running = self.mq_pid() is not None
        if running and changed and start:
            log.warning("stack: mosquitto's configuration changed; restarting it")
            self._mq_stop()
            running = False
        if not running:
            if not start:
                raise StackError("mosquitto is not running; run `vitalvagt stack up`")
            self._mq_start()  # loads the files just written
            return True
        if changed:
            log.info("stack: mosquitto's configuration changed; the restart loads it")
        elif not gateways_changed:
            return False  # nothing the running broker must load
        return self.reload_broker()

    def _wait_probe(self, *, timeout_s: float, what: str) -> None:
        """Wait until the services listener accepts this sync's probe password: the broker
        is up (its signal handlers installed) and has loaded the password files just written.
        mosquitto loads every listener's files in one pass, so the gateways' file is loaded
        too: a gateway provisioned just now is let in once this returns."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=PROBE_USER)
            client.username_pw_set(PROBE_USER, self._probe_password)
            try:
                client.connect(SERVICES_HOST, self.settings.mqtt_port, keepalive=5)
                for _ in range(50):
                    client.loop(timeout=0.02)
                    if client.is_connected():
                        return
            except OSError:
                pass
            finally:
                client.disconnect()
                client.loop(timeout=0)
                close_leftover_socket(client)
            time.sleep(0.05)
        tail = (
            self.paths.mq_log.read_text(errors="replace")[-2000:]
            if self.paths.mq_log.exists()
            else "(no log)"
        )
        raise StackError(f"{what} within {timeout_s:.0f}s; log {self.paths.mq_log}:\n{tail}")

    def down(self) -> None:
        self._mq_stop()
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
                "open_files": self.broker_open_files(),  # one per connected gateway or service
                "address": f"{SERVICES_HOST}:{s.mqtt_port}",  # services, plaintext
                "service_users": list(SERVICE_USERS),
                "connect": f"mosquitto_sub -V mqttv5 -h {SERVICES_HOST} -p {s.mqtt_port}"
                " -u vv-ingest -P <secret> -t 'vv/v1/gw/+/obs' (passwords in secrets.json)",
                "tls_address": f"{s.host}:{s.mqtt_tls_port}",  # gateways, TLS
                "ca_file": str(self.paths.ca_cert),
                "gateway_connect": f"mosquitto_pub -V mqttv5 -h {connect_host(s.host)}"
                f" -p {s.mqtt_tls_port} --cafile {self.paths.ca_cert} -u GATEWAY_ID -P <password>"
                " -q 1 -t vv/v1/gw/GATEWAY_ID/obs -m ...",
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
            f"mosquitto: {state(mq['running'])}"
            + (f" (pid {mq['pid']}, open-file limit {mq['open_files']})" if mq["pid"] else "")
            + f"; services on {mq['address']} (plaintext, loopback only),"
            f" gateways on {mq['tls_address']} (TLS)",
            f"  services connect: {mq['connect']}",
            f"  TLS CA file (give it to gateways): {mq['ca_file']}",
            f"  gateway connect: {mq['gateway_connect']}",
            f"  config: {mq['config']}   log: {mq['log']}",
            f"secrets (mode 600): {status['secrets']}",
        ]
    )
