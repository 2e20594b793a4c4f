"""Gateway status in ingest: the retained ``vv/v1/gw/{id}/status`` messages (and last wills)
decoded by the wire codec and recorded on ``gateways``, in a thread of their own.

- Subscription: a plain one (``STATUS_TOPIC``), not a shared one. The broker sends retained
  messages to a new plain subscription but never to a shared one (MQTT 5, 4.8.2), so only a
  plain one gives a freshly started hub every gateway's current state; and each ingest
  process then sees one gateway's messages in order (a shared subscription may hand
  "online" to one process and the following "offline" to another, which may commit first).
  Several ingest processes each record every status: the writes are idempotent and a
  message older than the state recorded is ignored.
- Stored: ``last_status`` (the payload), ``online``, ``status_since`` (when the state
  changed, as the hub saw it), ``status_at`` (the last status message). The time of a
  change is the hub's receive time: the gateway builds its last will when it connects, so
  the will's ``at`` is the connect time, not the drop. A retained message replayed on
  subscribe that changes the state gets the best lower bound instead: the later of its
  ``at`` and the gateway's last contact.
- Battery levels: an online status may list the paired devices with their last battery
  level (wire ``StatusDevice``). Each level is recorded on its ``devices`` row
  (``battery_level``, ``battery_at``, migration 0014; a device the hub has not seen yet gets
  its row), in the status's transaction and only when the status itself was recorded; a
  level older than the one recorded changes nothing. A status without devices (an older
  gateway, a last will) leaves the levels as they were, so a home that goes offline keeps
  its last known levels.
- An empty payload (how MQTT deletes a retained message) is acknowledged and ignored.
- A payload that fails the wire checks is a dead letter (same bounds as ingest's, own
  budget); a status of a gateway the hub does not know changes nothing. Subscribed at QoS 0
  (nothing to acknowledge, so status messages never hold up the readings' QoS 1 window); a
  database outage is waited out, and a message lost meanwhile comes again, retained, on
  the next subscribe.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from ingest.bounds import DeadLetterBudget, DeadLetterLimits
from ingest.errors import DatabaseUnavailable, StorageRefused
from ingest.messages import Message, Rejected
from ingest.store import Store
from vitalvagt.db.connect import Outage
from vitalvagt.logs import Throttle
from vitalvagt.wire import (
    Channel,
    GatewayState,
    GatewayStatus,
    WireError,
    WireErrorCode,
    parse_topic,
)
from vitalvagt.wire import decode_status as wire_decode_status

log = logging.getLogger(__name__)

STATUS_TOPIC = "vv/v1/gw/+/status"


def decode_status(msg: Message) -> tuple[str, GatewayStatus] | Rejected:
    """The wire checks of one status message: topic, then the codec's (size, schema, battery
    levels, gateway id, no NUL)."""
    gateway_id: str | None = None
    try:
        gateway_id, channel = parse_topic(msg.topic)
        if channel is not Channel.STATUS:
            raise WireError(WireErrorCode.BAD_TOPIC, "topic", "is not a status topic")
        status = wire_decode_status(msg.payload, topic_gateway_id=gateway_id)
    except WireError as exc:
        return Rejected(msg, gateway_id, exc.code.value, str(exc))
    return gateway_id, status


# One statement: the state, its time and the payload; a message older than the state
# recorded (another ingest process got a later one first) changes nothing.
_RECORD_SQL = """
UPDATE gateways g SET
    last_status = %(payload)s::jsonb,
    status_at = %(received)s,
    status_since = CASE WHEN g.online IS DISTINCT FROM %(online)s
        THEN CASE WHEN %(retained)s
            THEN least(%(received)s, greatest(%(at)s, g.last_seen_at, g.status_since))
            ELSE %(received)s END
        ELSE g.status_since END,
    online = %(online)s
