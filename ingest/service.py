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
- Receipts: after the commit, each gateway whose messages carried a ``batch_id`` gets a
  receipt on ``vv/v1/gw/{id}/receipt`` naming those batches (stored, or kept as a dead
  letter); only then does the gateway delete them from its outbox. A broker that crashes
  with acknowledged messages queued loses nothing: the gateway sends them again.
- No input stops ingest: a batch the database refuses is stored message by message, a dead
  letter it refuses is kept in a reduced form, and only a signal (``stop()``) ends ``run``;
  any other end raises with its reason.
- Gateway status (``vv/v1/gw/+/status``, retained, last wills) goes its own way from
  ``_on_message``: a plain subscription and a thread of its own (ingest/status.py).
- Retained messages on obs topics are not readings: the broker replays them to every new
  subscriber. They are acknowledged and ignored (counted); the live delivery, which is not
  flagged retained, was handled when it was published.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.bounds import DeadLetterBudget, DeadLetterLimits
from ingest.errors import DatabaseUnavailable, IngestError, StorageRefused
from ingest.messages import Accepted, Decoded, Message, Rejected, decode_message, parse_gateway
from ingest.metrics import Metrics
from ingest.registry import GatewayDirectory, check_registry
from ingest.status import STATUS_TOPIC, StatusWriter
from ingest.store import Store, WriteResult
from vitalvagt.db.connect import Outage
from vitalvagt.logs import Throttle
from vitalvagt.mqtt_cleanup import client_tls_context, close_leftover_socket
from vitalvagt.retry import BROKER_RECONNECT
from vitalvagt.wire import (
    MAX_RECEIPT_BATCHES,
    Receipt,
    ReceiptItem,
    ReceiptOutcome,
    encode,
    receipt_topic,
)

log = logging.getLogger(__name__)

SHARED_TOPIC = "$share/ingest/vv/v1/gw/+/obs"
SESSION_EXPIRY_S = 24 * 3600
SWITCH_INTERVAL_S = 0.0005
IDLE_DB_CHECK_S = 10.0  # an idle ingest still notices a database outage
# /healthz turns 503 (docs/operations.md) when any of these lasts longer:
HEALTH_DB_DOWN_S = 30.0
HEALTH_MQTT_DOWN_S = 30.0
HEALTH_OLDEST_UNACKED_S = 60.0


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
    # How long the broker keeps this instance's session (and queues its share) while it is
    # away; a session left behind keeps taking a share of new readings until then.
    session_expiry_s: int = SESSION_EXPIRY_S
    dead_letter_limits: DeadLetterLimits = field(default_factory=DeadLetterLimits)


class _Stopping(Exception):
    """stop() was called while a batch waited for the database (not an error)."""


