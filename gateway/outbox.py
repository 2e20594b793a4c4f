"""The gateway's outbox: every decoded reading is on disk before it is published.

An append-only segment log (the shape of a Kafka partition or a database WAL), because the
outbox is a FIFO that is written once, read once in order, and dropped from the front.
Each segment is two files, named by the seq of its first reading: the readings' JSON as the
wire carries it (``.seg``) and an index entry per reading (``.idx``); their format and the
checks of their bytes are in gateway/outbox_segments.py.

This module holds the ``Outbox``: its life cycle, adding, acknowledging and statistics.
Beside it: gateway/outbox_scan.py checks each segment on open (damaged records, a torn
tail, an index rebuilt from the data), gateway/outbox_reading.py reads checked runs,
gateway/outbox_room.py applies the disk policy, gateway/outbox_state.py keeps ``state.json``.

Operations:

- ``add`` appends to the active (last) segment and fsyncs both files before it returns: a
  reading whose ``add`` returned survives a killed process and a power cut. Readings get
  consecutive sequence numbers.
- ``read`` / ``peek`` return pending readings in order, one ``pread`` per pending range (of
  whole blocks, see Damage).
- ``acknowledge`` / ``remove`` only move a watermark ("every seq up to W is acknowledged by
  the broker", in ``state.json``) and delete whole segments that lie entirely below it. The
  watermark is written without fsync: should a power cut undo it, the readings are sent
  again and the hub stores them once, by their stable id.

Damage (gateway/outbox_scan.py): a reading is only ever sent after its bytes were checked
against its CRC, on open (each record) and on every read (each block of ``BLOCK``). A
damaged reading is logged, counted (``damaged_total``) and treated like an acknowledged one:
it is never sent. A failed ``open`` releases the directory lock and closes what it opened.

This replaced an SQLite table (a row per reading) whose per-row delete and index upkeep
capped replay after a long outage at about 10 % of bare MQTT publishing (docs/gateway.md).

Duplicates: a reading whose stable id is among the last ``RECENT_IDS`` added is ignored.
Duplicates come from devices re-sending right after a reconnect, so a recent window is
enough; anything older that slips through is stored once by the hub anyway.

Disk policy (docs/gateway.md): the readings waiting are bounded by ``max_bytes`` of JSON
(default 200 MB, about 750,000 readings: months of spot checks, days of continuous
oximetry). At 80 % it logs a warning and reports ``near_full`` in the gateway status so the
hub can see it; at the limit it drops the OLDEST readings, counts them and logs each drop,
because the newest readings are the ones that can still change what a nurse does today.
On disk there are, beyond that, 33 bytes per reading (index entry and comma) and at most
one segment (``SEGMENT_BYTES``) of acknowledged readings not yet deleted.

A full disk (or any write error) in ``add``: the half-written bytes are cut off, then

1. acknowledged space is freed: the first segment's readings not yet acknowledged are copied
   to a new segment file (named by its first seq) and the old file deleted, because the
   acknowledged readings at the front of a segment free nothing while it lives (after a
   crash between the copy and the delete, ``open`` keeps the copy); then ``add`` retries;
2. if the disk is still full (ENOSPC, EDQUOT), the documented policy applies: the oldest
   segment's pending readings are dropped (counted in ``dropped_total``, logged) and the
   segment deleted, oldest first, retrying after each, because a segment is the unit in
   which a file system gives space back. Readings of the ``add`` in progress are never
   dropped to store the rest of it;
3. only when nothing is left to free does ``add`` raise ``OutboxError``. Other errors (EIO,
   a read-only file system) raise after step 1: dropping readings would not help them.

``close`` never raises because ``state.json`` cannot be written (it logs that: the watermark
is then taken from the files, so acknowledged readings may be sent again) and always
releases the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import sys
import threading
from array import array
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Self

from gateway import outbox_segments
from gateway.errors import GatewayError
from gateway.outbox_reading import Pending, Run, _Reading
from gateway.outbox_room import WARN_FRACTION, _MakingRoom
from gateway.outbox_scan import LOG_EACH, log_damage, scan_segment
from gateway.outbox_segments import (
    BLOCK,
    DATA_SUFFIX,
    ENTRY,
    INDEX_SUFFIX,
    LOCK_FILE,
    SEPARATOR,
    STATE_FILE,
    TMP_SUFFIX,
    _crc,
    _extend_blocks,
    _fsync_dir,
    _Segment,
    list_segments,
    new_segment,
)
from gateway.outbox_state import read_state, recorded_losses, write_state
from vitalvagt.observation import Observation

__all__ = [
    "BLOCK",
    "DATA_SUFFIX",
    "DEFAULT_MAX_BYTES",
    "ENTRY",
    "INDEX_SUFFIX",
    "LOCK_FILE",
    "LOG_EACH",
    "RECENT_IDS",
    "SEGMENT_BYTES",
    "SEPARATOR",
    "SPACE_ERRORS",
    "STATE_FILE",
    "TMP_SUFFIX",
    "WARN_FRACTION",
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "Pending",
    "Run",
    "recorded_losses",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
SEGMENT_BYTES = 4 * 1024 * 1024  # read here, at each append (tests make it smaller)
RECENT_IDS = 50_000
SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)


class OutboxError(GatewayError):
    """The outbox on disk cannot be used (not open, or cannot be written)."""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    bytes: int
    max_bytes: int
    dropped_total: int
    damaged_total: int = 0  # readings found damaged on disk and skipped (never sent)

    @property
    def near_full(self) -> bool:
        return self.bytes >= WARN_FRACTION * self.max_bytes


class Outbox(_MakingRoom, _Reading):
    """A durable FIFO of observations. Thread-safe: every operation holds one lock."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        legacy_sqlite: Path | None = None,
    ) -> None:
        self.path = path  # a directory
        self.max_bytes = max_bytes
        self.legacy_sqlite = legacy_sqlite  # an outbox.db of the SQLite outbox, imported once
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fds: tuple[int, int] | None = None  # the active segment's data and index files
        self._acked = 0  # watermark: every seq <= this is acknowledged
        self._acked_above: list[tuple[int, int]] = []  # acknowledged (or damaged) ranges above
        self._damaged: set[int] = set()  # seqs of damaged readings above the watermark
        self._dropped_total = 0
        self._damaged_total = 0
        self._next_seq = 1
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._warned = False
        self._open = False
        self._lock_fd: int | None = None

    # --- life cycle ---------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> Self:
        with self._lock:
            if self._open:
                raise OutboxError(f"outbox {self.path} is already open")
            try:
                self._open_locked()
            except BaseException:
                self._release()  # a failed open leaves neither the lock nor files open
                raise
        if self.legacy_sqlite is not None and self.legacy_sqlite.exists():
            try:
                self._import_legacy(self.legacy_sqlite)
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        with self._lock:
            try:
                if self._open:
                    self._save_state(fsync=False)
            finally:
                self._release()

    def _release(self) -> None:
        """Close the active files and give up the directory lock; never raises."""
        self._close_active()
        self._open = False
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)  # releases the lock
            except OSError as exc:
                log.error("outbox %s: closing %s: %s", self.path, LOCK_FILE, exc)
            self._lock_fd = None

    def _open_locked(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_directory()
        self._close_active()
        state = read_state(self.path)
        self._acked = state["acked"]
        self._dropped_total = state["dropped_total"]
        self._damaged_total = state["damaged_total"]
        known: set[int] = state["damaged"]
        self._acked_above, self._damaged, self._warned = [], set(), False
        firsts = list_segments(self.path)
        segments: list[_Segment] = []
        damaged: dict[int, list[int]] = {}  # first seq -> damaged seqs found in the segment
        changed = False  # a segment was cut or rebuilt: state.json is written with fsync
        recent: deque[bytes] = deque(maxlen=RECENT_IDS)
        # The duplicate window needs the ids of the newest RECENT_IDS readings only.
        counts = [self._index_entries(first) for first in firsts]
        newer = list(accumulate(reversed(counts), initial=0))[::-1][1:]  # in later segments
        for i, first in enumerate(firsts):
            seg, ids, bad, rewritten = self._scan(
                first, last=i == len(firsts) - 1, want_ids=newer[i] < RECENT_IDS
            )
            changed |= rewritten
            prev = segments[-1] if segments else None
            if prev is not None and seg.count and seg.first_seq < prev.end_seq:
                # Two segments hold the same seqs: a copy made to free acknowledged space (it
                # starts later) whose original was not deleted yet. Keep the one that holds
                # every reading of the other that is not acknowledged.
                keep_new = seg.end_seq >= prev.end_seq
                drop = prev if keep_new else seg
                log.warning(
                    "outbox %s: segments %s and %s overlap (a copy interrupted by a crash);"
                    " deleting %s",
                    self.path, prev.name, seg.name, drop.name,
                )  # fmt: skip
                drop.unlink()
                if not keep_new:
                    continue
                segments.pop()
                damaged.pop(prev.first_seq, None)
            if not seg.count:
                seg.unlink()  # started but never written (or all of it torn)
                continue
            segments.append(seg)
            damaged[seg.first_seq] = bad
            recent.extend(ids)
        self._segments = segments
        if segments:
            # The watermark may lag the deleted files (it is written without fsync).
            self._acked = max(self._acked, segments[0].first_seq - 1)
            self._next_seq = max(self._acked, segments[-1].end_seq - 1) + 1
        else:
            self._next_seq = self._acked + 1
        # Damaged readings: those known from before stay damaged even if they now pass (a
        # rebuilt index cannot vouch for them); new ones are logged and counted once.
        found = {s for seqs in damaged.values() for s in seqs if s > self._acked}
        known = {s for s in known if self._acked < s < self._next_seq and self._holds(s)}
        fresh = found - known
        for seg in segments:
            seqs = sorted(s for s in fresh if seg.first_seq <= s < seg.end_seq)
            if seqs:
                log_damage(self.path, seg, seqs, "found on open")
        self._damaged_total += len(fresh)
        self._damaged = found | known
        self._merge_acked((s, s) for s in sorted(self._damaged))
        self._recent = OrderedDict.fromkeys(recent)
        for oid in self._recent_damaged_ids(known - found):
            self._recent.pop(oid, None)
        self._delete_acked_segments()
        if fresh or changed:
            self._save_state(fsync=True)  # the count of damaged readings must not be lost
        self._open = True

    def _index_entries(self, first_seq: int) -> int:
        try:
            return (self.path / f"{first_seq:020d}{INDEX_SUFFIX}").stat().st_size // ENTRY.size
        except FileNotFoundError:
            return 0

    def _holds(self, seq: int) -> bool:
        return any(seg.first_seq <= seq < seg.end_seq for seg in self._segments)

    def _recent_damaged_ids(self, seqs: set[int]) -> list[bytes]:
        """Stable ids of damaged readings that passed their check this time (rare)."""
        out = []
        for seg in self._segments:
            for s in sorted(x for x in seqs if seg.first_seq <= x < seg.end_seq):
                with open(seg.index_path, "rb") as f:
                    entry = os.pread(f.fileno(), ENTRY.size, (s - seg.first_seq) * ENTRY.size)
                out.append(entry[16:])
        return out

    def _lock_directory(self) -> None:
        """One process at a time: two appending to the same segment would interleave."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxError(
                f"outbox {self.path} is in use by another process (is the gateway already"
                " running? stop it, or give this one its own VV_GATEWAY_DIR)"
            ) from None
        self._lock_fd = fd

    def _close_active(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError as exc:
                    log.error("outbox %s: closing the active segment: %s", self.path, exc)
            self._fds = None

    def _check_open(self) -> None:
        if not self._open:
            raise OutboxError(f"outbox {self.path} is not open")

    def _new_segment(self, first_seq: int) -> _Segment:
        return new_segment(self.path, first_seq)

    def _scan(
        self, first_seq: int, *, last: bool, want_ids: bool = True
    ) -> tuple[_Segment, list[bytes], list[int], bool]:
        """Load and check one segment (gateway/outbox_scan.py): (it, the stable ids of its
        good readings, the seqs of its damaged ones, whether its files were cut or its index
        rebuilt)."""
        return scan_segment(self.path, self._new_segment(first_seq), last=last, want_ids=want_ids)

    def _mark_damaged(self, seg: _Segment, seqs: list[int], when: str) -> None:
        log_damage(self.path, seg, seqs, when)
        self._damaged.update(seqs)
        self._damaged_total += len(seqs)
        self._merge_acked((s, s) for s in seqs)
        self._save_state(fsync=True)
        self._delete_acked_segments()

    # --- state ----------------------------------------------------------------------------
    def _write_state(self, *, fsync: bool) -> None:
        self._damaged = {s for s in self._damaged if s > self._acked}
        write_state(
            self.path,
            acked=self._acked,
            dropped_total=self._dropped_total,
            damaged_total=self._damaged_total,
            damaged=self._damaged,
            fsync=fsync,
        )

    def _save_state(self, *, fsync: bool) -> None:
        """``_write_state``, logging instead of raising: a lost watermark only means that
        acknowledged readings are sent again (open takes it from the oldest file left)."""
        try:
            self._write_state(fsync=fsync)
        except OSError as exc:
            log.error("outbox %s: cannot write %s (%s)", self.path, STATE_FILE, exc)

    # --- adding -------------------------------------------------------------------------
    def add(self, observations: Iterable[Observation]) -> int:
        """Store readings durably; returns how many were new (a resend of a stored one is not)."""
        fresh: dict[bytes, bytes] = {}
        for obs in observations:
            oid = obs.id.bytes
            if oid not in fresh:
                fresh[oid] = obs.model_dump_json(exclude_none=True).encode()
        with self._lock:
            self._check_open()
            records = [(oid, p) for oid, p in fresh.items() if oid not in self._recent]
            first_seq = self._next_seq
            i = 0
            try:
                while i < len(records):
                    i = self._append_making_room(records, i, first_seq)
            finally:
                for oid, _ in records[:i]:
                    self._recent[oid] = None
                while len(self._recent) > RECENT_IDS:
                    self._recent.popitem(last=False)
            if records:
                self._enforce_limit()
        return len(records)

    def _append_making_room(
        self, records: list[tuple[bytes, bytes]], start: int, first_seq: int
    ) -> int:
        """``_append``; if the disk refuses, free acknowledged space, then drop the oldest
        readings (not those of this add, from ``first_seq``), retrying after each."""
        try:
            return self._append(records, start)
        except OSError as exc:
            error = exc
        log.error(
            "outbox %s: cannot write readings (%s); freeing acknowledged space", self.path, error
        )
        if self._compact_first():
            try:
                return self._append(records, start)
            except OSError as exc:
                error = exc
        while (
            error.errno in SPACE_ERRORS
            and self._segments
            and self._segments[0].count  # empty: only a segment this add just started
            and self._segments[0].end_seq <= first_seq
        ):
            self._drop_oldest_segment()
            try:
                return self._append(records, start)
            except OSError as exc:
                error = exc
        what = (
            "the disk is full and nothing older is left to free"
            if error.errno in SPACE_ERRORS
            else "not a matter of space: nothing dropped"
        )
        raise OutboxError(f"outbox {self.path}: cannot write readings: {error} ({what})") from error

    def _append(self, records: list[tuple[bytes, bytes]], start: int) -> int:
        """Write records from ``start`` into the active segment up to its size; fsync. On an
        OSError nothing of it counts as written and the files are cut back."""
        seg = self._segments[-1] if self._segments else None
        if seg is None or self._fds is None or seg.size >= SEGMENT_BYTES or seg.sealed:
            seg = self._roll()
        assert self._fds is not None
        data_fd, index_fd = self._fds
        chunks, entries, ends = [], [], array("Q")
        pos, seq, i = seg.size, self._next_seq, start
        while i < len(records) and (pos < SEGMENT_BYTES or i == start):
            oid, payload = records[i]
            chunks += (payload, SEPARATOR)
            entries.append(ENTRY.pack(len(payload), _crc(seq, oid, payload), seq, oid))
            pos += len(payload) + 1
            ends.append(pos)
            seq, i = seq + 1, i + 1
        try:
            outbox_segments._write_all(data_fd, b"".join(chunks))
            outbox_segments._write_all(index_fd, b"".join(entries))
            os.fsync(data_fd)  # durable before add() returns
            os.fsync(index_fd)
        except OSError:
            # Nothing of this call counts as stored: cut the files back to where they were.
            try:
                os.ftruncate(data_fd, seg.size)
                os.ftruncate(index_fd, seg.count * ENTRY.size)
            except OSError as exc:
                # Appending after bytes that are not in the index would shift every later
                # record: no more appends here (open cuts the rest off or rebuilds it).
                log.error("outbox %s: cannot cut back %s (%s)", self.path, seg.name, exc)
                seg.sealed = True
                self._close_active()
            raise
        _extend_blocks(seg, (p for _, p in records[start:i]))
        seg.ends.extend(ends)
        self._next_seq = seq
        return i

    def _roll(self) -> _Segment:
        """Open the active segment for appending, starting a new one when the last is full."""
        self._close_active()
        seg = self._segments[-1] if self._segments else None
        new = (
            seg is None or seg.size >= SEGMENT_BYTES or seg.end_seq != self._next_seq or seg.sealed
        )
        if new:
            seg = self._new_segment(self._next_seq)
        assert seg is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fds: list[int] = []
        try:
            fds.append(os.open(seg.data_path, flags, 0o600))
            fds.append(os.open(seg.index_path, flags, 0o600))
            if new:
                _fsync_dir(self.path)  # the new files' names are durable too
        except OSError:
            for fd in fds:
                os.close(fd)
            if new:
                seg.unlink()
            raise
        if new:
            self._segments.append(seg)
        self._fds = (fds[0], fds[1])
        return seg

    # --- removing -----------------------------------------------------------------------
    def remove(self, seqs: Sequence[int]) -> None:
        """Forget readings the broker acknowledged (any order; already removed ones are fine)."""
        ranges: list[tuple[int, int]] = []
        for seq in sorted(seqs):
            if ranges and seq <= ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], max(seq, ranges[-1][1]))
            else:
                ranges.append((seq, seq))
        self.acknowledge(ranges)

    def acknowledge(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Forget the inclusive seq ranges the broker acknowledged."""
        with self._lock:
            self._check_open()
            self._merge_acked(ranges)
            # Not fatal if it fails: the files below the watermark still go (freeing the
            # disk), and open() takes the watermark from the oldest file left.
            self._save_state(fsync=False)
            self._delete_acked_segments()
            if self._pending_bytes() < WARN_FRACTION * self.max_bytes:
                self._warned = False

    def _merge_acked(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged = sorted([*self._acked_above, *ranges])
        self._acked_above = []
        for lo, hi in merged:
            if lo <= self._acked + 1:
                self._acked = max(self._acked, hi)
            elif self._acked_above and lo <= self._acked_above[-1][1] + 1:
                last_lo, last_hi = self._acked_above[-1]
                self._acked_above[-1] = (last_lo, max(last_hi, hi))
            else:
                self._acked_above.append((lo, hi))

    def _is_acked(self, seq: int) -> bool:
        if seq <= self._acked:
            return True
        i = bisect_right(self._acked_above, (seq, sys.maxsize)) - 1
        return i >= 0 and self._acked_above[i][0] <= seq <= self._acked_above[i][1]

    def _advance(self, seq: int) -> None:
        self._acked = max(self._acked, seq)
        self._acked_above = [(max(lo, seq + 1), hi) for lo, hi in self._acked_above if hi > seq]

    def _delete_acked_segments(self) -> None:
        """Delete segments whose every reading is acknowledged (the active one once drained:
        the next ``add`` starts a new one)."""
        while self._segments and self._segments[0].end_seq - 1 <= self._acked:
            if len(self._segments) == 1:
                self._close_active()
            self._segments.pop(0).unlink()

    # --- statistics ---------------------------------------------------------------------
    def _pending_bytes(self) -> int:
        return sum(seg.json_bytes(lo, hi + 1) for seg, lo, hi in self._pending_ranges())

    def stats(self) -> OutboxStats:
        with self._lock:
            self._check_open()
            ranges = list(self._pending_ranges())
            pending = sum(hi - lo + 1 for _, lo, hi in ranges)
            size = sum(seg.json_bytes(lo, hi + 1) for seg, lo, hi in ranges)
        return OutboxStats(pending, size, self.max_bytes, self._dropped_total, self._damaged_total)

    # --- the SQLite outbox of version 0.1.0 ---------------------------------------------
    def _import_legacy(self, db_path: Path) -> None:
        """Move the readings of an SQLite outbox (before the segment log) into this one."""
        try:
            # closing(): a connection's own context manager commits but does not close it.
            with contextlib.closing(sqlite3.connect(db_path)) as db:
                rows = db.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"outbox {db_path}: cannot read the old outbox: {exc}") from exc
        observations = [Observation.model_validate_json(p) for (p,) in rows]
        for i in range(0, len(observations), 10_000):
            self.add(observations[i : i + 10_000])
        # Only once every reading is durable here; kept, renamed, for the operator to delete.
        db_path.rename(db_path.with_name(db_path.name + ".imported"))
        log.warning(
            "outbox %s: imported %d readings from the old outbox %s", self.path, len(rows),
            db_path,
        )  # fmt: skip