WHERE g.id = %(gateway)s AND (g.status_at IS NULL OR g.status_at <= %(received)s)
RETURNING g.online, g.status_since
"""

# A device's last battery level, from an online status; an older level changes nothing.
_BATTERY_SQL = """
INSERT INTO devices (gateway_id, address, model, battery_level, battery_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (gateway_id, address) DO UPDATE SET
    battery_level = EXCLUDED.battery_level,
    battery_at = EXCLUDED.battery_at,
    model = coalesce(devices.model, EXCLUDED.model)
WHERE devices.battery_at IS NULL OR devices.battery_at <= EXCLUDED.battery_at
"""


def record_status(
    conn: psycopg.Connection,
    gateway_id: str,
    status: GatewayStatus,
    *,
    received_at: datetime,
    retained: bool,
) -> tuple[bool, datetime] | None:
    """Record one decoded status and the battery levels it carries; returns (online, since)
    as now recorded, or None when the gateway is unknown or the message was older than the
    state recorded."""
    row = conn.execute(
        _RECORD_SQL,
        {
            "payload": status.model_dump_json(exclude_none=True),
            "received": received_at,
            "online": status.state is GatewayState.ONLINE,
            "retained": retained,
            "at": status.at,
            "gateway": gateway_id,
        },
    ).fetchone()
    if row is None:
        return None
    levels = [d for d in status.devices or () if d.battery_level is not None]
    if levels:
        with conn.cursor() as cur:
            cur.executemany(
                _BATTERY_SQL,
                [(gateway_id, d.address.upper(), d.model, d.battery_level, d.battery_at)
                 for d in levels],
            )  # fmt: skip
    return row[0], row[1]


@dataclass(frozen=True, slots=True)
class StatusMessage:
    message: Message
    retained: bool


class StatusWriter:
    """The status path's own thread and database connection: ``put`` from paho's thread,
    ``ack(mid)`` after each commit. ``start``/``stop`` explicitly."""

    def __init__(
        self,
        database_url: str,
        ack: Callable[[int], None],
        *,
        limits: DeadLetterLimits,
        maxsize: int = 1000,
    ) -> None:
        self._database_url = database_url
        self._ack = ack
        self._queue: queue.Queue[StatusMessage] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._budget = DeadLetterBudget(limits)
        self._outage = Outage()
        self._throttle = Throttle(per_interval=5, interval_s=60)
        self._thread: threading.Thread | None = None
        self.recorded = 0
        self.dead_letters = 0

    def put(self, msg: Message, *, retained: bool) -> None:
        # Receive Maximum bounds the unacknowledged messages, so this never waits long.
        self._queue.put(StatusMessage(msg, retained))

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        with Store(self._database_url) as store:
            while not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    done = self._handle(store, item)
                except Exception:  # a bug: log it, keep the status path going
                    log.exception("ingest: status message on %s failed", item.message.topic)
                    done = True
                if not done:
                    return  # stopping during an outage: unacknowledged, redelivered later
                self._ack(item.message.mid)

    def _handle(self, store: Store, item: StatusMessage) -> bool:
        """Store one message (waiting out an outage); False when stopped meanwhile."""
        if not item.message.payload:
            return True  # an empty retained message clears the topic: no status to record
        decoded = decode_status(item.message)
        while True:
            try:
                if store._conn is None:
                    store.open()
                if isinstance(decoded, Rejected):
                    self._dead_letter(store, decoded)
                else:
                    gateway_id, status = decoded
                    with store.conn.transaction():
                        recorded = record_status(
                            store.conn, gateway_id, status,
                            received_at=item.message.received_at, retained=item.retained,
                        )  # fmt: skip
                    if recorded is not None:
                        self.recorded += 1
                        log.info("gateway %s: %s since %s", gateway_id,
                                 "online" if recorded[0] else "offline",
                                 recorded[1].isoformat())  # fmt: skip
            except (DatabaseUnavailable, psycopg.OperationalError) as exc:
                store.close()
                delay = self._outage.failed(exc)
                log.warning("ingest status: %s; retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    return False
                continue
            self._outage.recovered()
            return True

    def _dead_letter(self, store: Store, r: Rejected) -> None:
        self._budget.maybe_refresh(store.conn)
        kept, capped = self._budget.split([r])
        try:
            store.write([], kept, capped)
        except StorageRefused as exc:
            log.error("gateway %s: a status dead letter %s could not be kept (%s)",
                      r.gateway_id, r.code, exc)  # fmt: skip
            return
        self._budget.record(kept)
        self.dead_letters += len(kept)
        show, held = self._throttle.allow(("status_dead_letter", r.gateway_id))
        if show:
            log.warning("gateway %s: status dead letter %s (%d more not logged): %s",
                        r.gateway_id, r.code, held, r.reason)  # fmt: skip
