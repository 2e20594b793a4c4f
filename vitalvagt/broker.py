"""mosquitto's configuration, ACLs and password files, shared by the embedded stack and deploy/.

The broker has two listeners, each with its own users (``per_listener_settings true``):

- the *services* listener (plaintext, loopback or the container network only) for the hub's
  own services: ``vv-ingest``, ``vv-alerts``, ``vv-api``, ``vv-sim`` and the stack's probe
  user. Client ids are the services' own (ingest instances ``vv-ingest-<instance>`` share
  the user ``vv-ingest``).
- the *gateway* listener (TLS only) for home gateways. Each gateway's MQTT user name is its
  gateway id, so one ACL pattern (``%u``) confines every gateway to its own topics, and
  ``use_username_as_clientid`` makes the broker replace whatever client id a tablet sends
  with its user name: a gateway's session is always keyed by its own gateway id, so it can
  take over neither another gateway's session nor a service's.

Service users are ``vv-*``; a gateway id may never be in that name space (see
``check_gateway_id``), so that no gateway's client id can equal a service's.

Password hashes use mosquitto's own PBKDF2-SHA512 format, so the hash kept in the
``gateways`` table is exactly the line the broker checks, and the gateway password file can be
rebuilt from the database at any time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vitalvagt.errors import VitalvagtError

PBKDF2_ITERATIONS = 1000
SALT_BYTES = 12

SERVICE_PREFIX = "vv-"  # the service users' name space; no gateway id starts with it
SERVICE_USERS = ("vv-ingest", "vv-alerts", "vv-api", "vv-sim")
PROBE_USER = "vv-probe"  # no ACL rights; proves that the broker (re)loaded its password files
# Read by the stack as vv-sim (whose password, unlike the probe's, outlives a sync): a
# restart of the broker waits for the clients connected before it to come back.
CLIENTS_CONNECTED_TOPIC = "$SYS/broker/clients/connected"
GATEWAY_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")  # as the gateways table's CHECK
# Seconds between saves of the broker's in-memory store (queued messages, sessions). Only a
# clean stop saves everything; a crash loses what arrived since the last save. End-to-end
# receipts (docs/wire-format.md), not the broker, make a crash lossless.
AUTOSAVE_INTERVAL_S = 5


class BrokerConfigError(VitalvagtError):
    """A gateway id or user list the broker's files must not contain."""


def is_service_user(user: str) -> bool:
    """A user of the services listener (the ``vv-`` name space), not a gateway."""
    return user.startswith(SERVICE_PREFIX) or user in (*SERVICE_USERS, PROBE_USER)


def check_gateway_id(gateway_id: str) -> None:
    """Refuse a gateway id that is malformed or in the service users' name space."""
    if not GATEWAY_ID_RE.fullmatch(gateway_id):
        raise BrokerConfigError(
            f"gateway id {gateway_id!r} is invalid: use 3-63 characters of a-z, 0-9 and '-',"
            " starting with a letter or digit"
        )
    reserved = (*SERVICE_USERS, PROBE_USER)
    if gateway_id.startswith(SERVICE_PREFIX) or any(gateway_id.startswith(u) for u in reserved):
        raise BrokerConfigError(
            f"gateway id {gateway_id!r} is in the service users' name space"
            f" ({SERVICE_PREFIX}*: {', '.join(reserved)}): a gateway under that id would share a"
            " name with a service; choose an id that does not start with"
            f" {SERVICE_PREFIX!r}, for example 'gw-{gateway_id.removeprefix(SERVICE_PREFIX)}'"
        )


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """A password hash in mosquitto 2's ``$7$`` format (PBKDF2-HMAC-SHA512)."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class BrokerFiles:
    """Where the broker's generated files are (the config names them by absolute path)."""

    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def services_passwd(self) -> Path:
        return self.dir / "services.passwd"

    @property
    def services_acl(self) -> Path:
        return self.dir / "services.acl"

    @property
    def gateways_passwd(self) -> Path:
        return self.dir / "gateways.passwd"

    @property
    def gateways_acl(self) -> Path:
        return self.dir / "gateways.acl"


