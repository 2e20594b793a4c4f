"""What the stack needs of the running broker process beyond its files: room for its
connections (the open-file limit) and how many clients it has connected (a restart waits
for them to come back; vitalvagt/stack.py, ``Stack.reload_broker``)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from vitalvagt.broker import CLIENTS_CONNECTED_TOPIC
from vitalvagt.mqtt_cleanup import close_leftover_socket

log = logging.getLogger(__name__)


# Every connected gateway holds one of the broker's file descriptors. ``runuser`` (PAM's
# pam_limits) starts mosquitto with a soft limit of 1,024 open files, and at that limit the
# broker cannot accept a connection at all: Debian's build then logs "denied access by tcpd"
# (libwrap cannot open /etc/hosts.allow) and every new client, services included, waits for a
# CONNACK that never comes. A thousand homes plus the hub's services reach it. The broker gets
# up to 65,536 (a municipality's gateways many times over), at most the user's hard limit;
# below 4,096 `stack up` warns.
BROKER_OPEN_FILES = 65536
BROKER_OPEN_FILES_LOW = 4096
# How long a restart of the broker waits for the clients connected before it to return: the
# services come back within 1-2 s (vitalvagt.retry.BROKER_RECONNECT starts at 1 s).
RECONNECT_WAIT_S = 3.0


# Run by sh as the broker's user, after runuser's PAM session has set its limits: raises the
# soft limit up to the hard one (which that user may do; raising the hard limit needs
# CAP_SYS_RESOURCE, which root in a container often lacks), then becomes mosquitto.
WITH_OPEN_FILES = (
    'h=$(ulimit -Hn); if [ "$h" = unlimited ] || [ "$h" -gt {n} ]; then h={n}; fi;'
    ' ulimit -n "$h"; exec "$0" "$@"'
)


def open_files_limit(pid: int) -> int | None:
    """A running process's soft limit of open files, from /proc (None where unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return -1 if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None


def connected_clients(
    login: tuple[str, int, str, str], *, live: bool, at_least: int = 0, timeout_s: float = 3.0
) -> int | None:
    """How many other clients the broker has connected, from its $SYS count (renewed
    every 2 s when it changes). Not ``live``: the retained count, at once (up to a second
    old). ``live``: only counts published from now on, since a retained one may be from
    before a restart, waiting up to ``timeout_s`` for one of ``at_least``. None if the
    broker said nothing."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    counts: list[int] = []

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if live and msg.retain:
            return
        with contextlib.suppress(ValueError):
            # a retained count is from before this client; a live one counts it
            counts.append(int(msg.payload) - (0 if msg.retain else 1))

    host, port, user, password = login
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-stack-count")
    client.username_pw_set(user, password)
    client.on_message = on_message
    deadline = time.monotonic() + timeout_s
    try:
        client.connect(host, port, keepalive=5)
        client.subscribe(CLIENTS_CONNECTED_TOPIC, qos=0)
        while time.monotonic() < deadline:
            client.loop(timeout=0.05)
            if counts and (not live or counts[-1] >= at_least):
                break
    except OSError:
        pass
    finally:
        client.disconnect()
        client.loop(timeout=0)
        close_leftover_socket(client)
    if live and (not counts or counts[-1] < at_least):
        log.warning("stack: %s of %d clients back %.0f s after the broker's restart",
                    counts[-1] if counts else "none", at_least, timeout_s)  # fmt: skip
    return counts[-1] if counts else None
