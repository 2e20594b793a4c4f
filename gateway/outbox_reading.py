"""Reading the outbox: the pending readings in order, as runs of checked bytes.

``read`` / ``peek`` return pending readings in order, one ``pread`` per pending range, of
whole blocks of ``BLOCK`` readings whose CRCs are compared with those kept since the bytes
were checked (see gateway/outbox_segments.py). Bytes that changed on disk since then fail;
the records of that block are checked one by one against their index entries, and those that
fail are damaged (logged, counted, skipped: never sent; see gateway/outbox_scan.py).

``_Reading`` is a part of ``gateway.outbox.Outbox`` (a mixin): it uses the outbox's segments,
watermark and lock.
"""

from __future__ import annotations

import os
import uuid
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.outbox_segments import BLOCK, ENTRY, _bad_records, _ids, _Segment


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


class _Reading:
    """The read path of ``Outbox``."""

    _segments: list[_Segment]
    _acked: int
    _acked_above: list[tuple[int, int]]
    _damaged: set[int]

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
