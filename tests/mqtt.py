"""Small synchronous MQTT helpers for tests, on paho-mqtt 2.x with MQTT 5.

Gateways connect to the broker's TLS gateway listener (``connect_gateway`` or ``connect(...,
ca=...)``), services to its plaintext services listener (``connect(port, ...)``)."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.waiting import wait_for
from vitalvagt.mqtt_cleanup import client_tls_context, close_leftover_socket
from vitalvagt.observation import Observation
from vitalvagt.wire import decode_batch, parse_topic

if TYPE_CHECKING:
    from vitalvagt.stack import Stack


@dataclass
class Connected:
    client: mqtt.Client
    reason: ReasonCode
    messages: queue.Queue = field(default_factory=queue.Queue)
    acks: dict[int, ReasonCode] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)
    disconnects: queue.Queue = field(default_factory=queue.Queue)  # reason of each disconnect
    session_present: bool = False  # the broker resumed a stored session (CONNACK)
    subscribes: int = 0  # SUBACKs so far: paho connects again after a broker restart

    def sync_broker_users(self, stack: Any) -> bool:
        """``stack.sync_broker_users`` for a test whose subscriber is connected: a restarted
        broker (Stack.reload_broker) drops it, and what is published before it has
        subscribed again would pass it by."""
        n = self.subscribes
        restarted = bool(stack.sync_broker_users())
        if restarted:
            wait_for(lambda: self.subscribes > n, 20, "the subscriber back after the broker's"
                     " restart", every_s=0.05)  # fmt: skip
        return restarted

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, timeout_s: float = 5
    ) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=qos)
        with self.acked:
            ok = self.acked.wait_for(lambda: info.mid in self.acks, timeout=timeout_s)
        assert ok, f"no PUBACK for {topic} within {timeout_s}s"
        return self.acks.pop(info.mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        close_leftover_socket(self.client)
        # paho closes loop_start's wake-up socketpair only when the client is collected;
        # collected in a cycle, the sockets may go first and warn (an error in this suite)
        for name in ("_sockpairR", "_sockpairW"):
            pair_end = getattr(self.client, name, None)
            if pair_end is not None:
                pair_end.close()
                setattr(self.client, name, None)


def connect(
    port: int,
    username: str | None,
    password: str | None,
    *,
    subscribe: str | None = None,
    timeout_s: float = 5,
    ca: Path | str | None = None,
    client_id: str | None = None,
    clean_start: bool | int = mqtt.MQTT_CLEAN_START_FIRST_ONLY,
    session_expiry_s: int | None = None,
    protocol: int = mqtt.MQTTv5,
) -> Connected:
    """Connect and wait for the CONNACK (``.reason``). ``ca``: TLS, verifying the broker's
    certificate (and host name 127.0.0.1) against that CA file."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
        protocol=protocol,  # type: ignore[arg-type]
    )
    if username is not None:
        client.username_pw_set(username, password)
    if ca is not None:
        client.tls_set_context(client_tls_context(ca))
    result: queue.Queue = queue.Queue()
    conn = Connected(client, ReasonCode(mqtt.PacketTypes.CONNACK, "Success"))

    def on_connect(c, userdata, flags, reason, props):
        conn.session_present = bool(flags.session_present)
        if subscribe and not reason.is_failure:
            c.subscribe(subscribe, qos=1)
        else:
            result.put(reason)

    def on_subscribe(c, userdata, mid, reasons, props):
        conn.subscribes += 1
        result.put(ReasonCode(mqtt.PacketTypes.CONNACK, "Success"))

    def on_message(c, userdata, msg):
        conn.messages.put((msg.topic, msg.payload))

    def on_publish(c, userdata, mid, reason, props):
        with conn.acked:
            conn.acks[mid] = reason
            conn.acked.notify_all()

    def on_disconnect(c, userdata, flags, reason, props):
        conn.disconnects.put(reason)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    # connect_async before loop_start: connect() then loop_start() leaks paho's first socketpair.
    if protocol == mqtt.MQTTv5:
        props = Properties(mqtt.PacketTypes.CONNECT)
        if session_expiry_s:
            props.SessionExpiryInterval = session_expiry_s
        client.connect_async("127.0.0.1", port, clean_start=clean_start, properties=props)
    else:  # MQTT 3.1.1: a clean session, no properties
        client.connect_async("127.0.0.1", port)
    client.loop_start()
    try:
        conn.reason = result.get(timeout=timeout_s)
    except queue.Empty:
        client.disconnect()
        client.loop_stop()
        close_leftover_socket(client)  # e.g. a TLS handshake that failed: paho keeps it
        raise AssertionError("no CONNACK from the broker") from None
    return conn


def end_session(stack: Stack, user: str, client_id: str) -> None:
    """Connect under ``client_id`` with a clean start and no expiry: the broker forgets that
    session and whatever it queued. A session left on ingest's shared subscription would
    otherwise take its share of later tests' readings until it expires."""
    c = connect(stack.settings.mqtt_port, user, stack.secrets()[user], client_id=client_id,
                clean_start=True)  # fmt: skip
    c.close()


def connect_gateway(stack: Stack, gateway_id: str, password: str, **kw) -> Connected:
    """A gateway on the stack's TLS gateway listener, verifying the stack's CA."""
    return connect(
        stack.settings.mqtt_tls_port, gateway_id, password, ca=stack.paths.ca_cert, **kw
    )


def received_observations(
    conn: Connected, enough: Callable[[], bool], *, quiet_s: float = 10
) -> Iterator[tuple[str, Observation]]:
    """(gateway id, observation) of each observation batch received, decoded and checked by
    the wire codec, until ``enough()`` or no message came for ``quiet_s``."""
    while not enough():
        try:
            topic, payload = conn.messages.get(timeout=quiet_s)
        except queue.Empty:
            return
        gateway_id, _ = parse_topic(topic)
        for o in decode_batch(payload, topic_gateway_id=gateway_id).observations:
            yield gateway_id, o
