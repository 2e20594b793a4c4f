"""The gateway's outbox: every decoded reading is on disk before it is published.

An append-only segment log (the shape of a Kafka partition or a database WAL), because the
outbox is a FIFO that is written once, read once in order, and dropped from the front.
Each segment is two files:

- ``<first seq>.seg``: the readings' JSON, exactly as the wire carries it, each followed by
  a comma. A run of consecutive readings is therefore one slice of the file that already is
  the body of a batch's ``observations`` array: replay copies bytes, it parses nothing.
- ``<first seq>.idx``: a fixed 32-byte entry per reading (JSON length, CRC-32 of seq, id and
  JSON, seq, stable id), so that open can check the data and rebuild the duplicate window.

Operations:

- ``add`` appends to the active segment and fsyncs both files before it returns: a reading
  whose ``add`` returned survives a killed process and a power cut. Readings get
  consecutive sequence numbers.
- ``read`` / ``peek`` return pending readings in order, one ``pread`` per segment.
- ``acknowledge`` / ``remove`` only move a watermark ("every seq up to W is acknowledged by
  the broker", in ``state.json``) and delete whole segments that lie entirely below it. The
  watermark is written without fsync: should a power cut undo it, the readings are sent
  again and the hub stores them once, by their stable id.
- ``open`` checks the active (last) segment record by record against its CRCs and cuts off
  a record torn by a crash mid-write (it was never acknowledged to the caller). Earlier
  segments were complete and fsynced before the next one started; for them open checks the
  index's structure (seqs, lengths, the file size), not every CRC, so that a tablet with a
  full outbox starts in a fraction of a second.

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
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import struct
import threading
import uuid
import zlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from gateway.errors import GatewayError
from vitalvagt.observation import Observation

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
WARN_FRACTION = 0.8
SEGMENT_BYTES = 4 * 1024 * 1024
RECENT_IDS = 50_000
STATE_FILE = "state.json"
LOCK_FILE = "lock"
DATA_SUFFIX, INDEX_SUFFIX = ".seg", ".idx"
ENTRY = struct.Struct("<IIQ16s")  # JSON length, CRC-32, seq, stable id
SEPARATOR = b","


class OutboxError(GatewayError):
    """The outbox on disk cannot be used (not open, or cannot be written)."""


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    obs_id: str
    payload: bytes  # the observation's JSON, exactly as it will be sent


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive pending readings ``first_seq`` .. ``first_seq + count - 1``.

    ``data`` is their JSON, comma-separated (each followed by a comma); ``ends[i]`` is where
    reading i's comma ends, relative to ``data`` (``ends[0] == 0``).
    """

    first_seq: int
    data: bytes
    ends: Sequence[int]

    @property
    def count(self) -> int:
        return len(self.ends) - 1

    def joined(self, i: int, j: int) -> bytes:
        """Readings i..j-1 of the run as the body of a JSON array (no trailing comma)."""
        return self.data[self.ends[i] : self.ends[j] - 1]

    @property
    def payloads(self) -> list[bytes]:
        return [self.joined(i, i + 1) for i in range(self.count)]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    bytes: int
    max_bytes: int
    dropped_total: int

    @property
    def near_full(self) -> bool:
        return self.bytes >= WARN_FRACTION * self.max_bytes


@dataclass(slots=True)
class _Segment:
    """A data file and its index; where each reading ends kept in memory (8 bytes each)."""

    first_seq: int
    data_path: Path
    index_path: Path
    ends: array = field(default_factory=lambda: array("Q", [0]))  # ends[i]: start of reading i

    @property
    def count(self) -> int:
        return len(self.ends) - 1

    @property
    def end_seq(self) -> int:  # one past the last
        return self.first_seq + self.count

    @property
    def size(self) -> int:
        return self.ends[-1]

    def json_bytes(self, lo: int, hi: int) -> int:
        """JSON bytes (without commas) of the seqs lo..hi-1 that lie in this segment."""
        a = min(max(lo - self.first_seq, 0), self.count)
        b = min(max(hi - self.first_seq, 0), self.count)
        return self.ends[b] - self.ends[a] - (b - a) if b > a else 0

    def unlink(self) -> None:
        self.data_path.unlink(missing_ok=True)
        self.index_path.unlink(missing_ok=True)


