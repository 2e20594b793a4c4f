"""The outbox's disk policy: the limit on the readings waiting, and making room on a full disk.

The readings waiting are bounded by ``max_bytes`` of JSON. At ``WARN_FRACTION`` of it the
outbox logs a warning (and reports ``near_full``); at the limit it drops the OLDEST readings,
counts them and logs each drop (``_enforce_limit``).

A full disk (or any write error) in ``add`` first frees acknowledged space: the first
segment's readings not yet acknowledged are copied to a new segment file and the old one
deleted (``_compact_first``); if the disk is still full the oldest segment's pending readings
are dropped and the segment deleted (``_drop_oldest_segment``). gateway/outbox.py describes
the whole policy.

``_MakingRoom`` is a part of ``gateway.outbox.Outbox`` (a mixin): it uses the outbox's
segments, watermark and state.
"""

from __future__ import annotations

import logging
import os
from array import array
from pathlib import Path

from gateway.outbox_segments import (
    ENTRY,
    TMP_SUFFIX,
    _bad_records,
    _block_crcs,
    _Segment,
    _write_file,
)

log = logging.getLogger("gateway.outbox")  # the outbox's logger, whichever module logs

WARN_FRACTION = 0.8


class _MakingRoom:
    """The disk policy of ``Outbox``."""

    path: Path
    max_bytes: int
    _segments: list[_Segment]
    _acked: int
    _damaged: set[int]
    _dropped_total: int
    _warned: bool

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
            _write_file(new.data_path, data)
            _write_file(new.index_path, index)
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
