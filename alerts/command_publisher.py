"""Commands from the hub to one gateway: published with QoS 1 as the service user ``vv-alerts``.

The broker's services ACL lets ``vv-alerts`` write ``vv/v1/gw/+/cmd`` (vitalvagt/broker.py).
``CommandPublisher.publish`` returns once the broker has acknowledged the message (its
PUBACK): the broker then keeps it in the gateway's persistent session until the tablet
comes online (a week, gateway/publisher.py). Anything short of that PUBACK (no broker, the
login or the ACL refused, no answer in ``timeout_s``) raises ``CommandNotPublished``; the
caller keeps the command and publishes it again with the same id, which the tablet ignores
if it already has it.

The connection is opened on the first publish, never in ``__init__``; paho runs its own
network thread (``loop_start``), and the PUBACKs cross back under a condition, keyed by
message id and removed in ``finally`` (design rule 4).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.errors import AlertsError
from vitalvagt.endpoints import MqttEndpoint
from vitalvagt.mqtt_cleanup import client_tls_context, close_leftover_socket
from vitalvagt.retry import BROKER_RECONNECT
from vitalvagt.wire import Command, cmd_topic, encode

log = logging.getLogger(__name__)

SERVICE_USER = "vv-alerts"  # the service user the broker lets publish commands
PUBLISH_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0


class CommandNotPublished(AlertsError):
    """The broker did not acknowledge a command; it is kept and published again later."""

    def __init__(self, gateway_id: str, reason: str) -> None:
        super().__init__(
            f"gateway {gateway_id}: command not published ({reason}); it stays pending and is"
            " sent again on the next run. Check that the broker runs and that the service user"
            f" {SERVICE_USER} may write vv/v1/gw/+/cmd"
        )
        self.gateway_id = gateway_id
        self.reason = reason


class CommandPublisher:
    """Publishes ``Command`` payloads on ``vv/v1/gw/{id}/cmd``; a test's fake subclasses it
    and overrides ``publish``."""

    def __init__(
        self,
        endpoint: Callable[[], MqttEndpoint] | MqttEndpoint,
        *,
        timeout_s: float = PUBLISH_TIMEOUT_S,
        client_id: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self.timeout_s = timeout_s
        self.client_id = client_id or f"{SERVICE_USER}-requests-{uuid.uuid4().hex[:8]}"
        self._client: mqtt.Client | None = None
        self._cond = threading.Condition()
        self._connected = False
        self._connect_failure: str | None = None
        self._acks: dict[int, Any] = {}
        self.published = 0

    # --- paho's thread ------------------------------------------------------------------
    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._cond:
            self._connected = not reason.is_failure
            self._connect_failure = None if self._connected else str(reason)
            self._cond.notify_all()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    # --- the caller's thread ------------------------------------------------------------
    def _open(self, gateway_id: str) -> mqtt.Client:
        if self._client is not None:
            return self._client
        try:
            ep = self._endpoint() if callable(self._endpoint) else self._endpoint
        except Exception as exc:  # a ConfigError: no broker configured or no stack
            raise CommandNotPublished(gateway_id, f"no broker: {exc}") from exc
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)  # fmt: skip
        client.username_pw_set(ep.username, ep.password)
        if ep.tls_ca:
            client.tls_set_context(client_tls_context(ep.tls_ca))
        client.reconnect_delay_set(min_delay=int(BROKER_RECONNECT.initial_s),
                                   max_delay=int(BROKER_RECONNECT.max_s))  # fmt: skip
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._connected, self._connect_failure = False, None
        client.connect_async(ep.host, ep.port, keepalive=30)
        client.loop_start()
        self._client = client
        log.info("commands: connecting to %s:%d as %s", ep.host, ep.port, ep.username)
        return client

    def publish(self, gateway_id: str, command: Command) -> None:
        """Publish ``command`` to ``gateway_id`` with QoS 1; returns after the PUBACK."""
        client = self._open(gateway_id)
        with self._cond:
            up = self._cond.wait_for(lambda: self._connected or self._connect_failure,
                                     timeout=CONNECT_TIMEOUT_S)  # fmt: skip
            failure = self._connect_failure
        if not up or failure:
            self.close()
            raise CommandNotPublished(gateway_id, f"broker refused the login: {failure}"
                                      if failure else "no connection to the broker")  # fmt: skip
        info = client.publish(cmd_topic(gateway_id), encode(command), qos=1)
        try:
            with self._cond:
                acked = self._cond.wait_for(lambda: info.mid in self._acks,
                                            timeout=self.timeout_s)  # fmt: skip
                reason = self._acks.get(info.mid)
        finally:
            with self._cond:
                self._acks.pop(info.mid, None)
        if not acked:
            self.close()  # nothing left queued in paho to arrive later out of order
            raise CommandNotPublished(gateway_id, f"no PUBACK within {self.timeout_s:g} s")
        if reason is not None and getattr(reason, "is_failure", False):
            raise CommandNotPublished(gateway_id, f"broker refused it: {reason}")
        self.published += 1

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()
                close_leftover_socket(client)