def mosquitto_conf(
    *,
    files: BrokerFiles,
    services_host: str,
    services_port: int,
    gateway_host: str,
    gateway_port: int,
    certfile: Path,
    keyfile: Path,
    pid_file: Path | None,
    data_dir: Path,
    log_file: Path,
) -> str:
    pid = f"pid_file {pid_file}\n" if pid_file else ""
    return f"""# Written by vitalvagt (`stack up` or `broker config`); edits are overwritten.
# See docs/operations.md. Two listeners, each with its own users and ACL.
per_listener_settings true
{pid}
# Queued QoS 1 messages and persistent sessions are saved every {AUTOSAVE_INTERVAL_S} s and on a
# clean stop. A crash (SIGKILL, power loss) loses what arrived since the last save: gateways keep
# each reading until ingest's receipt says it is stored, so they send it again.
persistence true
persistence_location {data_dir}/
autosave_interval {AUTOSAVE_INTERVAL_S}
# Up to a day of a busy gateway's backlog per offline persistent session.
max_queued_messages 100000
max_inflight_messages 1000
# Above the wire format's 256 KiB so that ingest sees (and dead-letters) an oversize
# message with its reason; beyond 1 MiB the broker drops the connection.
max_packet_size 1048576
log_dest file {log_file}
# $SYS each second: the stack's restart waits for the connected clients to return.
sys_interval 1
log_type error
log_type warning
log_type notice
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S

# Services: the hub's own processes only (never expose this listener). Plaintext.
listener {services_port} {services_host}
protocol mqtt
allow_anonymous false
password_file {files.services_passwd}
acl_file {files.services_acl}

# Gateways (home tablets): TLS only. The client id is forced to the user name (the gateway
# id), so a gateway's session is its own whatever client id it sends.
listener {gateway_port} {gateway_host}
protocol mqtt
allow_anonymous false
password_file {files.gateways_passwd}
acl_file {files.gateways_acl}
use_username_as_clientid true
certfile {certfile}
keyfile {keyfile}
tls_version tlsv1.2
"""


def gateway_acl_text() -> str:
    return """# Written by vitalvagt; edits are overwritten. See docs/operations.md.
# Gateway listener: every gateway (user name = gateway id) may publish only under its own
# topics and read only its own command and receipt topics.
pattern write vv/v1/gw/%u/obs
pattern write vv/v1/gw/%u/status
pattern read vv/v1/gw/%u/cmd
pattern read vv/v1/gw/%u/receipt
"""


def services_acl_text() -> str:
    return """# Written by vitalvagt; edits are overwritten. See docs/operations.md.
# Services listener: the hub's own service users. The probe user has no rights at all.
user vv-ingest
topic read vv/v1/gw/+/obs
topic read vv/v1/gw/+/status
topic read $share/ingest/vv/v1/gw/+/obs
topic write vv/v1/gw/+/receipt

user vv-alerts
topic read vv/v1/gw/+/status
topic write vv/v1/gw/+/cmd

user vv-api
topic read vv/v1/gw/+/status
topic write vv/v1/gw/+/cmd

# The load simulator publishes for its provisioned homes with their own credentials (on the
# gateway listener); this user only watches the traffic it produced (tests and fleet checks).
user vv-sim
topic read vv/v1/gw/+/obs
topic read vv/v1/gw/+/status
topic read $SYS/broker/clients/connected
"""


def services_password_lines(service_passwords: dict[str, str]) -> str:
    """The services listener's password file: service users only."""
    for user in service_passwords:
        if not is_service_user(user):
            raise BrokerConfigError(
                f"{user!r} is not a service user name ({SERVICE_PREFIX}*); gateways belong in"
                " the gateway listener's password file"
            )
    lines = [f"{user}:{mosquitto_hash(pw)}" for user, pw in sorted(service_passwords.items())]
    return "\n".join(lines) + "\n"


def gateway_password_lines(gateway_hashes: dict[str, str]) -> str:
    """The gateway listener's password file: gateways only, each once, none in the service
    users' name space (the database refuses such ids; this refuses them again, since a
    gateway there would share its name and client id with a service)."""
    for gw in gateway_hashes:
        check_gateway_id(gw)
    lines = [f"{gw}:{h}" for gw, h in sorted(gateway_hashes.items())]
    return "\n".join(lines) + "\n"


def write_broker_files(
    files: BrokerFiles,
    *,
    conf: str,
    service_passwords: dict[str, str],
    gateway_hashes: dict[str, str],
) -> None:
    """Write the config, both ACLs and both password files (password files mode 600).

    Everything is checked before anything is written, so a refused gateway id leaves the
    broker's current files as they were."""
    services = services_password_lines(service_passwords)
    gateways = gateway_password_lines(gateway_hashes)
    clash = set(service_passwords) & set(gateway_hashes)
    if clash:  # unreachable after the checks above; kept as the last line of defence
        raise BrokerConfigError(f"users both service and gateway: {sorted(clash)}")
    files.dir.mkdir(parents=True, exist_ok=True)
    files.conf.write_text(conf)
    files.services_acl.write_text(services_acl_text())
    files.gateways_acl.write_text(gateway_acl_text())
    for path, text in ((files.services_passwd, services), (files.gateways_passwd, gateways)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # mosquitto never reads a half-written file when it starts