def _crc(seq: int, oid: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(oid, zlib.crc32(seq.to_bytes(8, "little"))))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Outbox:
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
        self._acked_above: list[tuple[int, int]] = []  # acknowledged ranges above it, sorted
        self._dropped_total = 0
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
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_directory()
            state = self._read_state()
            self._acked = int(state.get("acked", 0))
            self._dropped_total = int(state.get("dropped_total", 0))
            firsts = sorted(
                int(p.name.removesuffix(DATA_SUFFIX)) for p in self.path.glob(f"*{DATA_SUFFIX}")
            )
            self._segments = []
            recent: deque[bytes] = deque(maxlen=RECENT_IDS)
            for i, first in enumerate(firsts):
                seg, ids = self._scan(first, verify=i == len(firsts) - 1)
                if seg.count:
                    self._segments.append(seg)
                    recent.extend(ids)
                else:
                    seg.unlink()  # started but never written (or all of it torn)
            if self._segments:
                # The watermark may lag the deleted files (it is written without fsync).
                self._acked = max(self._acked, self._segments[0].first_seq - 1)
                self._next_seq = max(self._acked, self._segments[-1].end_seq - 1) + 1
            else:
                self._next_seq = self._acked + 1
            self._recent = OrderedDict.fromkeys(recent)
            self._delete_acked_segments()
            self._open = True
        if self.legacy_sqlite is not None and self.legacy_sqlite.exists():
            self._import_legacy(self.legacy_sqlite)
        return self

    def close(self) -> None:
        with self._lock:
            self._close_active()
            if self._open:
                self._write_state(fsync=False)
            self._open = False
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

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
                os.close(fd)
            self._fds = None

    def _check_open(self) -> None:
        if not self._open:
            raise OutboxError(f"outbox {self.path} is not open")

    def _new_segment(self, first_seq: int) -> _Segment:
        name = f"{first_seq:020d}"
        return _Segment(
            first_seq, self.path / f"{name}{DATA_SUFFIX}", self.path / f"{name}{INDEX_SUFFIX}"
        )

    def _scan(self, first_seq: int, *, verify: bool) -> tuple[_Segment, list[bytes]]:
        """Index a segment; cut off a torn or damaged tail (never acknowledged to anyone)."""
        seg = self._new_segment(first_seq)
        name = seg.data_path.stem
        index = seg.index_path.read_bytes() if seg.index_path.exists() else b""
        data_size = seg.data_path.stat().st_size
        data = memoryview(seg.data_path.read_bytes()) if verify else None
        ends, ids = seg.ends, []
        pos, seq = 0, first_seq
        for off in range(0, len(index) - ENTRY.size + 1, ENTRY.size):
            n, crc, rseq, oid = ENTRY.unpack_from(index, off)
            end = pos + n + 1
            if rseq != seq or end > data_size:
                break
            if data is not None and (
                data[end - 1] != SEPARATOR[0] or _crc(rseq, oid, data[pos : end - 1]) != crc
            ):
                break
            ends.append(end)
            ids.append(oid)
            pos, seq = end, seq + 1
        if pos != data_size or seg.count * ENTRY.size != len(index):
            log.error(
                "outbox %s: segment %s ends with a record that is not whole (a write cut off by"
                " a crash, or damage): keeping %d readings, removing %d bytes of data",
                self.path,
                name,
                seg.count,
                data_size - pos,
            )
            for path, size in ((seg.data_path, pos), (seg.index_path, seg.count * ENTRY.size)):
                with open(path, "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
        return seg, ids

    def _read_state(self) -> dict[str, int]:
        try:
            return json.loads((self.path / STATE_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as exc:
            # Losing the watermark only means acknowledged readings are sent again.
            log.error("outbox %s: unreadable %s (%s); resending what is on disk", self.path,
                      STATE_FILE, exc)  # fmt: skip
            return {}

    def _write_state(self, *, fsync: bool) -> None:
        tmp = self.path / f"{STATE_FILE}.tmp"
        with open(tmp, "w") as f:
            json.dump({"acked": self._acked, "dropped_total": self._dropped_total}, f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path / STATE_FILE)

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

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
            i = 0
            while i < len(records):
                i = self._append(records, i)
            for oid, _ in records:
                self._recent[oid] = None
            while len(self._recent) > RECENT_IDS:
                self._recent.popitem(last=False)
            if records:
                self._enforce_limit()
        return len(records)

    def _append(self, records: list[tuple[bytes, bytes]], start: int) -> int:
        """Write records from ``start`` into the active segment up to its size; fsync."""
        seg = self._segments[-1] if self._segments else None
        if seg is None or self._fds is None or seg.size >= SEGMENT_BYTES:
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
            _write_all(data_fd, b"".join(chunks))
            _write_all(index_fd, b"".join(entries))
            os.fsync(data_fd)  # durable before add() returns
            os.fsync(index_fd)
        except OSError as exc:
            # Nothing of this call counts as stored: cut the files back to where they were.
            os.ftruncate(data_fd, seg.size)
            os.ftruncate(index_fd, seg.count * ENTRY.size)
            raise OutboxError(f"outbox {self.path}: cannot write readings: {exc}") from exc
        seg.ends.extend(ends)
        self._next_seq = seq
        return i

    def _roll(self) -> _Segment:
        """Open the active segment for appending, starting a new one when the last is full."""
        self._close_active()
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.size >= SEGMENT_BYTES or seg.end_seq != self._next_seq:
            seg = self._new_segment(self._next_seq)
            self._segments.append(seg)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fds = (os.open(seg.data_path, flags, 0o600), os.open(seg.index_path, flags, 0o600))
        self._fsync_dir()  # the new files' names are durable too
        return seg

    def _enforce_limit(self) -> None:
        pending_bytes = self._pending_bytes()
        if pending_bytes >= WARN_FRACTION * self.max_bytes and not self._warned:
            self._warned = True
            log.warning(
                "outbox %s: %d bytes used of %d (%.0f %%): the hub has not acknowledged readings"
                " for a long time; the oldest will be dropped at the limit",
                self.path,
                pending_bytes,
                self.max_bytes,
                100 * pending_bytes / self.max_bytes,
            )
        if pending_bytes <= self.max_bytes:
            return
        excess = pending_bytes - self.max_bytes
        freed, dropped, seq = 0, 0, self._acked
        for seg, lo, hi in list(self._pending_ranges()):
            for s in range(lo, hi + 1):
                if freed >= excess:
                    break
                freed += seg.json_bytes(s, s + 1)
                dropped, seq = dropped + 1, s
            if freed >= excess:
                break
        self._dropped_total += dropped
        self._advance(seq)
        self._write_state(fsync=True)  # the count of dropped readings must not be lost
        self._delete_acked_segments()
        log.error(
            "outbox %s: full (%d bytes); dropped the %d oldest readings (up to seq %d)",
            self.path,
            self.max_bytes,
            dropped,
            seq,
        )

    # --- reading ------------------------------------------------------------------------
    def _pending_ranges(self, after_seq: int = 0) -> Iterator[tuple[_Segment, int, int]]:
        """Inclusive seq ranges of readings not acknowledged, after ``after_seq``, in order,
        each within one segment (given with it)."""
        lo_bound = max(after_seq, self._acked) + 1
        for seg in self._segments:
            lo, hi = max(seg.first_seq, lo_bound), seg.end_seq - 1
            for a_lo, a_hi in self._acked_above:
                if a_hi < lo or a_lo > hi:
                    continue
                if a_lo > lo:
                    yield seg, lo, a_lo - 1
                lo = max(lo, a_hi + 1)
            if lo <= hi:
                yield seg, lo, hi

    def read(self, limit: int, *, after_seq: int = 0) -> list[Run]:
        """Up to ``limit`` oldest pending readings after ``after_seq``, as runs."""
        return [run for run, _ in self._read(limit, after_seq, with_ids=False)]

    def peek(self, limit: int, *, after_seq: int = 0) -> list[Pending]:
        """The oldest pending readings after ``after_seq``, in order, one object each."""
        return [
            Pending(run.first_seq + i, str(uuid.UUID(bytes=oid)), p)
            for run, ids in self._read(limit, after_seq, with_ids=True)
            for i, (oid, p) in enumerate(zip(ids, run.payloads, strict=True))
        ]

    def _read(self, limit: int, after_seq: int, *, with_ids: bool) -> list[tuple[Run, list[bytes]]]:
        out: list[tuple[Run, list[bytes]]] = []
        with self._lock:
            self._check_open()
            left = limit
            for seg, lo, hi in list(self._pending_ranges(after_seq)):
                if left <= 0:
                    break
                hi = min(hi, lo + left - 1)
                a, b = lo - seg.first_seq, hi - seg.first_seq + 1
                start = seg.ends[a]
                with open(seg.data_path, "rb") as f:
                    data = os.pread(f.fileno(), seg.ends[b] - start, start)
                ends = [e - start for e in seg.ends[a : b + 1]]
                ids: list[bytes] = []
                if with_ids:
                    with open(seg.index_path, "rb") as f:
                        index = os.pread(f.fileno(), (b - a) * ENTRY.size, a * ENTRY.size)
                    ids = [index[k + 16 : k + ENTRY.size] for k in range(0, len(index), ENTRY.size)]
                out.append((Run(lo, data, ends), ids))
                left -= b - a
        return out

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
            try:
                self._write_state(fsync=False)
            except OSError as exc:
                # Not fatal: the files below the watermark still go (freeing the disk), and
                # open() takes the watermark from the oldest file left.
                log.warning("outbox %s: cannot write %s (%s)", self.path, STATE_FILE, exc)
            self._delete_acked_segments()
            if self._pending_bytes() < WARN_FRACTION * self.max_bytes:
                self._warned = False

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
        return OutboxStats(pending, size, self.max_bytes, self._dropped_total)

    # --- the SQLite outbox of version 0.1.0 ---------------------------------------------
    def _import_legacy(self, db_path: Path) -> None:
        """Move the readings of an SQLite outbox (before the segment log) into this one."""
        try:
            with sqlite3.connect(db_path) as db:
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
