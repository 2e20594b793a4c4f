"""The embedded stack's state directory: where each file lives, and its generated secrets.

Read by the stack runner (vitalvagt/stack.py), which creates these files, and by the endpoint
lookup (vitalvagt/endpoints.py), which every component uses to find the database and the
broker when no VV_DATABASE_URL or VV_MQTT_HOST is set. Nothing here starts a process.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from vitalvagt.broker import SERVICE_USERS, BrokerFiles
from vitalvagt.settings import Settings
from vitalvagt.tls_files import TlsFiles

DB_NAME = "vitalvagt"
DB_USER = "vitalvagt"
SERVICES_HOST = "127.0.0.1"  # the services listener is never reachable from outside
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def connect_host(host: str) -> str:
    """The address to reach a listener bound to ``host`` on this machine."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


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
    def mq_files(self) -> BrokerFiles:
        return BrokerFiles(self.mq)

    @property
    def mq_conf(self) -> Path:
        return self.mq_files.conf

    @property
    def tls(self) -> TlsFiles:
        """The private CA in ``tls/`` (its key is never given to mosquitto); the server's
        certificate and key in the broker's own directory."""
        return TlsFiles(ca_dir=self.root / "tls", server_dir=self.mq)

    @property
    def ca_cert(self) -> Path:
        return self.tls.ca_cert

    @property
    def mq_pid(self) -> Path:
        return self.mq / "mosquitto.pid"

    @property
    def mq_log(self) -> Path:
        return self.mq / "mosquitto.log"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"



def stack_paths(settings: Settings) -> StackPaths:
    return StackPaths(settings.state_dir.resolve())


def stack_secrets(paths: StackPaths, *, create: bool = False) -> dict[str, str]:
    """Passwords of the database role and the broker's service users. ``create``: make them
    on first use (the runner does); otherwise a missing file is ``FileNotFoundError``."""
    p = paths.secrets
    if p.exists() or not create:
        return json.loads(p.read_text())
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {"pg_password": secrets.token_urlsafe(18)}
    data.update({u: secrets.token_urlsafe(18) for u in SERVICE_USERS})
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    return data


def embedded_database_url(settings: Settings, *, create: bool = False) -> str:
    pw = stack_secrets(stack_paths(settings), create=create)["pg_password"]
    return f"postgresql://{DB_USER}:{pw}@{settings.host}:{settings.pg_port}/{DB_NAME}"
