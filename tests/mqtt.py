"""Small synchronous MQTT helpers for tests, on paho-mqtt 2.x with MQTT 5."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from vitalvagt.observation import Observation
from vitalvagt.wire import decode_batch, parse_topic


@dataclass
class Connected:
    client: mqtt.Client
    reason: ReasonCode
    messages: queue.Queue = field(default_factory=queue.Queue)
    acks: dict[int, ReasonCode] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)

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


def connect(
    port: int,
    username: str | None,
    password: str | None,
    *,
    subscribe: str | None = None,
    timeout_s: float = 5,
) -> Connected:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    if username is not None:
        client.username_pw_set(username, password)
    result: queue.Queue = queue.Queue()
    conn = Connected(client, ReasonCode(mqtt.PacketTypes.CONNACK, "Success"))

    def on_connect(c, userdata, flags, reason, props):
        if subscribe and not reason.is_failure:
            c.subscribe(subscribe, qos=1)
        else:
            result.put(reason)

    def on_subscribe(c, userdata, mid, reasons, props):
        result.put(ReasonCode(mqtt.PacketTypes.CONNACK, "Success"))

    def on_message(c, userdata, msg):
        conn.messages.put((msg.topic, msg.payload))

    def on_publish(c, userdata, mid, reason, props):
        with conn.acked:
            conn.acks[mid] = reason
            conn.acked.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    # connect_async before loop_start: connect() then loop_start() leaks paho's first socketpair.
    client.connect_async("127.0.0.1", port)
    client.loop_start()
    try:
        conn.reason = result.get(timeout=timeout_s)
    except queue.Empty:
        client.loop_stop()
        raise AssertionError("no CONNACK from the broker") from None
    return conn


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
