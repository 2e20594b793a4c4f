"""Publishes the outbox over MQTT 5 with paho-mqtt 2.x, and receives the hub's commands.

- End-to-end receipts: each message carries a ``batch_id`` (``<epoch>:<first seq>-<last
  seq>``, the epoch new for each process) and a reading leaves the outbox only when the hub's
  receipt for its batch arrives on ``vv/v1/gw/{id}/receipt``, i.e. after ingest committed it
  (or kept it as a dead letter). The PUBACK only says the broker has it, and a broker that
  crashes before ingest took its queue loses it: a batch with no receipt within
  ``receipt_timeout_s`` of its PUBACK (doubling after each time-out, up to 16 times, reset by
  the next receipt) is sent again, and at once when the broker lost our session. The hub
  stores a reading sent twice once, by its stable id. ``receipts=False`` is the old contract
  (PUBACK is enough), for a hub without receipts.
- At most ``max_inflight`` messages not yet confirmed (sent and awaiting their PUBACK or
  their receipt), so that the hub is never sent more than that ahead of what it committed,
  and about ``max_inflight_bytes`` of payload awaiting its PUBACK: paho holds each payload
  until then (after it, only the seq range is kept), and the byte bound keeps a replay after
  days offline inside a tablet's memory. Never above 65,535 messages, paho's message-id
  space; while catching up, up to ``batch_size`` readings go in one message.
- paho reconnects with back-off by itself and resends its in-flight messages in order; a
  restarted process resends everything still in the outbox (the stable id de-duplicates).
- The status topic is retained: "online" on connect (with the paired devices and their
  battery levels, ``status_devices``; ``publish_status`` sends it again when they changed,
  gateway/battery.py decides when), "offline" as the last will.

paho calls back from its own thread; everything crosses into asyncio with
``call_soon_threadsafe`` (design rule 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from gateway.errors import GatewayError
from gateway.outbox import Outbox, Run
from vitalvagt.mqtt_cleanup import client_tls_context, close_leftover_socket
from vitalvagt.retry import BROKER_RECONNECT, BROKER_REFUSAL
from vitalvagt.wire import (
    MAX_PAYLOAD_BYTES,
    WIRE_VERSION,
    Command,
    GatewayState,
    GatewayStatus,
    ObservationBatch,
    Receipt,
    ReceiptOutcome,
    StatusDevice,
    cmd_topic,
    encode,
    obs_topic,
    receipt_topic,
    status_topic,
)

log = logging.getLogger(__name__)

MQTT_MAX_INFLIGHT = 65_535
ACK_FLUSH_ROWS = 5000
ACK_FLUSH_S = 0.25
# Readings read from the outbox at a time (about 2.5 MB): a replay after days offline must
# not hold the whole backlog in memory on a tablet with an 80 MB budget.
READ_MAX_READINGS = 10_000
SESSION_EXPIRY_S = 7 * 24 * 3600  # commands wait a week for a tablet that is off
MAX_RECEIPT_BACKOFF = 16  # the receipt time-out grows to at most 16 times its setting


@dataclass(frozen=True)
class BrokerConfig:
    host: str
    port: int
    gateway_id: str
    password: str
    tls_ca: Path | None = None
    keepalive_s: int = 30
    max_inflight: int = 1000
    max_inflight_bytes: int = 4 * 1024 * 1024
    batch_size: int = 100
    software: str = "vitalvagt-gateway 0.1.0"
    username: str | None = None  # the broker user; the gateway id unless configured otherwise
    receipts: bool = True  # delete a reading on the hub's receipt, not on the PUBACK
    receipt_timeout_s: float = 60.0  # after the PUBACK; then the batch is sent again


_NO_OBSERVATIONS = b'"observations":[]'


def batch_payload(
    gateway_id: str, observations_json: bytes, sent_at: datetime, batch_id: str | None = None
) -> bytes:
    """An observation batch around already-serialised, comma-separated observations (the
    outbox stores them so: no re-encoding per send).

    The envelope is the wire module's ``ObservationBatch``, encoded by ``wire.encode`` with
    no observations (built unvalidated: a batch needs at least one), whose empty list then
    receives the stored ones. So the version, field names and time format are the wire
    module's, and the hub's ``decode_batch`` reads it as ``make_batch`` would have built it.
    """
    envelope = ObservationBatch.model_construct(
        v=WIRE_VERSION,
        gateway_id=gateway_id,
        sent_at=sent_at.astimezone(UTC),
        observations=(),
        batch_id=batch_id or None,
    )
    head, tail = encode(envelope).split(_NO_OBSERVATIONS, 1)
    return b"".join((head, b'"observations":[', observations_json, b"]", tail))


@dataclass(frozen=True, slots=True)
class ReceivedByHub:
    """What the tablet shows the patient: the hub has these readings (its receipt)."""

    readings: int
    at: datetime  # when the hub committed them
    refused_code: str | None = None  # set when the hub kept them as a dead letter


class Publisher:
    """An async context manager: ``async with Publisher(cfg, outbox) as pub: pub.wake()``."""

    def __init__(
        self,
        config: BrokerConfig,
        outbox: Outbox,
        *,
        on_command: Callable[[Command], None] | None = None,
        on_receipt: Callable[[ReceivedByHub], None] | None = None,
        status_devices: Callable[[], Sequence[StatusDevice]] | None = None,
    ) -> None:
        if not 1 <= config.max_inflight <= MQTT_MAX_INFLIGHT:
            raise GatewayError(
                f"max_inflight must be 1-{MQTT_MAX_INFLIGHT}, not {config.max_inflight}"
            )
        self.config = config
        self.outbox = outbox
        self.on_command = on_command
        self.on_receipt = on_receipt
        self.status_devices = status_devices  # listed in online statuses (on the loop)
        self._closing = False
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: dict[int, tuple[int, int, int]] = {}  # mid -> (seq lo, seq hi, bytes)
        # Acknowledged by the broker, awaiting the hub's receipt: batch id -> (lo, hi, loop
        # time of the time-out). In order of their PUBACKs.
        self._awaiting: dict[str, tuple[int, int, float]] = {}
        self._inflight_bytes = 0  # payload that paho holds (awaiting its PUBACK)
        self._epoch = uuid.uuid4().hex[:8]
        # Receipts that overtook their PUBACK (the hub was faster than paho's callback).
        self._receipted_early: set[str] = set()
        self._receipt_backoff = 1
        self._acked: list[tuple[int, int]] = []
        self._acked_rows = 0
        self._flushed_at = 0.0
        self._last_handed = 0  # highest outbox seq handed to paho in this process
        self.published_messages = 0
        self.acked_readings = 0
        self.refused_messages = 0
        self.receipted_readings = 0
        self.resent_batches = 0
        self.last_receipt: ReceivedByHub | None = None
        self._refusal_backoff = BROKER_REFUSAL.backoff()
        self._resume_at = 0.0  # loop time before which nothing is handed after a refusal

    # --- life cycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Publisher:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"vv-gw-{cfg.gateway_id}", protocol=mqtt.MQTTv5
        )
        client.username_pw_set(cfg.username or cfg.gateway_id, cfg.password)
        if cfg.tls_ca:
            client.tls_set_context(client_tls_context(cfg.tls_ca))
        client.will_set(status_topic(cfg.gateway_id), self._status(GatewayState.OFFLINE), 1, True)
        client.max_inflight_messages_set(cfg.max_inflight)
        # The outbox is the queue: only `max_inflight` messages are ever handed to paho.
        client.reconnect_delay_set(
            min_delay=BROKER_RECONNECT.initial_s, max_delay=BROKER_RECONNECT.max_s
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client = client
        client.connect_async(
            cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props
        )
        client.loop_start()
        self._task = asyncio.create_task(self._pump(), name=f"publisher-{cfg.gateway_id}")

    async def close(self) -> None:
        self._closing = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client:
            if self._connected.is_set():
                info = self._client.publish(
                    status_topic(self.config.gateway_id),
                    self._status(GatewayState.OFFLINE),
                    1,
                    True,
                )
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(info.wait_for_publish, 2)
            self._client.disconnect()
            self._client.loop_stop()
            close_leftover_socket(self._client)
        self._flush_acks(force=True)

    def wake(self) -> None:
        """New readings are in the outbox."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def inflight(self) -> int:
        """Messages sent and not yet confirmed (by PUBACK, or by receipt where receipts are on)."""
        return len(self._inflight) + len(self._awaiting)

    # --- paho callbacks (paho's thread) -------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error(
                "gateway %s: broker refused the connection: %s", self.config.gateway_id, reason
            )
            return
        client.subscribe(cmd_topic(self.config.gateway_id), qos=1)
        if self.config.receipts:
            client.subscribe(receipt_topic(self.config.gateway_id), qos=1)
            if not _f.session_present:
                # The broker lost our session, so it may have lost what it queued for ingest
                # too: send everything not yet receipted again now, not after the time-out.
                self._call(self._resend_unconfirmed, "the broker lost its session")
        # Built on the loop, where the outbox and the battery levels live.
        self._call(self._publish_online)
        log.info(
            "gateway %s: connected to %s:%d",
            self.config.gateway_id,
            self.config.host,
            self.config.port,
        )
        self._call(self._connected.set)
        self._call(self._wake.set)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        log.warning(
            "gateway %s: disconnected (%s); paho reconnects", self.config.gateway_id, reason
        )
        self._call(self._connected.clear)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self._call(self._settle, mid, bool(reason.is_failure), str(reason))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/receipt"):
            try:
                receipt = Receipt.model_validate_json(msg.payload)
            except ValidationError as exc:
                log.error("gateway %s: ignoring a malformed receipt (%d errors)",
                          self.config.gateway_id, exc.error_count())  # fmt: skip
                return
            self._call(self._on_hub_receipt, receipt)
            return
        try:
            command = Command.model_validate_json(msg.payload)
        except ValidationError as exc:
            # Names the fields only: a command's text is for the patient and may name them.
            fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
            log.error("gateway %s: ignoring a malformed command (fields: %s)",
                      self.config.gateway_id, fields or "payload")  # fmt: skip
            return
        if self.on_command:
            self._call(self.on_command, command)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                loop.call_soon_threadsafe(fn, *args)

    # --- asyncio side -------------------------------------------------------------------
    def publish_status(self) -> bool:
        """Publish the retained online status again (e.g. battery levels changed); False when
        not connected: the status on connecting carries the news."""
        if self._client is None or not self._connected.is_set():
            return False
        self._publish_online()
        return True

    def _publish_online(self) -> None:
        if self._client is not None and not self._closing:  # never after the offline one
            self._client.publish(
                status_topic(self.config.gateway_id), self._status(GatewayState.ONLINE), 1, True
            )

    def _status(self, state: GatewayState) -> bytes:
        stats = self.outbox.stats() if self.outbox.is_open else None
        devices = None
        if state is GatewayState.ONLINE and self.status_devices is not None:
            devices = tuple(self.status_devices()) or None
        return encode(
            GatewayStatus(
                gateway_id=self.config.gateway_id,
                state=state,
                at=datetime.now(UTC),
                outbox_pending=stats.pending if stats else None,
                outbox_dropped=stats.dropped_total if stats else None,
                outbox_damaged=stats.damaged_total if stats else None,
                software=self.config.software,
                devices=devices,
            )
        )

    def _settle(self, mid: int, failed: bool, reason: str) -> None:
        sent = self._inflight.pop(mid, None)
        if sent is None:
            return  # status message, or a resend already settled
        lo, hi, size = sent
        self._inflight_bytes -= size  # paho no longer holds the payload
        if not failed and self.config.receipts:
            assert self._loop is not None
            self._refusal_backoff.reset()
            batch_id = self._batch_id(lo, hi)
            if batch_id in self._receipted_early:  # already acknowledged in the outbox
                self._receipted_early.discard(batch_id)
            else:
                timeout_s = self.config.receipt_timeout_s * self._receipt_backoff
                self._awaiting[batch_id] = (lo, hi, self._loop.time() + timeout_s)
            self._wake.set()
            return
        seqs = (lo, hi)
        if failed:
            # Kept in the outbox; resent after the next reconnect (e.g. once the ACL is fixed).
            self.refused_messages += 1
            log.error(
                "gateway %s: broker refused message %d (%s); keeping %d readings",
                self.config.gateway_id,
                mid,
                reason,
                hi - lo + 1,
            )
            self._last_handed = min(self._last_handed, lo - 1)
            assert self._loop is not None
            self._resume_at = self._loop.time() + self._refusal_backoff.next_delay()
        else:
            self._refusal_backoff.reset()
            self._acked.append(seqs)
            self._acked_rows += hi - lo + 1
            self.acked_readings += hi - lo + 1
        self._wake.set()

    def _batch_id(self, lo: int, hi: int) -> str:
        return f"{self._epoch}:{lo}-{hi}"

    def _on_hub_receipt(self, receipt: Receipt) -> None:
        """The hub committed these batches: now they may leave the outbox."""
        mine = f"{self._epoch}:"
        readings, refused = 0, None
        for item in receipt.batches:
            if not item.batch_id.startswith(mine):
                continue  # an earlier process's batch: everything pending was sent again
            try:
                lo, hi = (int(x) for x in item.batch_id[len(mine) :].split("-"))
            except ValueError:
                continue
            entry = self._awaiting.pop(item.batch_id, None)
            if entry is None and len(self._receipted_early) < 100_000:  # its PUBACK may come
                self._receipted_early.add(item.batch_id)
            # Also for a batch given up on (time-out): a late receipt still proves the hub has it.
            self._acked.append((lo, hi))
            self._acked_rows += hi - lo + 1
            self.acked_readings += hi - lo + 1
            readings += hi - lo + 1
            if item.outcome is ReceiptOutcome.DEAD_LETTER:
                refused = item.code or "dead_letter"
                log.error("gateway %s: the hub refused readings %d-%d (%s); it keeps them as a"
                          " dead letter", self.config.gateway_id, lo, hi, refused)  # fmt: skip
        if not readings:
            return
        self._receipt_backoff = 1
        self.receipted_readings += readings
        self.last_receipt = ReceivedByHub(readings, receipt.at, refused)
        if self.on_receipt:
            self.on_receipt(self.last_receipt)
        self._wake.set()

    def _expire_receipts(self) -> None:
        """Batches whose receipt is overdue are sent again (see the module doc)."""
        if not self._awaiting:
            return
        assert self._loop is not None
        first = next(iter(self._awaiting.values()))
        if first[2] <= self._loop.time():
            self._receipt_backoff = min(self._receipt_backoff * 2, MAX_RECEIPT_BACKOFF)
            self._resend_unconfirmed("no receipt from the hub in time")

    def _resend_unconfirmed(self, why: str) -> None:
        """Forget every batch sent and not yet receipted; the pump reads them again from the
        outbox. A late PUBACK is then ignored, a late receipt still acknowledges."""
        if not self._awaiting and not self._inflight:
            return
        los = [e[0] for e in self._awaiting.values()] + [e[0] for e in self._inflight.values()]
        n = len(self._awaiting) + len(self._inflight)
        self.resent_batches += n
        log.warning("gateway %s: %s; sending %d batches again from reading %d",
                    self.config.gateway_id, why, n, min(los))  # fmt: skip
        self._last_handed = min(self._last_handed, min(los) - 1)
        self._awaiting.clear()
        self._inflight.clear()
        self._receipted_early.clear()
        self._inflight_bytes = 0
        self._wake.set()

    def _next_deadline_s(self) -> float | None:
        if not self._awaiting:
            return None
        assert self._loop is not None
        return max(0.0, next(iter(self._awaiting.values()))[2] - self._loop.time())

    def _flush_acks(self, *, force: bool = False) -> None:
        """Remove acknowledged readings from the outbox, in bulk: one transaction per
        ``ACK_FLUSH_ROWS`` readings or ``ACK_FLUSH_S`` seconds, not one per PUBACK."""
        if not self._acked or not self.outbox.is_open:
            return
        now = time.monotonic()
        if force or self._acked_rows >= ACK_FLUSH_ROWS or now - self._flushed_at >= ACK_FLUSH_S:
            done, self._acked, self._acked_rows = self._acked, [], 0
            self._flushed_at = now
            self.outbox.acknowledge(done)

    async def _pump(self) -> None:
        cfg = self.config
        topic = obs_topic(cfg.gateway_id)
        client = self._client
        assert client is not None
        loop = asyncio.get_running_loop()
        while True:
            self._flush_acks()
            self._expire_receipts()
            if (pause := self._resume_at - loop.time()) > 0:
                await asyncio.sleep(pause)  # the broker refused a message: back off
                continue
            room = cfg.max_inflight - self.inflight
            if self._inflight_bytes >= cfg.max_inflight_bytes:
                room = 0  # enough bytes in flight: wait for acknowledgements
            runs = (
                self.outbox.read(
                    min(room * cfg.batch_size, READ_MAX_READINGS), after_seq=self._last_handed
                )
                if room > 0 and self._connected.is_set()
                else []
            )
            if not runs:
                # Everything is handed to paho: flush what is acknowledged when nothing is
                # in flight any more (else on the usual size/age rule, not per PUBACK).
                self._flush_acks(force=not self.inflight)
                self._wake.clear()
                # Acknowledged readings left unflushed leave the outbox on time anyway, and
                # an overdue receipt is noticed on time.
                waits = [t for t in (ACK_FLUSH_S if self._acked else None,
                                     self._next_deadline_s()) if t is not None]  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(waits) if waits else None)
                continue
            now = datetime.now(UTC)
            for run in runs:
                if not self._publish_run(client, topic, run, now):
                    break  # paho's window is full: wait for acknowledgements
            await asyncio.sleep(0)  # let acknowledgements in between bursts

    def _payload(self, run: Run, i: int, j: int, now: datetime) -> bytes:
        cfg = self.config
        lo, hi = run.first_seq + i, run.first_seq + j - 1
        batch_id = self._batch_id(lo, hi) if cfg.receipts else None
        return batch_payload(cfg.gateway_id, run.joined(i, j), now, batch_id)

    def _publish_run(self, client: mqtt.Client, topic: str, run: Run, now: datetime) -> bool:
        """Publish consecutive readings in batches; False when the window (messages or bytes)
        is full."""
        cfg = self.config
        i = 0
        while i < run.count:
            j = min(run.count, i + cfg.batch_size)
            payload = self._payload(run, i, j, now)
            while len(payload) > MAX_PAYLOAD_BYTES and j - i > 1:
                j = i + (j - i) // 2
                payload = self._payload(run, i, j, now)
            info = client.publish(topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                return False
            lo = run.first_seq + i
            self._inflight[info.mid] = (lo, run.first_seq + j - 1, len(payload))
            self._inflight_bytes += len(payload)
            self._last_handed = run.first_seq + j - 1
            self.published_messages += 1
            i = j
            if self._inflight_bytes >= cfg.max_inflight_bytes:
                return False  # the rest of the run is read again after acknowledgements
        return True