class IngestService:
    """Runs until ``stop()``; ``run()`` blocks (the writer runs in the caller's thread)."""

    def __init__(self, config: IngestConfig, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._inbox: queue.Queue[Message] = queue.Queue(maxsize=config.receive_maximum * 2)
        self._decoded: queue.Queue[list[Decoded | Rejected]] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.connects = 0  # connections made (and subscribed) so far: a reconnect counts
        self._client: mqtt.Client | None = None
        self._directory = GatewayDirectory()
        self._budget = DeadLetterBudget(config.dead_letter_limits)
        self._throttle = Throttle(per_interval=5, interval_s=60)
        self.stored_batches = 0
        self.status = StatusWriter(config.database_url, self._ack_status,
                                   limits=config.dead_letter_limits,
                                   maxsize=config.receive_maximum)  # fmt: skip
        # For /healthz: monotonic times, None while all is well.
        self._pending_since: float | None = None  # the batch being stored was received then
        self._db_outage = Outage()
        self._mqtt_down_since: float | None = time.monotonic()
        # Computed when scraped: the age grows while a batch waits for the database.
        self.metrics.oldest_unacked_s.set_function(self._oldest_unacked_s)

    # --- MQTT (paho's thread) -----------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("ingest %s: broker refused the connection: %s", self.config.client_id, reason)
            return
        client.subscribe(SHARED_TOPIC, qos=1)
        # Plain, so retained states come (status.py); at QoS 0, so a status message never
        # takes a place in the Receive Maximum window that the readings' QoS 1 messages
        # need while the status thread writes: a lost one comes again, retained, on the
        # next subscribe.
        client.subscribe(STATUS_TOPIC, qos=0)
        self._mqtt_down_since = None
        self.connects += 1
        self._connected.set()
        log.info("ingest %s: connected, subscribed to %s", self.config.client_id, SHARED_TOPIC)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if self._mqtt_down_since is None:
            self._mqtt_down_since = time.monotonic()
        if not self._stop.is_set():
            log.warning("ingest %s: disconnected (%s); reconnecting", self.config.client_id, reason)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.metrics.messages_in.inc()
        if msg.topic.endswith("/status"):  # the status path (ingest/status.py)
            self.status.put(Message(msg.topic, msg.payload, datetime.now(UTC), msg.mid),
                            retained=bool(msg.retain))  # fmt: skip
            return
        if msg.retain:
            # A retained message replayed on subscribe: not a new reading (see the module doc).
            self.metrics.retained_ignored.inc()
            client.ack(msg.mid, 1)
            show, held = self._throttle.allow(("retained", msg.topic))
            if show:
                log.warning(
                    "ingest: ignoring a retained message on %s (%d more not logged);"
                    " gateways must not publish observations retained",
                    msg.topic,
                    held,
                )
            return
        # Blocks paho's thread when full; Receive Maximum keeps that from happening.
        self._inbox.put(Message(msg.topic, msg.payload, datetime.now(UTC), msg.mid))

    def _ack_status(self, mid: int) -> None:
        if self._client is not None and mid:  # a QoS 0 message (mid 0) has no PUBACK
            self._client.ack(mid, 1)

    def _connect(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5,
            manual_ack=True,
        )  # fmt: skip
        client.username_pw_set(cfg.mqtt_username, cfg.mqtt_password)
        if cfg.tls_ca:
            client.tls_set_context(client_tls_context(cfg.tls_ca))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(
            min_delay=BROKER_RECONNECT.initial_s, max_delay=BROKER_RECONNECT.max_s
        )
        client.max_inflight_messages_set(1000)  # receipts out, at QoS 1
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
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
                    outcomes.append(self._internal_error(msg, exc))
            while not self._stop.is_set():
                try:
                    self._decoded.put(outcomes, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def _internal_error(self, msg: Message, exc: BaseException) -> Rejected:
        """A fault in the hub's decoder: the message is kept (replayable once fixed). The log
        names the exception type and where it was raised, never its text (which may quote
        the sender's data); rate-limited, since a sender can provoke it at will."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
        show, held = self._throttle.allow(("internal_error", type(exc)))
        if show:
            log.error("ingest: decoding a message on %s failed: %s at %s (%d more not logged)",
                      msg.topic, type(exc).__name__, where, held)  # fmt: skip
        name = parse_gateway(msg.topic)
        reason = f"internal_error: decoding failed ({type(exc).__name__}); replay after the fix"
        return Rejected(msg, name, "internal_error", reason)

    def _store(self, store: Store, outcomes: list[Decoded | Rejected]) -> list[Accepted | Rejected]:
        """Store one batch, waiting out a database outage; returns each message's fate, for
        the receipts. Raises only _Stopping (stop() was called meanwhile)."""
        while True:
            t0 = time.perf_counter()
            try:
                if store._conn is None:
                    store.open()
                self._budget.maybe_refresh(store.conn)
                accepted: list[Accepted] = []
                rejected: list[Rejected] = []
                for outcome in outcomes:
                    checked = check_registry(outcome, self._directory, store.conn)
                    (accepted if isinstance(checked, Accepted) else rejected).append(checked)
                try:
                    kept, capped = self._budget.split(rejected)
                    result = store.write(accepted, kept, capped)
                    stored = accepted
                except StorageRefused as exc:
                    # Refused, not unavailable: retrying the batch would refuse it forever
                    # and hold up every message behind it. Find the message(s) it refuses.
                    log.error("ingest batch of %d: the database refused it (%s); storing its"
                              " messages one by one", len(outcomes), exc)  # fmt: skip
                    result, stored, kept, capped = self._write_one_by_one(store, accepted, rejected)
            except (DatabaseUnavailable, psycopg.OperationalError) as exc:
                store.close()
                delay = self._db_outage.failed(exc)
                self.metrics.db_retries.inc()
                log.warning("ingest batch of %d: %s; retrying in %.1fs", len(outcomes), exc, delay)
                if self._stop.wait(delay):
                    raise _Stopping from exc
                continue
            self._db_outage.recovered()
            self._budget.record(kept)
            self.metrics.record_batch(result, time.perf_counter() - t0, kept)
            self.stored_batches += 1
            self._log_dead_letters(kept, capped)
            return [*stored, *rejected]

    def _log_dead_letters(self, kept: list[Rejected], capped: list[Rejected]) -> None:
        for r in kept:
            show, held = self._throttle.allow(("dead_letter", r.gateway_id))
            if show:
                log.warning("gateway %s: dead letter %s (%d more not logged): %s",
                            r.gateway_id, r.code, held, r.reason)  # fmt: skip
        for r in capped:
            self.metrics.dead_letters_capped.labels(r.code).inc()
            show, held = self._throttle.allow(("capped", r.gateway_id))
            if show:
                log.error("gateway %s: over its dead-letter cap; %s counted, not kept"
                          " (%d more not logged)", r.gateway_id, r.code, held)  # fmt: skip

    def _write_one_by_one(
        self, store: Store, accepted: list[Accepted], rejected: list[Rejected]
    ) -> tuple[WriteResult, list[Accepted], list[Rejected], list[Rejected]]:
        """Each message in its own transaction; one the database refuses becomes a dead letter
        with the database's reason (appended to ``rejected``). A dead letter the database
        refuses too is kept reduced (``_keep_reduced``): nothing stops ingest. Returns what
        was written, the messages stored, the dead letters kept and those only counted."""
        result, stored = WriteResult(), []
        for a in accepted:
            try:
                part = store.write([a], [])
            except StorageRefused as exc:
                rejected.append(Rejected(a.message, a.gateway_id, "storage_refused", exc.reason))
                continue
            stored.append(a)
            result.inserted += part.inserted
            result.duplicates += part.duplicates
            result.patients |= part.patients
        kept, capped = self._budget.split(rejected)
        try:
            result.dead_letters = store.write([], kept, capped).dead_letters
        except StorageRefused:
            for r in kept:
                result.dead_letters += self._keep_reduced(store, r)
            store.write([], [], capped)
        return result, stored, kept, capped

    @staticmethod
    def _keep_reduced(store: Store, r: Rejected) -> int:
        """A dead letter the database refused: keep its payload (bytea takes any bytes) under
        a reason and topic of the hub's own, so that it is not lost."""
        reduced = Rejected(
            Message("(topic not storable)", r.message.payload, r.message.received_at),
            r.gateway_id, r.code, f"{r.code}: kept reduced; the database refused its details",
        )  # fmt: skip
        try:
            return store.write([], [reduced]).dead_letters
        except StorageRefused as exc:
            log.error("gateway %s: a dead letter %s could not be kept (%s)", r.gateway_id,
                      r.code, exc)  # fmt: skip
            return 0

    def _send_receipts(self, outcomes: list[Accepted | Rejected]) -> None:
        """After the commit: tell each gateway which of its batches the hub now holds."""
        client = self._client
        if client is None:
            return
        per_gateway: dict[str, list[ReceiptItem]] = {}
        for o in outcomes:
            batch_id, gw = o.batch_id, o.gateway_id
            if batch_id is None or gw is None:
                continue  # a gateway that asks for no receipts, or a topic that did not parse
            if isinstance(o, Accepted):
                item = ReceiptItem(batch_id=batch_id, outcome=ReceiptOutcome.STORED,
                                   readings=len(o.rows))  # fmt: skip
            else:
                item = ReceiptItem(batch_id=batch_id, outcome=ReceiptOutcome.DEAD_LETTER,
                                   code=o.code)  # fmt: skip
            per_gateway.setdefault(gw, []).append(item)
        now = datetime.now(UTC)
        for gw, items in per_gateway.items():
            for i in range(0, len(items), MAX_RECEIPT_BATCHES):
                receipt = Receipt(gateway_id=gw, at=now,
                                  batches=tuple(items[i : i + MAX_RECEIPT_BATCHES]))  # fmt: skip
                client.publish(receipt_topic(gw), encode(receipt), qos=1)
                self.metrics.receipts_sent.inc()

    def _ack(self, outcomes: list[Decoded | Rejected]) -> None:
        client = self._client
        assert client is not None
        for outcome in outcomes:
            client.ack(outcome.message.mid, 1)

    def run(self) -> None:
        """Until ``stop()``. Any other end raises IngestError with its reason (the command
        then exits non-zero); bad input never ends it."""
        # The writer waits on PostgreSQL several times a batch; with the default 5 ms switch
        # interval it then waits that long for the decoder to release the GIL (a convoy).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.status.start(f"{self.config.client_id}-status")
        self._client = self._connect()
        decoder = threading.Thread(
            target=self._decode_loop, name=f"{self.config.client_id}-decoder", daemon=True
        )
        decoder.start()
        idle_since = time.monotonic()
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
                        if time.monotonic() - idle_since >= IDLE_DB_CHECK_S:
                            idle_since = time.monotonic()
                            self._check_database(store)
                        continue
                    self._pending_since = time.monotonic() - max(
                        0.0, (datetime.now(UTC) - outcomes[0].message.received_at).total_seconds()
                    )
                    try:
                        fates = self._store(store, outcomes)
                    except _Stopping:
                        break  # unacknowledged messages are redelivered later
                    self._send_receipts(fates)
                    self._ack(outcomes)
                    self._pending_since = None
                    idle_since = time.monotonic()
        finally:
            self._stop.set()
            decoder.join(5)
            self.status.stop()
            props = None
            if self.config.end_session_on_stop:
                props = Properties(PacketTypes.DISCONNECT)
                props.SessionExpiryInterval = 0
            self._client.disconnect(properties=props)
            self._client.loop_stop()
            close_leftover_socket(self._client)

    def stop(self) -> None:
        self._stop.set()

    def _check_database(self, store: Store) -> None:
        try:
            if store._conn is None:
                store.open()
            store.conn.execute("SELECT 1")
        except (DatabaseUnavailable, psycopg.Error) as exc:
            store.close()
            self._db_outage.failed(exc)
            log.warning("ingest %s: the database is unreachable: %s", self.config.client_id,
                        self._db_outage.error)  # fmt: skip
        else:
            self._db_outage.recovered()

    def _oldest_unacked_s(self) -> float:
        since = self._pending_since
        return time.monotonic() - since if since is not None else 0.0

    def health(self) -> dict[str, Any]:
        """For /healthz: healthy, and each reason it is not (docs/operations.md)."""
        now = time.monotonic()
        oldest = self._oldest_unacked_s()
        db_down = self._db_outage.down_for_s
        mqtt_down = now - self._mqtt_down_since if self._mqtt_down_since is not None else 0.0
        problems = []
        if db_down > HEALTH_DB_DOWN_S:
            problems.append(f"database unreachable for {db_down:.0f} s: {self._db_outage.error}")
        if mqtt_down > HEALTH_MQTT_DOWN_S:
            problems.append(f"broker unreachable for {mqtt_down:.0f} s")
        if oldest > HEALTH_OLDEST_UNACKED_S:
            problems.append(f"a message has waited {oldest:.0f} s to be stored")
        return {
            "healthy": not problems,
            "problems": problems,
            "mqtt_connected": self._connected.is_set(),
            "mqtt_connects": self.connects,
            "database_reachable": not self._db_outage.down,
            "oldest_unacked_s": round(oldest, 3),
            "batches_stored": self.stored_batches,
        }

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)


def default_client_id() -> str:
    return f"vv-ingest-{uuid.uuid4().hex[:8]}"
