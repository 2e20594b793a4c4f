"""Checking a segment when the outbox opens: its records, a torn tail, a rebuilt index.

A reading is only ever sent after its bytes were checked against its CRC:

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
- Reads check again, cheaply, with the block CRCs (see gateway/outbox_segments.py); the
  records of a block that fails are checked one by one, and those that fail are damaged as
  above.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate
from pathlib import Path

from pydantic import ValidationError

from gateway.outbox_segments import (
    ENTRY,
    SEPARATOR,
    _bad_records,
    _block_crcs,
    _crc,
    _entries,
    _entry_id,
    _ids,
    _Segment,
    _write_file,
    log,
)
from vitalvagt.observation import Observation

LOG_EACH = 20  # damaged readings logged one by one per segment and check; the rest summed up

_RECORD_START = ',{"id":'  # where the next record may begin, when bytes before it are damaged


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


def scan_segment(
    directory: Path, seg: _Segment, *, last: bool, want_ids: bool = True
) -> tuple[_Segment, list[bytes], list[int], bool]:
    """Load and check one segment: (it, the stable ids of its good readings, the seqs of
    its damaged ones, whether its files were cut or its index rebuilt)."""
    first_seq = seg.first_seq
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
                directory, seg.name, k, len(data) - pos,
            )  # fmt: skip
            for path, size in ((seg.data_path, pos), (seg.index_path, k * ENTRY.size)):
                with open(path, "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
            seg.ends = ends
            seg.blocks = _block_crcs(data, ends.tolist())
            return seg, _ids(index, k), [], True
    ids, bad = rebuild_index(directory, seg, data, index or b"")
    return seg, ids, [first_seq + i for i in bad], True


def rebuild_index(
    directory: Path, seg: _Segment, data: bytes, old: bytes
) -> tuple[list[bytes], list[int]]:
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
                _matching_id(crcs[j], (seqs[j], seq), (oid, _entry_id(old, j)), payload) is not None
            )
        else:
            # Not a record: damaged up to where the next one starts.
            end = _next_record(decoder, text, data, p, layout, lens)
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
    _write_file(seg.index_path, b"".join(entries))
    log.error(
        "outbox %s: segment %s: index %s; rebuilt it from the data: %d readings, %d of"
        " them damaged, %d bytes at the end that are not a whole record removed",
        directory, seg.name, "missing" if not old else "inconsistent with the data",
        len(entries), len(bad), len(data) - p,
    )  # fmt: skip
    seg.ends = ends
    seg.blocks = _block_crcs(data, ends.tolist())
    return ids, bad


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


def log_damage(directory: Path, seg: _Segment, seqs: Sequence[int], when: str) -> None:
    for seq in seqs[:LOG_EACH]:
        log.error(
            "outbox %s: reading seq %d in segment %s is damaged (%s: its checksum or"
            " separator does not match); it is skipped and will not be sent",
            directory, seq, seg.name, when,
        )  # fmt: skip
    if len(seqs) > LOG_EACH:
        log.error(
            "outbox %s: and %d more damaged readings in segment %s (seqs %d-%d)",
            directory, len(seqs) - LOG_EACH, seg.name, seqs[LOG_EACH], seqs[-1],
        )  # fmt: skip
