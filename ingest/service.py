"""`vitalvagt ingest run`: MQTT shared subscription to TimescaleDB, exactly once.

- MQTT 5, persistent session (clean start off, session expiry), shared subscription
  ``$share/ingest/vv/v1/gw/+/obs``: readings queue in the broker while ingest is down, and
  several ingest processes split the load.
- Manual acknowledgement (paho 2.x ``manual_ack``): a message is acknowledged only after the
  transaction that stored it (or its dead letter) committed. A crash loses nothing; the
  broker redelivers, and the stable id stores each reading once.
- Back-pressure: the CONNECT's Receive Maximum bounds the unacknowledged messages the broker
  sends us, so memory is bounded while the database is slow or down; the batch is retried
  with back-off until it commits.
- Two stages: a decoder thread runs the wire checks (pure CPU) on the next batch while the
  writer (the caller's thread) waits for the database to store the previous one, so
  Python's work and PostgreSQL's overlap on two cores. At most two decoded batches wait.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.errors import DatabaseUnavailable, IngestError, StorageRefused
from ingest.metrics import Metrics
from ingest.store import (
    Accepted,
    Decoded,
    GatewayDirectory,
    Message,
    Rejected,
    Store,
    WriteResult,
    decode_message,
    resolve,
)
from vitalvagt.retry import Backoff

log = logging.getLogger(__name__)

SHARED_TOPIC = "$share/ingest/vv/v1/gw/+/obs"
SESSION_EXPIRY_S = 24 * 3600
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class IngestConfig:
    database_url: str
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str
    client_id: str = "vv-ingest-1"
    batch_max_rows: int = 5000
    batch_max_age_s: float = 0.05
    receive_maximum: int = 1000  # unacknowledged messages the broker may send us
    tls_ca: str | None = None
    end_session_on_stop: bool = False  # for an instance being retired: drop its queued share


class IngestService:
    """Runs until ``stop()``; ``run()`` blocks (the writer runs in the caller's thread)."""

    def __init__(self, config: IngestConfig, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._inbox: queue.Queue[Message] = queue.Queue(maxsize=config.receive_maximum * 2)
        self._decoded: queue.Queue[list[Decoded | Rejected]] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None
        self._directory = GatewayDirectory()
        self.stored_batches = 0

    # --- MQTT (paho's thread) -----------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("ingest %s: broker refused the connection: %s", self.config.client_id, reason)
            return
        client.subscribe(SHARED_TOPIC, qos=1)
        self._connected.set()
        log.info("ingest %s: connected, subscribed to %s", self.config.client_id, SHARED_TOPIC)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("ingest %s: disconnected (%s); reconnecting", self.config.client_id, reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.metrics.messages_in.inc()
        # Blocks paho's thread when full; Receive Maximum keeps that from happening.
        self._inbox.put(Message(msg.topic, msg.payload, datetime.now(UTC), msg.mid))

    def _connect(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5,
            manual_ack=True,
        )  # fmt: skip
        client.username_pw_set(cfg.mqtt_username, cfg.mqtt_password)
        if cfg.tls_ca:
            client.tls_set(ca_certs=cfg.tls_ca)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = cfg.receive_maximum
        client.connect_async(cfg.mqtt_host, cfg.mqtt_port, 30, clean_start=False, properties=props)
        client.loop_start()
        return client

    # --- the writer (caller's thread) ---------------------------------------------------
    def _collect(self) -> list[Message]:
        cfg = self.config
        try:
            first = self._inbox.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        rows = first.payload.count(b'"kind"')  # cheap size estimate for batching
        deadline = time.monotonic() + cfg.batch_max_age_s
        while rows < cfg.batch_max_rows:
            left = deadline - time.monotonic()
            try:
                msg = self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            batch.append(msg)
            rows += msg.payload.count(b'"kind"')
        return batch

    def _decode_loop(self) -> None:
        """The decoder stage: batches from the inbox, wire-checked, to the writer."""
        try:
            self._decode_batches()
        except Exception:  # the writer notices the thread is gone and stops the service
            log.exception("ingest %s: the decoder stopped", self.config.client_id)

    def _decode_batches(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            outcomes: list[Decoded | Rejected] = []
            for msg in batch:
                try:
                    outcomes.append(decode_message(msg))
                except Exception as exc:  # a bug, not bad input: keep the message, say why
                    log.exception("ingest: decoding a message on %s failed", msg.topic)
                    reason = f"internal_error: decoding failed ({exc!r}); replay after the fix"
                    outcomes.append(Rejected(msg, None, "internal_error", reason))
            while not self._stop.is_set():
                try:
                    self._decoded.put(outcomes, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def _store(self, store: Store, outcomes: list[Decoded | Rejected]) -> None:
        backoff = Backoff(initial_s=0.5, max_s=30)
        while True:
            t0 = time.perf_counter()
            try:
                if store._conn is None:
                    store.open()
                accepted: list[Accepted] = []
                rejected: list[Rejected] = []
                for outcome in outcomes:
                    checked = resolve(outcome, self._directory, store.conn)
                    (accepted if isinstance(checked, Accepted) else rejected).append(checked)
                try:
                    result = store.write(accepted, rejected)
                except StorageRefused as exc:
                    # Refused, not unavailable: retrying the batch would refuse it forever
                    # and hold up every message behind it. Find the message(s) it refuses.
                    log.error("ingest batch of %d: the database refused it (%s); storing its"
                              " messages one by one", len(outcomes), exc)  # fmt: skip
                    result = self._write_one_by_one(store, accepted, rejected)
            except (DatabaseUnavailable, psycopg.OperationalError) as exc:
                store.close()
                delay = backoff.next_delay()
                self.metrics.db_retries.inc()
                log.warning("ingest batch of %d: %s; retrying in %.1fs", len(outcomes), exc, delay)
                if self._stop.wait(delay):
                    raise IngestError("stopped while the database was unavailable") from exc
                continue
            self.metrics.record_batch(result, time.perf_counter() - t0, rejected)
            self.stored_batches += 1
            for r in rejected:
                log.warning("gateway %s: dead letter %s: %s", r.gateway_id, r.code, r.reason)
            return

    @staticmethod
    def _write_one_by_one(
        store: Store, accepted: list[Accepted], rejected: list[Rejected]
    ) -> WriteResult:
        """Each message in its own transaction; one the database refuses becomes a dead letter
        with the database's reason (appended to ``rejected``)."""
        result = WriteResult()
        for a in accepted:
            try:
                part = store.write([a], [])
            except StorageRefused as exc:
                rejected.append(Rejected(a.message, a.gateway_id, "storage_refused", exc.reason))
                continue
            result.inserted += part.inserted
            result.duplicates += part.duplicates
            result.patients |= part.patients
        result.dead_letters = store.write([], rejected).dead_letters
        return result

    def _ack(self, outcomes: list[Decoded | Rejected]) -> None:
        client = self._client
        assert client is not None
        for outcome in outcomes:
            client.ack(outcome.message.mid, 1)

    def run(self) -> None:
        # The writer waits on PostgreSQL several times a batch; with the default 5 ms switch
        # interval it then waits that long for the decoder to release the GIL (a convoy).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._client = self._connect()
        decoder = threading.Thread(
            target=self._decode_loop, name=f"{self.config.client_id}-decoder", daemon=True
        )
        decoder.start()
        try:
            with Store(self.config.database_url) as store:
                while not self._stop.is_set():
                    try:
                        outcomes = self._decoded.get(timeout=0.5)
                    except queue.Empty:
                        if not decoder.is_alive() and not self._stop.is_set():
                            # Not a stall to sit out: exit so the service manager restarts us;
                            # the unacknowledged messages come again.
                            raise IngestError(
                                "the decoder thread stopped; see the log above"
                            ) from None
                        self.metrics.oldest_unacked_s.set(0)
                        continue
                    self.metrics.oldest_unacked_s.set(
                        (datetime.now(UTC) - outcomes[0].message.received_at).total_seconds()
                    )
                    try:
                        self._store(store, outcomes)
                    except IngestError:
                        break  # stopping: unacknowledged messages are redelivered later
                    self._ack(outcomes)
        finally:
            self._stop.set()
            decoder.join(5)
            props = None
            if self.config.end_session_on_stop:
                props = Properties(PacketTypes.DISCONNECT)
                props.SessionExpiryInterval = 0
            self._client.disconnect(properties=props)
            self._client.loop_stop()

    def stop(self) -> None:
        self._stop.set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)


def default_client_id() -> str:
    return f"vv-ingest-{uuid.uuid4().hex[:8]}"
