"""The gateway's outbox: every decoded reading is on disk before it is published.

An append-only segment log (the shape of a Kafka partition or a database WAL), because the
outbox is a FIFO that is written once, read once in order, and dropped from the front.
Each segment is two files, named by the seq of its first reading (20 digits):

- ``<first seq>.seg``: the readings' JSON, exactly as the wire carries it, each followed by
  a comma. A run of consecutive readings is therefore one slice of the file that already is
  the body of a batch's ``observations`` array: replay copies bytes, it parses nothing.
- ``<first seq>.idx``: a fixed 32-byte entry per reading (JSON length, CRC-32 of seq, id and
  JSON, seq, stable id), so that open can check the data and rebuild the duplicate window.

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

Damage. A reading is only ever sent after its bytes were checked against its CRC:

- ``open`` checks every record of every segment (CRC and the comma after it). The index
  entry gives each record's length, so a record that fails is located exactly and the
  records after it are still found: a bad record costs that record alone. It is *damaged*:
  logged with its seq and segment (never its content), counted (``damaged_total``, kept in
  ``state.json`` with the seqs of the damaged readings not yet passed by the watermark, so a
  restart does not count them again) and treated like an acknowledged reading: the pending
  ranges, ``read``, ``peek`` and ``stats`` skip it, it is never sent, and the watermark
  moves past it as the readings around it are acknowledged. Its bytes stay in the file.
- A torn tail is something else: the end of the LAST segment left incomplete by a crash in
  the middle of an ``add`` that therefore never returned (the index shorter than the data,
  or entries for data that is not there). It is cut off, as it always was.
- An index that is missing, or inconsistent with its data in any other way (seqs out of
  order, lengths that do not add up to the data file), is rebuilt from the data: each record
  is a JSON object and a comma, so the file is parsed record by record (``raw_decode``, and
  the JSON validated as an ``Observation``); seqs are the file's first seq plus the position,
  and the CRCs are recomputed. Where the old index still has an entry for a record (found
  by its stable id, else by its offset or its seq) its CRC is checked, so a value changed
  inside valid JSON is caught there too; where the old index is gone only the parse and the
  validation can tell, and such a change goes unseen. Bytes that do not parse become one
  damaged record up to the next record that does (located with the old entry's length if
  there is one, else by the next ``,{"id":``); if two damaged records run into each other
  they count as one, and the seqs after them shift by one.
- Reads check again, cheaply: while it checks a segment's records ``open`` also keeps the
  CRC-32 of each block of ``BLOCK`` records (4 bytes per 64 readings), and ``add`` extends
  them from the bytes it writes. ``read`` reads whole blocks and compares their CRCs (one
  ``zlib.crc32`` per 64 readings, on buffers big enough for zlib to release the GIL): bytes
  that changed on disk since they were checked fail, the records of that block are checked
  one by one against their index entries, and those that fail are damaged as above. (A check
  of each record's CRC on every read cost about 65 ms per 100,000 readings and took replay
  from 56 % to 44 % of bare paho, below its target; see docs/gateway.md.)
- Files in the directory that are not the outbox's own (anything but ``<20 digits>.seg`` /
  ``.idx``, ``state.json`` and ``lock``) are ignored, with one warning per open. An index
  without its data file is deleted; so are the outbox's own ``*.tmp`` files.
- A failed ``open`` releases the directory lock and closes what it opened.

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
import json
import logging
import operator
import os
import re
import sqlite3
import struct
import sys
import threading
import uuid
import zlib
from array import array
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError

from gateway.errors import GatewayError
from vitalvagt.observation import Observation

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
WARN_FRACTION = 0.8
SEGMENT_BYTES = 4 * 1024 * 1024
RECENT_IDS = 50_000
STATE_FILE = "state.json"
LOCK_FILE = "lock"
DATA_SUFFIX, INDEX_SUFFIX, TMP_SUFFIX = ".seg", ".idx", ".tmp"
ENTRY = struct.Struct("<IIQ16s")  # JSON length, CRC-32, seq, stable id
SEPARATOR = b","
BLOCK = 64  # readings per block CRC kept in memory, checked on every read
LOG_EACH = 20  # damaged readings logged one by one per segment and check; the rest summed up
SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)

_DATA_NAME = re.compile(r"(\d{20})\.seg")
_INDEX_NAME = re.compile(r"(\d{20})\.idx")
_TMP_NAME = re.compile(r"\d{20}\.(?:seg|idx)\.tmp")
_OWN_FILES = {STATE_FILE, STATE_FILE + TMP_SUFFIX, LOCK_FILE}
_RECORD_START = ',{"id":'  # where the next record may begin, when bytes before it are damaged


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

    ``data`` holds their JSON, each followed by a comma; ``ends[i] - base`` is where reading
    i starts in ``data`` and ``ends[i + 1] - base`` where its comma ends (``data`` may hold
    bytes of other readings before and after: it is the pread of whole checked blocks).
    """

    first_seq: int
    data: bytes
    ends: Sequence[int]
    base: int = 0

    @property
    def count(self) -> int:
        return len(self.ends) - 1

    def joined(self, i: int, j: int) -> bytes:
        """Readings i..j-1 of the run as the body of a JSON array (no trailing comma)."""
        return self.data[self.ends[i] - self.base : self.ends[j] - self.base - 1]

    @property
    def payloads(self) -> list[bytes]:
        return [self.joined(i, i + 1) for i in range(self.count)]


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


