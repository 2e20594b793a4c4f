"""Bounds on the dead-letter table, so that no sender can fill the hub's disk with garbage.

- A payload up to the wire format's limit (256 KiB) is kept whole: it may be replayed once
  the cause is fixed (an unregistered gateway, say). A larger one can never be valid: it is
  kept as its first ``PREFIX_BYTES``, its length and its SHA-256.
- At most ``per_gateway`` dead letters (and ``per_gateway_bytes``) per gateway and
  ``total`` (``total_bytes``) in all are kept. Beyond a cap a message is only counted, per
  gateway, code and day, in ``dead_letter_overflow``, and a (rate-limited) log line and the
  ``vv_ingest_dead_letters_capped`` counter say that a gateway is being capped.
- Retention (ingest's jobs) deletes dead letters after ``retention_days``.

The counts start from the table and are refreshed from it every ``refresh_s`` (retention and
deletions by an operator free room); between refreshes they are kept in memory.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Protocol, TypeVar

import psycopg

from vitalvagt.wire import MAX_PAYLOAD_BYTES

PREFIX_BYTES = 4096


class DeadLetterCandidate(Protocol):
    """What the bounds need of a refused message (``ingest.messages.Rejected``)."""

    @property
    def gateway_id(self) -> str | None: ...

    @property
    def size(self) -> int: ...


Letter = TypeVar("Letter", bound=DeadLetterCandidate)


@dataclass(frozen=True)
class DeadLetterLimits:
    per_gateway: int = 10_000
    per_gateway_bytes: int = 100 * 1024**2
    total: int = 500_000
    total_bytes: int = 2 * 1024**3
    retention_days: int = 30
    refresh_s: float = 600.0


@dataclass(frozen=True, slots=True)
class KeptPayload:
    data: bytes  # what is stored: the whole payload or its prefix
    size: int
    sha256: bytes
    truncated: bool


def stored_size(size: int) -> int:
    return size if size <= MAX_PAYLOAD_BYTES else PREFIX_BYTES


def kept_payload(payload: bytes) -> KeptPayload:
    digest = hashlib.sha256(payload).digest()
    if len(payload) <= MAX_PAYLOAD_BYTES:
        return KeptPayload(payload, len(payload), digest, False)
    return KeptPayload(payload[:PREFIX_BYTES], len(payload), digest, True)


class DeadLetterBudget:
    """Which dead letters are kept in full; the others are counted (see the module doc)."""

    def __init__(self, limits: DeadLetterLimits) -> None:
        self.limits = limits
        self._count: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._total = 0
        self._total_bytes = 0
        self._loaded_at: float | None = None

    def refresh(self, conn: psycopg.Connection) -> None:
        rows = conn.execute(
            "SELECT coalesce(gateway_id, ''), count(*), coalesce(sum(length(payload)), 0)"
            " FROM dead_letters GROUP BY 1"
        ).fetchall()
        self._count = {gw: n for gw, n, _ in rows}
        self._bytes = {gw: int(b) for gw, _, b in rows}
        self._total = sum(self._count.values())
        self._total_bytes = sum(self._bytes.values())
        self._loaded_at = time.monotonic()

    def maybe_refresh(self, conn: psycopg.Connection) -> None:
        if self._loaded_at is None or time.monotonic() - self._loaded_at >= self.limits.refresh_s:
            self.refresh(conn)

    def split(self, rejected: list[Letter]) -> tuple[list[Letter], list[Letter]]:
        """(kept in full, only counted): the caps applied in order. Changes nothing until
        ``record`` (a write that is rolled back and retried must not count twice)."""
        lim = self.limits
        count, size = dict(self._count), dict(self._bytes)
        total, total_bytes = self._total, self._total_bytes
        kept, capped = [], []
        for r in rejected:
            gw, b = r.gateway_id or "", stored_size(r.size)
            if (
                count.get(gw, 0) >= lim.per_gateway
                or size.get(gw, 0) + b > lim.per_gateway_bytes
                or total >= lim.total
                or total_bytes + b > lim.total_bytes
            ):
                capped.append(r)
                continue
            kept.append(r)
            count[gw], size[gw] = count.get(gw, 0) + 1, size.get(gw, 0) + b
            total, total_bytes = total + 1, total_bytes + b
        return kept, capped

    def record(self, kept: list[Letter]) -> None:
        """The kept dead letters were committed."""
        for r in kept:
            gw, b = r.gateway_id or "", stored_size(r.size)
            self._count[gw] = self._count.get(gw, 0) + 1
            self._bytes[gw] = self._bytes.get(gw, 0) + b
            self._total, self._total_bytes = self._total + 1, self._total_bytes + b


def expire_dead_letters(conn: psycopg.Connection, *, retention_days: int) -> int:
    """Delete dead letters (and overflow counts) older than the retention; returns how many."""
    with conn.transaction():
        n = conn.execute(
            "DELETE FROM dead_letters WHERE received_at < now() - make_interval(days => %s)",
            (retention_days,),
        ).rowcount
        conn.execute(
            "DELETE FROM dead_letter_overflow WHERE last_at < now() - make_interval(days => %s)",
            (retention_days,),
        )
    return n
