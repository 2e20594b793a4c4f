"""The outbox's files on disk: a segment's data and index, and the checks of their bytes.

Each segment is two files, named by the seq of its first reading (20 digits):

- ``<first seq>.seg``: the readings' JSON, exactly as the wire carries it, each followed by
  a comma. A run of consecutive readings is therefore one slice of the file that already is
  the body of a batch's ``observations`` array: replay copies bytes, it parses nothing.
- ``<first seq>.idx``: a fixed 32-byte entry per reading (``ENTRY``: JSON length, CRC-32 of
  seq, id and JSON, seq, stable id), so that open can check the data and rebuild the
  duplicate window.

Beside them the directory holds ``state.json`` (see gateway/outbox_state.py) and ``lock``.
Files in the directory that are not the outbox's own (anything but ``<20 digits>.seg`` /
``.idx``, ``state.json`` and ``lock``) are ignored, with one warning per open. An index
without its data file is deleted; so are the outbox's own ``*.tmp`` files.

Block CRCs: while it checks a segment's records ``open`` also keeps the CRC-32 of each block
of ``BLOCK`` records (4 bytes per 64 readings), and ``add`` extends them from the bytes it
writes. ``read`` reads whole blocks and compares their CRCs (one ``zlib.crc32`` per 64
readings, on buffers big enough for zlib to release the GIL): bytes that changed on disk
since they were checked fail, and the records of that block are then checked one by one
against their index entries (``_bad_records``). (A check of each record's CRC on every read
cost about 65 ms per 100,000 readings and took replay from 56 % to 44 % of bare paho, below
its target; see docs/gateway.md.)
"""

from __future__ import annotations

import logging
import operator
import os
import re
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

log = logging.getLogger("gateway.outbox")  # the outbox's logger, whichever module logs

STATE_FILE = "state.json"
LOCK_FILE = "lock"
DATA_SUFFIX, INDEX_SUFFIX, TMP_SUFFIX = ".seg", ".idx", ".tmp"
ENTRY = struct.Struct("<IIQ16s")  # JSON length, CRC-32, seq, stable id
SEPARATOR = b","
BLOCK = 64  # readings per block CRC kept in memory, checked on every read

_DATA_NAME = re.compile(r"(\d{20})\.seg")
_INDEX_NAME = re.compile(r"(\d{20})\.idx")
_TMP_NAME = re.compile(r"\d{20}\.(?:seg|idx)\.tmp")
_OWN_FILES = {STATE_FILE, STATE_FILE + TMP_SUFFIX, LOCK_FILE}


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


def _write_file(path: Path, content: bytes) -> None:
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
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def new_segment(directory: Path, first_seq: int) -> _Segment:
    """The (not yet loaded) segment of ``directory`` whose first reading is ``first_seq``."""
    name = f"{first_seq:020d}"
    return _Segment(
        first_seq, directory / f"{name}{DATA_SUFFIX}", directory / f"{name}{INDEX_SUFFIX}"
    )


def list_segments(directory: Path) -> list[int]:
    """First seqs of the segments on disk; everything else is ignored (or, if it is the
    outbox's own debris, deleted)."""
    firsts: list[int] = []
    indexes: set[int] = set()
    strays: list[str] = []
    for p in directory.iterdir():
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
            directory, len(strays), ", ".join(sorted(strays)[:10]),
        )  # fmt: skip
    for first in sorted(indexes.difference(firsts)):
        log.warning(
            "outbox %s: deleting index %020d%s: its data file is gone",
            directory, first, INDEX_SUFFIX,
        )  # fmt: skip
        (directory / f"{first:020d}{INDEX_SUFFIX}").unlink(missing_ok=True)
    return sorted(firsts)