@dataclass(slots=True)
class _Segment:
    """A data file and its index; in memory where each reading ends (8 bytes each) and the
    CRC-32 of each block of ``BLOCK`` readings as they were checked (4 bytes per block)."""

    first_seq: int
    data_path: Path
    index_path: Path
    ends: array = field(default_factory=lambda: array("Q", [0]))  # ends[i]: start of reading i
    blocks: array = field(default_factory=lambda: array("I"))
    sealed: bool = False  # a failed write could not be cut back: append to a new segment

    @property
    def count(self) -> int:
        return len(self.ends) - 1

    @property
    def end_seq(self) -> int:  # one past the last
        return self.first_seq + self.count

    @property
    def size(self) -> int:
        return self.ends[-1]

    @property
    def name(self) -> str:
        return self.data_path.name

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


def _words(buf: bytes, code: str) -> array:
    """``buf`` as little-endian unsigned integers (``code`` "I": 32 bits, "Q": 64 bits)."""
    out = array(code)
    out.frombytes(buf)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _entries(index: bytes) -> tuple[array, array, array]:
    """Lengths, CRCs and seqs of the whole entries of an index."""
    whole = index[: len(index) // ENTRY.size * ENTRY.size]
    words = _words(whole, "I")
    return words[0::8], words[1::8], _words(whole, "Q")[1::4]


def _entry_id(index: bytes, i: int) -> bytes:
    return index[i * ENTRY.size + 16 : (i + 1) * ENTRY.size]


def _ids(index: bytes, n: int, skip: Iterable[int] = ()) -> list[bytes]:
    """The stable ids of entries 0..n-1 but those in ``skip``."""
    size = n * ENTRY.size
    ids = list(
        map(
            index.__getitem__,
            map(slice, range(16, size, ENTRY.size), range(32, size + 1, ENTRY.size)),
        )
    )
    for i in sorted(skip, reverse=True):
        del ids[i]
    return ids


def _bad_records(data: bytes, rel: Sequence[int], index: bytes) -> list[int]:
    """Positions i of the records that fail their CRC or lack their comma.

    Record i is ``data[rel[i] : rel[i + 1]]`` (JSON and comma); its entry is entry i of
    ``index``. Bytes missing from either count as damage."""
    n = len(rel) - 1
    if n <= 0:
        return []
    size = n * ENTRY.size
    if len(index) < size:
        index += bytes(size - len(index))
    if len(data) < rel[-1]:
        data += bytes(rel[-1] - len(data))
    commas = list(map(operator.sub, rel[1:], repeat(1)))
    ids = map(
        index.__getitem__, map(slice, range(8, size, ENTRY.size), range(32, size + 1, ENTRY.size))
    )
    got = array(
        "I", map(zlib.crc32, map(data.__getitem__, map(slice, rel, commas)), map(zlib.crc32, ids))
    )
    want = _words(index[:size], "I")[1::8]
    seps = operator.itemgetter(*commas)(data) if n > 1 else (data[commas[0]],)
    if got == want and seps == (SEPARATOR[0],) * n:
        return []
    return [i for i in range(n) if got[i] != want[i] or seps[i] != SEPARATOR[0]]


def _block_crcs(data: bytes, rel: Sequence[int]) -> array:
    """CRC-32 of each block of ``BLOCK`` records; ``rel`` as for ``_bad_records``, from the
    first record of a segment."""
    bounds = list(rel[::BLOCK])
    if (len(rel) - 1) % BLOCK:
        bounds.append(rel[-1])
    return array("I", map(zlib.crc32, map(data.__getitem__, map(slice, bounds, bounds[1:]))))


def _extend_blocks(seg: _Segment, payloads: Iterable[bytes]) -> None:
    """Add readings just appended to ``seg`` (its ``ends`` not yet extended) to its blocks."""
    count, blocks = seg.count, seg.blocks
    for payload in payloads:
        if count % BLOCK == 0:
            blocks.append(0)
        blocks[-1] = zlib.crc32(SEPARATOR, zlib.crc32(payload, blocks[-1]))
        count += 1


def _matching_id(
    crc: int, seqs: Iterable[int], oids: Iterable[bytes], payload: bytes
) -> bytes | None:
    """The stable id among ``oids`` with which one of ``seqs`` and ``payload`` give ``crc``."""
    for oid in oids:
        if any(_crc(seq, oid, payload) == crc for seq in seqs):
            return oid
    return None


def _parse_record(
    decoder: json.JSONDecoder, text: str, data: bytes, p: int
) -> tuple[int, bytes] | None:
    """The record at byte ``p``: (where its comma is, its stable id), or None if the bytes
    there are not an observation's JSON followed by a comma. ``text`` is ``data`` decoded as
    Latin-1, so that its character positions are byte positions."""
    try:
        _, end = decoder.raw_decode(text, p)
    except ValueError:
        return None
    if end >= len(data) or data[end] != SEPARATOR[0]:
        return None
    try:
        obs = Observation.model_validate_json(data[p:end])
    except ValidationError:
        return None
    return end, obs.id.bytes


def recorded_losses(path: Path) -> tuple[int, int]:
    """(dropped when full, found damaged) as the outbox in ``path`` last recorded them, read
    without opening it (no lock: the gateway may be running)."""
    try:
        raw = json.loads((path / STATE_FILE).read_text())
        return int(raw.get("dropped_total", 0)), int(raw.get("damaged_total", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0, 0


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
        state = self._read_state()
        self._acked = state["acked"]
        self._dropped_total = state["dropped_total"]
        self._damaged_total = state["damaged_total"]
        known: set[int] = state["damaged"]
        self._acked_above, self._damaged, self._warned = [], set(), False
        firsts = self._list_segments()
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
                self._log_damage(seg, seqs, "found on open")
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

    def _list_segments(self) -> list[int]:
        """First seqs of the segments on disk; everything else is ignored (or, if it is the
        outbox's own debris, deleted)."""
        firsts: list[int] = []
        indexes: set[int] = set()
        strays: list[str] = []
        for p in self.path.iterdir():
            name = p.name
            if (m := _DATA_NAME.fullmatch(name)) and p.is_file():
                firsts.append(int(m[1]))
            elif (m := _INDEX_NAME.fullmatch(name)) and p.is_file():
                indexes.add(int(m[1]))
            elif _TMP_NAME.fullmatch(name) and p.is_file():
                p.unlink(missing_ok=True)  # a rebuild or a copy cut off by a crash
            elif name not in _OWN_FILES:
                strays.append(name)
        if strays:
            log.warning(
                "outbox %s: ignoring %d files that are not the outbox's own: %s",
                self.path, len(strays), ", ".join(sorted(strays)[:10]),
            )  # fmt: skip
        for first in sorted(indexes.difference(firsts)):
            log.warning(
                "outbox %s: deleting index %020d%s: its data file is gone",
                self.path, first, INDEX_SUFFIX,
            )  # fmt: skip
            (self.path / f"{first:020d}{INDEX_SUFFIX}").unlink(missing_ok=True)
        return sorted(firsts)

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
        name = f"{first_seq:020d}"
        return _Segment(
            first_seq, self.path / f"{name}{DATA_SUFFIX}", self.path / f"{name}{INDEX_SUFFIX}"
        )

    # --- checking a segment on open -----------------------------------------------------
    def _scan(
        self, first_seq: int, *, last: bool, want_ids: bool = True
    ) -> tuple[_Segment, list[bytes], list[int], bool]:
        """Load and check one segment: (it, the stable ids of its good readings, the seqs of
        its damaged ones, whether its files were cut or its index rebuilt)."""
        seg = self._new_segment(first_seq)
        data = seg.data_path.read_bytes()
        if not data:
            return seg, [], [], False  # started but never written: nothing to check
        try:
            index: bytes | None = seg.index_path.read_bytes()
        except FileNotFoundError:
            index = None
        if index is not None:
            lens, _, seqs = _entries(index)
            n = len(lens)
            if (
                len(index) == n * ENTRY.size
                and seqs == array("Q", range(first_seq, first_seq + n))
                and sum(lens) + n == len(data)
            ):
                # Whole: every record where the index says; check each one's CRC and comma.
                seg.ends = array("Q", accumulate(map((1).__add__, lens), initial=0))
                rel = seg.ends.tolist()
                bad = _bad_records(data, rel, index)
                seg.blocks = _block_crcs(data, rel)
                ids = _ids(index, n, bad) if want_ids else []
                return seg, ids, [first_seq + i for i in bad], False
            # Not whole. A crash in the middle of an add leaves, at the end of the LAST
            # segment, an index shorter than the data or entries for data not written.
            k, pos = 0, 0
            while k < n and seqs[k] == first_seq + k and pos + lens[k] + 1 <= len(data):
                pos += lens[k] + 1
                k += 1
            ends = array("Q", accumulate(map((1).__add__, lens[:k]), initial=0))
            # (Not torn, but a damaged length, if a whole record follows.)
            torn = last and (
                k == n
                or (
                    pos + lens[k] + 1 > len(data)
                    and _parse_record(json.JSONDecoder(), data.decode("latin-1"), data, pos) is None
                )
            )
            if torn and not _bad_records(data, ends.tolist(), index):
                log.error(
                    "outbox %s: segment %s ends with a record that is not whole (a write cut"
                    " off by a crash): keeping %d readings, removing %d bytes of data",
                    self.path, seg.name, k, len(data) - pos,
                )  # fmt: skip
                for path, size in ((seg.data_path, pos), (seg.index_path, k * ENTRY.size)):
                    with open(path, "r+b") as f:
                        f.truncate(size)
                        os.fsync(f.fileno())
                seg.ends = ends
                seg.blocks = _block_crcs(data, ends.tolist())
                return seg, _ids(index, k), [], True
        ids, bad = self._rebuild(seg, data, index or b"")
        return seg, ids, [first_seq + i for i in bad], True

    def _rebuild(self, seg: _Segment, data: bytes, old: bytes) -> tuple[list[bytes], list[int]]:
        """Rebuild the index of ``seg`` from its data, checking each record against the old
        index's entry for it where there is one; cut off bytes at the end that are not a
        whole record. Returns the good readings' stable ids and the damaged ones' positions."""
        lens, crcs, seqs = _entries(old)
        layout: dict[int, int] = {}  # byte offset -> old entry starting there (by lengths)
        pos = 0
        for i, n in enumerate(lens):
            if pos + n + 1 > len(data):
                break
            layout[pos] = i
            pos += n + 1
        # The entry for a record, if lengths before it are damaged: by its id, else its seq.
        by_id = {_entry_id(old, i): i for i in range(len(lens))}
        by_seq = {s: i for i, s in enumerate(seqs)}
        text = data.decode("latin-1")  # one character per byte: positions stay byte offsets
        decoder = json.JSONDecoder()
        entries: list[bytes] = []
        ends = array("Q", [0])
        ids: list[bytes] = []
        bad: list[int] = []
        p = 0
        while p < len(data):
            seq = seg.first_seq + len(entries)
            i = layout.get(p)
            end = p + lens[i] if i is not None else -1
            oid = None
            if i is not None and end < len(data) and data[end] == SEPARATOR[0]:
                oid = _matching_id(crcs[i], (seqs[i], seq), (_entry_id(old, i),), data[p:end])
            if oid is not None:
                ok = True  # exactly what was written (the entry's seq may be what is damaged)
            elif (rec := _parse_record(decoder, text, data, p)) is not None:
                end, oid = rec
                # Valid JSON. If the old index has an entry for it (by its stable id, else one
                # that lines up with it or has its seq), its CRC says whether these bytes are
                # the ones written.
                payload = data[p:end]
                j = by_id.get(oid)
                if j is None:
                    j = i if i is not None and lens[i] == end - p else by_seq.get(seq)
                # With no entry for it, the parse and the validation are all there is.
                ok = j is None or (
                    _matching_id(crcs[j], (seqs[j], seq), (oid, _entry_id(old, j)), payload)
                    is not None
                )
            else:
                # Not a record: damaged up to where the next one starts.
                end = self._next_record(decoder, text, data, p, layout, lens)
                if end is None:
                    break  # nothing whole follows: a torn end
                oid = _entry_id(old, i) if i is not None else bytes(16)
                ok = False
            crc = _crc(seq, oid, data[p:end])
            if ok:
                ids.append(oid)
            else:
                bad.append(len(entries))
                crc ^= 0xFFFFFFFF  # so that it never passes a check, this time or later
            entries.append(ENTRY.pack(end - p, crc, seq, oid))
            p = end + 1
            ends.append(p)
        if p < len(data):
            with open(seg.data_path, "r+b") as f:
                f.truncate(p)
                os.fsync(f.fileno())
        self._write_file(seg.index_path, b"".join(entries))
        log.error(
            "outbox %s: segment %s: index %s; rebuilt it from the data: %d readings, %d of"
            " them damaged, %d bytes at the end that are not a whole record removed",
            self.path, seg.name, "missing" if not old else "inconsistent with the data",
            len(entries), len(bad), len(data) - p,
        )  # fmt: skip
        seg.ends = ends
        seg.blocks = _block_crcs(data, ends.tolist())
        return ids, bad

    @staticmethod
    def _next_record(
        decoder: json.JSONDecoder, text: str, data: bytes, p: int, layout: dict[int, int],
        lens: array,
    ) -> int | None:  # fmt: skip
        """Where the comma that ends the damaged bytes from ``p`` is (the next record starts
        after it), or None if no whole record follows."""
        if (i := layout.get(p)) is not None:
            # The old index knows this record's length: trust it if a record follows.
            end = p + lens[i]
            if end == len(data) - 1 and data[end] == SEPARATOR[0]:
                return end
            if data[end] == SEPARATOR[0] and _parse_record(decoder, text, data, end + 1):
                return end
        at = p
        while (at := text.find(_RECORD_START, at + 1)) >= 0:
            if _parse_record(decoder, text, data, at + 1) is not None:
                return at
        return None

    def _write_file(self, path: Path, content: bytes) -> None:
        """Replace ``path`` with ``content`` durably (a temporary file, fsync, rename)."""
        tmp = path.with_name(path.name + TMP_SUFFIX)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir()

    def _log_damage(self, seg: _Segment, seqs: Sequence[int], when: str) -> None:
        for seq in seqs[:LOG_EACH]:
            log.error(
                "outbox %s: reading seq %d in segment %s is damaged (%s: its checksum or"
                " separator does not match); it is skipped and will not be sent",
                self.path, seq, seg.name, when,
            )  # fmt: skip
        if len(seqs) > LOG_EACH:
            log.error(
                "outbox %s: and %d more damaged readings in segment %s (seqs %d-%d)",
                self.path, len(seqs) - LOG_EACH, seg.name, seqs[LOG_EACH], seqs[-1],
            )  # fmt: skip

    def _mark_damaged(self, seg: _Segment, seqs: list[int], when: str) -> None:
        self._log_damage(seg, seqs, when)
        self._damaged.update(seqs)
        self._damaged_total += len(seqs)
        self._merge_acked((s, s) for s in seqs)
        self._save_state(fsync=True)
        self._delete_acked_segments()

    # --- state ----------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"acked": 0, "dropped_total": 0, "damaged_total": 0}
        try:
            raw = json.loads((self.path / STATE_FILE).read_text())
            for key in state:
                state[key] = int(raw.get(key, 0))
            state["damaged"] = {int(s) for s in raw.get("damaged", ())}
        except FileNotFoundError:
            state["damaged"] = set()
        except (ValueError, TypeError, AttributeError, OSError) as exc:
            # Losing the watermark only means acknowledged readings are sent again.
            log.error("outbox %s: unreadable %s (%s); resending what is on disk", self.path,
                      STATE_FILE, exc)  # fmt: skip
            state = {"acked": 0, "dropped_total": 0, "damaged_total": 0, "damaged": set()}
        return state

    def _write_state(self, *, fsync: bool) -> None:
        self._damaged = {s for s in self._damaged if s > self._acked}
        tmp = self.path / f"{STATE_FILE}{TMP_SUFFIX}"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "acked": self._acked,
                    "dropped_total": self._dropped_total,
                    "damaged_total": self._damaged_total,
                    "damaged": sorted(self._damaged),
                },
                f,
            )
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path / STATE_FILE)

    def _save_state(self, *, fsync: bool) -> None:
        """``_write_state``, logging instead of raising: a lost watermark only means that
        acknowledged readings are sent again (open takes it from the oldest file left)."""
        try:
            self._write_state(fsync=fsync)
        except OSError as exc:
            log.error("outbox %s: cannot write %s (%s)", self.path, STATE_FILE, exc)

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
            _write_all(data_fd, b"".join(chunks))
            _write_all(index_fd, b"".join(entries))
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
                self._fsync_dir()  # the new files' names are durable too
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

    def _compact_first(self) -> bool:
        """Free the acknowledged readings at the front of the first segment: copy the rest to
        a new segment file named by its first seq, then delete the old one. False if there
        is nothing to free or the copy cannot be written."""
        if not self._segments:
            return False
        seg = self._segments[0]
        keep = self._acked + 1
        if not seg.first_seq < keep < seg.end_seq:
            return False
        a = keep - seg.first_seq
        start = seg.ends[a]
        rel = [e - start for e in seg.ends[a:]]
        new = self._new_segment(keep)
        try:
            with open(seg.data_path, "rb") as f:
                data = os.pread(f.fileno(), seg.size - start, start)
            with open(seg.index_path, "rb") as f:
                index = os.pread(f.fileno(), (seg.count - a) * ENTRY.size, a * ENTRY.size)
            # The copy carries the bytes on: check them first (its blocks vouch for them).
            bad = [keep + i for i in _bad_records(data, rel, index)]
            if fresh := [s for s in bad if s not in self._damaged and not self._is_acked(s)]:
                self._mark_damaged(seg, fresh, "found while freeing space")
                return self._compact_first()  # the watermark may have moved past them
            self._save_state(fsync=True)  # the watermark, before the readings below it go
            self._write_file(new.data_path, data)
            self._write_file(new.index_path, index)
        except OSError as exc:
            log.error("outbox %s: cannot copy %s to free space (%s)", self.path, seg.name, exc)
            new.data_path.with_name(new.data_path.name + TMP_SUFFIX).unlink(missing_ok=True)
            if new.data_path.exists() and not new.index_path.exists():
                new.data_path.unlink()
            return False
        if len(self._segments) == 1:
            self._close_active()
        freed = seg.size - len(data)
        seg.unlink()
        new.ends = array("Q", rel)
        new.blocks = _block_crcs(data, rel)
        self._segments[0] = new
        log.warning(
            "outbox %s: freed %d bytes of acknowledged readings (segment %s copied from seq"
            " %d to %s)",
            self.path, freed, seg.name, keep, new.name,
        )  # fmt: skip
        return True

    def _drop_oldest_segment(self) -> None:
        """The disk is full: drop the oldest segment's pending readings and delete it."""
        seg = self._segments[0]
        ranges = [(lo, hi) for s, lo, hi in self._pending_ranges() if s is seg]
        dropped = sum(hi - lo + 1 for lo, hi in ranges)
        self._dropped_total += dropped
        self._advance(seg.end_seq - 1)
        self._save_state(fsync=True)  # the count of dropped readings must not be lost
        self._delete_acked_segments()
        log.error(
            "outbox %s: the disk is full: dropped the %d oldest readings (seqs %s) and"
            " deleted segment %s to make room",
            self.path, dropped, f"{ranges[0][0]}-{ranges[-1][1]}" if ranges else "none",
            seg.name,
        )  # fmt: skip

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
        self._save_state(fsync=True)  # the count of dropped readings must not be lost
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
        """Inclusive seq ranges of readings not acknowledged (nor damaged), after
        ``after_seq``, in order, each within one segment (given with it)."""
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
        with self._lock:
            self._check_open()
            while (out := self._read_checked(limit, after_seq, with_ids)) is None:
                pass  # damage found: the pending ranges changed, read them again
            return out

    def _read_checked(
        self, limit: int, after_seq: int, with_ids: bool
    ) -> list[tuple[Run, list[bytes]]] | None:
        """The runs, each read as whole blocks whose CRCs match; None if a block did not and
        one of its pending readings turned out damaged (now skipped)."""
        out: list[tuple[Run, list[bytes]]] = []
        left = limit
        for seg, lo, hi in list(self._pending_ranges(after_seq)):
            if left <= 0:
                break
            hi = min(hi, lo + left - 1)
            a, b = lo - seg.first_seq, hi - seg.first_seq + 1
            first_block = a // BLOCK
            start, stop = first_block * BLOCK, min(seg.count, b + (-b) % BLOCK)
            ends = seg.ends
            base = ends[start]
            with open(seg.data_path, "rb") as f:
                data = os.pread(f.fileno(), ends[stop] - base, base)
            bounds = [e - base for e in ends[start : stop + 1 : BLOCK]]
            if (stop - start) % BLOCK:
                bounds.append(ends[stop] - base)
            got = array("I", map(zlib.crc32, map(data.__getitem__, map(slice, bounds, bounds[1:]))))
            if got != seg.blocks[first_block : first_block + len(got)] and self._recheck(
                seg, data, start, stop, got
            ):
                return None
            ids: list[bytes] = []
            if with_ids:
                with open(seg.index_path, "rb") as f:
                    index = os.pread(f.fileno(), (b - a) * ENTRY.size, a * ENTRY.size)
                ids = _ids(index, b - a)
            out.append((Run(lo, data, ends[a : b + 1], base), ids))
            left -= b - a
        return out

    def _recheck(self, seg: _Segment, data: bytes, start: int, stop: int, got: array) -> bool:
        """Bytes of records start..stop-1 changed since they were checked: check each one
        against its index entry. True if pending readings among them are damaged."""
        base = seg.ends[start]
        rel = [e - base for e in seg.ends[start : stop + 1]]
        with open(seg.index_path, "rb") as f:
            index = os.pread(f.fileno(), (stop - start) * ENTRY.size, start * ENTRY.size)
        bad = [seg.first_seq + start + i for i in _bad_records(data, rel, index)]
        # The blocks now hold what is on disk, so that reading the good records near a
        # damaged one does not check them one by one every time.
        first_block = start // BLOCK
        seg.blocks[first_block : first_block + len(got)] = got
        fresh = [s for s in bad if s not in self._damaged and not self._is_acked(s)]
        if fresh:
            self._mark_damaged(seg, fresh, "found on read")
        return bool(fresh)

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
