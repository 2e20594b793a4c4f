"""mosquitto's configuration, ACL and password file, shared by the embedded stack and deploy/.

Each gateway's MQTT user name is its gateway id, so one ACL pattern (``%u``) confines every
gateway to its own topics. Service users (ingest, alerts, api, simulator) are listed by name.
Password hashes use mosquitto's own PBKDF2-SHA512 format, so the hash kept in the
``gateways`` table is exactly the line the broker checks, and the password file can be
rebuilt from the database at any time.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

PBKDF2_ITERATIONS = 1000
SALT_BYTES = 12


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """A password hash in mosquitto 2's ``$7$`` format (PBKDF2-HMAC-SHA512)."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"



def mosquitto_conf(
    *, host: str, port: int, passwd: Path, acl: Path, pid_file: Path, data_dir: Path, log_file: Path
) -> str:
    return f"""# Written by `vitalvagt stack up`; edits are overwritten. See docs/operations.md.
per_listener_settings false
allow_anonymous false
password_file {passwd}
acl_file {acl}
pid_file {pid_file}
listener {port} {host}
protocol mqtt
# Queued QoS 1 messages and persistent sessions survive a broker restart.
persistence true
persistence_location {data_dir}/
autosave_interval 30
# Up to a day of a busy gateway's backlog per offline persistent session.
max_queued_messages 100000
max_inflight_messages 1000
# Above the wire format's 256 KiB so that ingest sees (and dead-letters) an oversize
# message with its reason; beyond 1 MiB the broker drops the connection.
max_packet_size 1048576
log_dest file {log_file}
log_type error
log_type warning
log_type notice
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


def acl_text() -> str:
    return """# Written by `vitalvagt stack up`; edits are overwritten. See docs/operations.md.
# Every gateway (user name = gateway id) may publish only under its own topics and read
# only its own command topic.
pattern write vv/v1/gw/%u/obs
pattern write vv/v1/gw/%u/status
pattern read vv/v1/gw/%u/cmd

user vv-ingest
topic read vv/v1/gw/+/obs
topic read vv/v1/gw/+/status
topic read $share/ingest/vv/v1/gw/+/obs

user vv-alerts
topic read vv/v1/gw/+/status
topic write vv/v1/gw/+/cmd

user vv-api
topic read vv/v1/gw/+/status
topic write vv/v1/gw/+/cmd

# The load simulator publishes for its provisioned homes with their own credentials; this
# user only watches the traffic it produced (tests and fleet checks).
user vv-sim
topic read vv/v1/gw/+/obs
topic read vv/v1/gw/+/status
"""


def password_lines(service_passwords: dict[str, str], gateway_hashes: dict[str, str]) -> str:
    lines = [f"{user}:{mosquitto_hash(pw)}" for user, pw in sorted(service_passwords.items())]
    lines += [f"{gw}:{h}" for gw, h in sorted(gateway_hashes.items())]
    return "\n".join(lines) + "\n"
