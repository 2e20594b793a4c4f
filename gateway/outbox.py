"""The gateway's outbox: every decoded reading is on disk before it is published.

SQLite in WAL mode with ``synchronous=FULL``: a reading whose ``add`` returned survives a
killed process and a power cut. A row leaves only when the broker acknowledged the message
that carried it (``remove``). Rows come back out in the order they went in.

Disk policy (docs/gateway.md): the outbox is bounded by ``max_bytes`` (default 200 MB, about
half a million readings: months of spot checks, days of continuous oximetry). At 80 % it logs
a warning and reports ``near_full`` in the gateway status so the hub can see it; at the
limit it drops the OLDEST readings, counts them and logs each drop, because the newest
readings are the ones that can still change what a nurse does today.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.sqlite_file import SqliteFile
from vitalvagt.observation import Observation

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
WARN_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    obs_id: str
    payload: str  # the observation's JSON, exactly as it will be sent


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    bytes: int
    max_bytes: int
    dropped_total: int

    @property
    def near_full(self) -> bool:
        return self.bytes >= WARN_FRACTION * self.max_bytes


class Outbox(SqliteFile):
    """A durable FIFO of observations. Thread-safe: one connection behind a lock."""

    what = "outbox"

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(path)
        self.max_bytes = max_bytes
        self._bytes = 0
        self._pending = 0
        self._warned = False

    # --- life cycle ---------------------------------------------------------------------
    def open(self) -> Outbox:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # durable commit: survives power loss
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS outbox (
                seq      INTEGER PRIMARY KEY AUTOINCREMENT,
                obs_id   TEXT NOT NULL UNIQUE,
                payload  TEXT NOT NULL,
                size     INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT OR IGNORE INTO meta VALUES ('dropped_total', 0);
            """
        )
        self._pending, self._bytes = db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM outbox"
        ).fetchone()
        self._db = db
        return self


    # --- operations ---------------------------------------------------------------------
    def add(self, observations: Iterable[Observation]) -> int:
        """Store readings durably; returns how many were new (a resend of a stored one is not)."""
        rows = []
        for obs in observations:
            payload = obs.model_dump_json(exclude_none=True)
            rows.append((str(obs.id), payload, len(payload)))
        if not rows:
            return 0
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO outbox (obs_id, payload, size) VALUES (?, ?, ?)", rows
                )
                added = db.total_changes - before
                if added:
                    n, size = db.execute(
                        "SELECT count(*), coalesce(sum(size), 0) FROM"
                        " (SELECT size FROM outbox ORDER BY seq DESC LIMIT ?)",
                        (added,),
                    ).fetchone()
                    self._pending += n
                    self._bytes += size
                self._enforce_limit(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._pending, self._bytes = db.execute(
                    "SELECT count(*), coalesce(sum(size), 0) FROM outbox"
                ).fetchone()
                raise
        return added

    def _enforce_limit(self, db: sqlite3.Connection) -> None:
        if self._bytes >= WARN_FRACTION * self.max_bytes and not self._warned:
            self._warned = True
            log.warning(
                "outbox %s: %d bytes used of %d (%.0f %%): the hub has not acknowledged readings"
                " for a long time; the oldest will be dropped at the limit",
                self.path,
                self._bytes,
                self.max_bytes,
                100 * self._bytes / self.max_bytes,
            )
        if self._bytes <= self.max_bytes:
            return
        excess = self._bytes - self.max_bytes
        victims = db.execute("SELECT seq, size FROM outbox ORDER BY seq LIMIT 10000").fetchall()
        freed, last, n = 0, 0, 0
        for seq, size in victims:
            if freed >= excess:
                break
            freed, last, n = freed + size, seq, n + 1
        db.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
        db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (n,))
        self._pending -= n
        self._bytes -= freed
        log.error(
            "outbox %s: full (%d bytes); dropped the %d oldest readings (up to seq %d)",
            self.path,
            self.max_bytes,
            n,
            last,
        )

    def peek(self, limit: int, *, after_seq: int = 0) -> list[Pending]:
        """The oldest pending readings after ``after_seq``, in order."""
        with self._lock:
            rows = self.db.execute(
                "SELECT seq, obs_id, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Pending(*r) for r in rows]

    def remove(self, seqs: Sequence[int]) -> None:
        """Forget readings the broker acknowledged.

        Acknowledgements arrive almost in order, so the seqs are deleted as contiguous ranges.
        The deletion is not fsynced (synchronous=NORMAL): should a power cut undo it, the
        readings are sent again and the hub stores them once, by their stable id.
        """
        if not seqs:
            return
        ranges: list[tuple[int, int]] = []
        for seq in sorted(seqs):
            if ranges and seq == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        with self._lock:
            db = self.db
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                n, size = 0, 0
                for lo, hi in ranges:
                    c, s = db.execute(
                        "SELECT count(*), coalesce(sum(size), 0) FROM outbox"
                        " WHERE seq BETWEEN ? AND ?", (lo, hi),
                    ).fetchone()  # fmt: skip
                    db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi))
                    n, size = n + c, size + s
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.execute("PRAGMA synchronous=FULL")  # additions stay durable
            self._pending -= n
            self._bytes -= size
            if self._bytes < WARN_FRACTION * self.max_bytes:
                self._warned = False

    def stats(self) -> OutboxStats:
        with self._lock:
            dropped = self.db.execute(
                "SELECT value FROM meta WHERE key = 'dropped_total'"
            ).fetchone()
        return OutboxStats(self._pending, self._bytes, self.max_bytes, dropped[0])
