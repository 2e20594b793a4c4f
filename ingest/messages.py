"""What ingest holds of one MQTT message on its way in, and the wire checks that need no
database: a message is decoded (``decode_message``), checked against the registry
(ingest/registry.py), then stored as readings (``Accepted``) or a dead letter
(``Rejected``, with a code and a reason in the hub's own words).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vitalvagt.wire import ObservationBatch, WireError, batch_id_of, decode_batch, parse_topic


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    received_at: datetime  # when ingest got it (UTC)
    mid: int = 0  # MQTT message id, for the acknowledgement after commit


@dataclass(frozen=True, slots=True)
class Rejected:
    message: Message
    gateway_id: str | None
    code: str
    reason: str  # the hub's own words (vitalvagt.wire): never the sender's text

    @property
    def batch_id(self) -> str | None:
        return batch_id_of(self.message.payload)

    @property
    def size(self) -> int:
        return len(self.message.payload)


@dataclass(frozen=True, slots=True)
class Accepted:
    message: Message
    gateway_id: str
    patient_id: str
    rows: list[tuple[object, ...]]
    devices: dict[str, tuple[str | None, str | None]]  # address -> (model, serial)
    batch_id: str | None = None  # the gateway's name for the message, for its receipt


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message that passed the wire checks; the registry checks come next (``check_registry``)."""

    message: Message
    gateway_id: str
    batch: ObservationBatch


def parse_gateway(topic: str) -> str | None:
    """The gateway id of an obs topic, or None."""
    try:
        return parse_topic(topic)[0]
    except WireError:
        return None


def decode_message(msg: Message, *, now: datetime | None = None) -> Decoded | Rejected:
    """The wire checks of one message (topic, schema, units, ranges, time, stable ids).

    Pure: no database, so ingest runs it in its own thread while the previous batch is being
    written (service.py)."""
    gateway_id: str | None = None
    try:
        gateway_id, _ = parse_topic(msg.topic)
        batch = decode_batch(msg.payload, topic_gateway_id=gateway_id, now=now or msg.received_at)
    except WireError as exc:
        return Rejected(msg, gateway_id, exc.code.value, str(exc))
    return Decoded(msg, gateway_id, batch)
