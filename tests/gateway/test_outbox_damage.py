"""The outbox under damage and a full disk (issue 9, defects 4 and 13).

Real files in tmp_path, real flipped bytes, real deleted files. The full disk alone is
simulated (see ``full_disk``): a test cannot fill a real disk, and mounting a small tmpfs
needs privileges that CI does not have.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import gateway.outbox as outbox_module
import gateway.outbox_segments as outbox_segments
from gateway.outbox import Outbox, OutboxError
from tests.gateway.test_outbox import reading as outbox_reading
from vitalvagt.observation import Observation

T0 = datetime(2025, 1, 1, 6, 0, tzinfo=UTC)
ENTRY = struct.Struct("<IIQ16s")  # the index entry: JSON length, CRC-32, seq, stable id


def reading(i: int) -> Observation:
    return outbox_reading(i, "gw-damage")


def ids(*ranges: range) -> list[str]:
    return [str(reading(i).id) for r in ranges for i in r]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def record_spans(seg: Path) -> list[tuple[int, int]]:
    """(offset, JSON length) of each record of a segment, from its index."""
    spans, pos = [], 0
    for n, _crc, _seq, _oid in ENTRY.iter_unpack(seg.with_suffix(".idx").read_bytes()):
        spans.append((pos, n))
        pos += n + 1
    return spans


def patch_file(path: Path, offset: int, new: bytes) -> None:
    """Overwrite bytes in place, as damage on the medium would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(new)


def flip_value(seg: Path, record: int, old: bytes, new: bytes) -> None:
    """Change a reading's value inside valid JSON (an SpO2 of 95 becomes 85, say)."""
    offset, n = record_spans(seg)[record]
    payload = seg.read_bytes()[offset : offset + n]
    assert payload.count(old) == 1, payload
    patch_file(seg, offset + payload.index(old), new)


def all_pending(ob: Outbox) -> list[str]:
    return [p.obs_id for p in ob.peek(100_000)]


def sent_bodies(ob: Outbox) -> list[Observation]:
    """What the publisher would send: every run's batch body, parsed as the hub would."""
    out = []
    for run in ob.read(100_000):
        out += [
            Observation.model_validate(o)
            for o in json.loads(b"[" + run.joined(0, run.count) + b"]")
        ]
    return out


def damage_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "SEGMENT_BYTES", 40_000)  # about 170 readings each


# --- defect 1: one bad record costs that record alone ----------------------------------


def test_a_flipped_byte_in_the_middle_of_the_active_segment_costs_that_reading_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        for i in range(0, 1000, 100):
            ob.add(reading(j) for j in range(i, i + 100))
        seq10 = ob.peek(11)[10].seq
    (seg,) = segments(path)
    offset, n = record_spans(seg)[10]
    patch_file(seg, offset + n // 2, bytes([seg.read_bytes()[offset + n // 2] ^ 0x01]))

    with caplog.at_level(logging.ERROR), Outbox(path) as ob:
        assert all_pending(ob) == ids(range(10), range(11, 1000))
        stats = ob.stats()
        assert (stats.pending, stats.damaged_total) == (999, 1)
        assert seq10 not in [p.seq for p in ob.peek(2000)]
        assert [o.id for o in sent_bodies(ob)] == [reading(i).id for i in range(1000) if i != 10]
        assert ob.add([reading(1000)]) == 1  # appending carries on after it
    (message,) = damage_messages(caplog)
    assert f"seq {seq10}" in message and seg.name in message
    # ... and names it, never its content.
    assert str(reading(10).id) not in message and "spo2" not in message

    caplog.clear()
    with caplog.at_level(logging.ERROR), Outbox(path) as ob:  # known now: not counted again
        assert ob.stats().damaged_total == 1
        assert all_pending(ob) == ids(range(10), range(11, 1001))
        ob.remove([p.seq for p in ob.peek(2000)])
        assert ob.stats().pending == 0
        assert segments(path) == []  # the watermark moved past the damaged reading
    assert damage_messages(caplog) == []
    assert json.loads((path / "state.json").read_text())["damaged_total"] == 1


def test_a_damaged_separator_costs_that_reading_alone_and_batches_stay_valid_json(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(50))
    (seg,) = segments(path)
    offset, n = record_spans(seg)[20]
    patch_file(seg, offset + n, b";")  # the comma after reading 20
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(20), range(21, 50))
        assert [o.id for o in sent_bodies(ob)] == [reading(i).id for i in range(50) if i != 20]
        assert ob.stats().damaged_total == 1


def test_data_cut_short_by_a_power_cut_is_a_torn_tail_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(20))
    (seg,) = segments(path)
    offset, _ = record_spans(seg)[19]
    os.truncate(seg, offset + 7)  # the index has the last entry, the data only 7 bytes of it
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(19))
        assert ob.stats().damaged_total == 0
        assert ob.add([reading(19)]) == 1
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(20))


# --- defect 2: a missing or damaged index is rebuilt from the data ----------------------


@pytest.mark.parametrize("which", ["older", "active"])
@pytest.mark.usefixtures("small_segments")
def test_a_missing_index_is_rebuilt_from_the_data(
    tmp_path: Path, which: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        for i in range(600):
            ob.add([reading(i)])
        before = [(p.seq, p.obs_id, p.payload) for p in ob.peek(1000)]
    segs = segments(path)
    assert len(segs) >= 3
    victim = segs[0] if which == "older" else segs[-1]
    index = victim.with_suffix(".idx")
    original = index.read_bytes()
    index.unlink()

    with caplog.at_level(logging.ERROR), Outbox(path) as ob:
        assert [(p.seq, p.obs_id, p.payload) for p in ob.peek(1000)] == before
        assert ob.stats().damaged_total == 0
        assert ob.add([reading(600)]) == 1
    assert any(
        "rebuilt" in r.getMessage() and victim.name in r.getMessage() for r in caplog.records
    )
    assert index.read_bytes()[: len(original)] == original  # the same entries as written
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(601))


@pytest.mark.parametrize("damage", ["seq", "length"])
@pytest.mark.usefixtures("small_segments")
def test_an_index_inconsistent_with_its_data_is_rebuilt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        for i in range(400):
            ob.add([reading(i)])
    older = segments(path)[0]
    index = older.with_suffix(".idx")
    if damage == "seq":
        patch_file(index, 30 * ENTRY.size + 8, (12345678).to_bytes(8, "little"))
    else:  # a length far beyond the file
        patch_file(index, 30 * ENTRY.size, (10**6).to_bytes(4, "little"))
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(400))
        assert ob.stats().damaged_total == 0
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(400))


@pytest.mark.usefixtures("small_segments")
def test_a_rebuild_still_catches_a_changed_value_where_the_old_index_lines_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        for i in range(400):
            ob.add([reading(i)])
    older = segments(path)[0]
    patch_file(older.with_suffix(".idx"), 60 * ENTRY.size + 8, (999).to_bytes(8, "little"))
    flip_value(older, 15, b'"value":95.0', b'"value":85.0')  # valid JSON, wrong value
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(15), range(16, 400))
        assert ob.stats().damaged_total == 1
        assert all(o.value != 85 for o in sent_bodies(ob))


def test_without_an_index_unparsable_bytes_cost_one_reading(tmp_path: Path) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(30))
    (seg,) = segments(path)
    offset, _ = record_spans(seg)[7]
    seg.with_suffix(".idx").unlink()
    patch_file(seg, offset + 2, b"\xff")  # inside '"id"': no longer JSON
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(7), range(8, 30))
        assert ob.stats().damaged_total == 1
        assert ob.add([reading(30)]) == 1
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(7), range(8, 31))
        assert ob.stats().damaged_total == 1


# --- defect 3: a failed open releases the lock ------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_failed_open_releases_the_lock_and_its_files(tmp_path: Path) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(3))
    old_db = tmp_path / "outbox.db"
    old_db.write_bytes(b"this is not an SQLite database" * 100)
    fds = open_fds()
    with pytest.raises(OutboxError, match="cannot read the old outbox"):
        Outbox(path, legacy_sqlite=old_db).open()
    with Outbox(path) as ob:  # not "in use by another process"
        assert all_pending(ob) == ids(range(3))
    assert open_fds() == fds  # nor a file left open


def test_an_exception_while_scanning_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(3))

    def fail(*_a: object, **_k: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    fds = open_fds()
    with monkeypatch.context() as m:
        m.setattr(Outbox, "_scan", fail)
        with pytest.raises(OSError, match="Input/output"):
            Outbox(path).open()
    with Outbox(path) as ob:  # not "in use by another process"
        assert ob.stats().pending == 3
    assert open_fds() == fds


# --- defect 4: every read checks the CRCs, older segments too ----------------------------


@pytest.mark.usefixtures("small_segments")
def test_a_value_changed_in_an_older_segment_before_open_is_never_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        for i in range(400):
            ob.add([reading(i)])
    older = segments(path)[0]
    flip_value(older, 5, b'"value":95.0', b'"value":85.0')
    with caplog.at_level(logging.ERROR), Outbox(path) as ob:
        sent = sent_bodies(ob)
        assert [o.id for o in sent] == [reading(i).id for i in range(400) if i != 5]
        assert all(o.value != 85 for o in sent)
        assert ob.stats().damaged_total == 1
    (message,) = damage_messages(caplog)
    assert older.name in message


@pytest.mark.parametrize("which", ["older", "active"])
@pytest.mark.usefixtures("small_segments")
def test_a_value_changed_on_disk_while_open_is_caught_on_read(
    tmp_path: Path, which: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o"
    with caplog.at_level(logging.ERROR), Outbox(path) as ob:
        for i in range(400):
            ob.add([reading(i)])
        segs = segments(path)
        victim = segs[0] if which == "older" else segs[-1]
        first = 400 - len(record_spans(victim)) if which == "active" else 0
        record = 20 + (5 - first) % 10  # a reading with an SpO2 of 95
        flip_value(victim, record, b'"value":95.0', b'"value":85.0')
        damaged = reading(first + record).id
        sent = sent_bodies(ob)
        assert [o.id for o in sent] == [
            reading(i).id for i in range(400) if reading(i).id != damaged
        ]
        assert all(o.value != 85 for o in sent)
        assert str(damaged) not in all_pending(ob)
        stats = ob.stats()
        assert (stats.pending, stats.damaged_total) == (399, 1)
        assert len(damage_messages(caplog)) == 1
        assert "found on read" in damage_messages(caplog)[0]
    with Outbox(path) as ob:  # found again on open, known: counted once
        assert ob.stats().damaged_total == 1
        assert str(damaged) not in all_pending(ob)


# --- defect 5: files that are not the outbox's own ---------------------------------------


def test_files_that_are_not_the_outboxs_own_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(5))
    strays = {"notes.seg": b"hello", "abc.idx": b"x" * 32, "0001.seg.tmp": b"", "0001.seg": b"{}"}
    for name, content in strays.items():
        (path / name).write_bytes(content)
    (path / "backup.seg").mkdir()
    with caplog.at_level(logging.WARNING), Outbox(path) as ob:
        assert all_pending(ob) == ids(range(5))
        assert ob.add([reading(5)]) == 1
    warnings = [r.getMessage() for r in caplog.records if "not the outbox's own" in r.getMessage()]
    assert len(warnings) == 1 and all(name in warnings[0] for name in strays)
    for name, content in strays.items():  # left alone
        assert (path / name).read_bytes() == content


# --- defect 13: a full disk -----------------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int | None]]:
    """Simulates a full disk, because the test cannot fill a real one: while ``budget`` is
    set, a write of the outbox's files (``_write_all``) that would take the directory's
    files beyond that many bytes writes what fits and fails with ENOSPC, as the kernel
    does. Deleting files gives the space back, as on a real disk."""
    disk: dict[str, int | None] = {"budget": None, "refused": 0}
    real = outbox_segments._write_all

    def write_all(fd: int, data: bytes) -> None:
        budget = disk["budget"]
        if budget is not None:
            directory = Path(os.readlink(f"/proc/self/fd/{fd}")).parent
            used = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
            room = max(0, budget - used)
            if len(data) > room:
                real(fd, bytes(data[:room]))
                disk["refused"] = (disk["refused"] or 0) + 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(outbox_segments, "_write_all", write_all)
    yield disk


def disk_used(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def test_a_full_disk_frees_the_acknowledged_part_of_the_active_segment(
    tmp_path: Path, full_disk: dict[str, int | None]
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(300))
        ob.remove([p.seq for p in ob.peek(290)])  # all sent but the last 10
        (old,) = segments(path)
        full_disk["budget"] = disk_used(path) + 5_000  # room for 10 readings, not for 50
        assert ob.add(reading(i) for i in range(300, 350)) == 50
        assert full_disk["refused"]
        assert not old.exists()  # the acknowledged 290 readings gave their space back
        stats = ob.stats()
        assert (stats.pending, stats.dropped_total) == (60, 0)
        assert all_pending(ob) == ids(range(290, 350))
    full_disk["budget"] = None
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(290, 350))


@pytest.mark.usefixtures("small_segments")
def test_a_full_disk_drops_the_oldest_readings_to_store_the_newest(
    tmp_path: Path, full_disk: dict[str, int | None], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o"
    with caplog.at_level(logging.ERROR), Outbox(path) as ob:
        for i in range(500):  # offline: nothing acknowledged
            ob.add([reading(i)])
        first = segments(path)[0]
        in_first = len(record_spans(first))
        full_disk["budget"] = disk_used(path)  # not one byte more
        assert ob.add([reading(500)]) == 1
        assert not first.exists()
        stats = ob.stats()
        assert stats.dropped_total == in_first
        assert all_pending(ob) == ids(range(in_first, 501))
        assert ob.add([reading(501)]) == 1  # the room made is used
    assert any("disk is full" in r.getMessage() for r in caplog.records)
    full_disk["budget"] = None
    with Outbox(path) as ob:
        assert ob.stats().dropped_total == in_first
        assert all_pending(ob) == ids(range(in_first, 502))


def test_a_full_disk_with_nothing_to_free_refuses_clearly_and_recovers(
    tmp_path: Path, full_disk: dict[str, int | None]
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        full_disk["budget"] = disk_used(path)
        with pytest.raises(OutboxError, match="disk is full and nothing older is left"):
            ob.add(reading(i) for i in range(3))
        full_disk["budget"] = None
        assert ob.add(reading(i) for i in range(3)) == 3
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(3))


def test_a_crash_between_the_copy_and_the_delete_keeps_each_reading_once(
    tmp_path: Path, full_disk: dict[str, int | None]
) -> None:
    path = tmp_path / "o"
    with Outbox(path) as ob:
        ob.add(reading(i) for i in range(100))
        ob.remove([p.seq for p in ob.peek(90)])
        (old,) = segments(path)
        saved = tmp_path / "saved"
        saved.mkdir()
        for p in (old, old.with_suffix(".idx")):
            shutil.copy(p, saved / p.name)
        full_disk["budget"] = disk_used(path) + 3_000
        assert ob.add(reading(i) for i in range(100, 120)) == 20
    full_disk["budget"] = None
    for p in saved.iterdir():  # as if the process died before deleting the original
        shutil.copy(p, path / p.name)
    with Outbox(path) as ob:
        assert all_pending(ob) == ids(range(90, 120))
    assert not old.exists()


def test_close_releases_the_lock_when_the_state_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o"
    ob = Outbox(path).open()
    ob.add(reading(i) for i in range(4))
    ob.remove([ob.peek(1)[0].seq])
    (path / "state.json.tmp").mkdir()  # a real failure of the state write
    with caplog.at_level(logging.ERROR):
        ob.close()
    assert any("cannot write state.json" in r.getMessage() for r in caplog.records)
    with Outbox(path) as again:  # the lock is free; the readings are all there
        assert again.stats().pending in (3, 4)  # the watermark may be resent
    (path / "state.json.tmp").rmdir()


def test_close_on_a_full_disk_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o"
    ob = Outbox(path).open()
    ob.add(reading(i) for i in range(2))

    def no_space(*_a: object, **_k: object) -> None:
        # Simulates the full disk: the test cannot fill a real one.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Outbox, "_write_state", no_space)
    ob.close()
    assert not ob.is_open
    monkeypatch.undo()
    with Outbox(path) as again:
        assert again.stats().pending == 2


# --- random damage: never a changed reading, never a crash --------------------------------


@pytest.mark.parametrize("seed", range(48))
def test_random_damage_never_sends_a_changed_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Bits flipped at random in the data files, the index files or both: whatever open
    keeps is exactly what was added, in order, once. With an index lost as well ("loss"),
    a flip that leaves valid JSON cannot be told from the reading (documented): at most
    one changed reading per flip."""
    rng = random.Random(seed)
    monkeypatch.setattr(outbox_module, "SEGMENT_BYTES", 15_000)  # about 65 readings each
    path = tmp_path / "o"
    with Outbox(path) as ob:
        for i in range(0, 250, 5):
            ob.add(reading(j) for j in range(i, i + 5))
        original = {p.obs_id: p.payload for p in ob.peek(1000)}
    kind = ("data", "index", "both", "loss")[seed % 4]
    flips = data_flips = 0
    for seg in segments(path):
        for f in (seg, seg.with_suffix(".idx")):
            if (f.suffix == ".seg" and kind == "index") or (f.suffix == ".idx" and kind == "data"):
                continue
            content = bytearray(f.read_bytes())
            for _ in range(rng.randrange(3)):
                k = rng.randrange(len(content))
                content[k] ^= 1 << rng.randrange(8)
                flips += 1
                data_flips += f.suffix == ".seg"
            f.write_bytes(bytes(content))
    if kind == "loss":  # and an index lost, or the end of one
        victim = rng.choice(sorted(path.glob("*.idx")))
        if rng.random() < 0.5:
            victim.unlink()
        else:
            os.truncate(victim, rng.randrange(victim.stat().st_size + 1))

    with Outbox(path) as ob:
        got = ob.peek(1000)
        got_ids = [p.obs_id for p in got]
        assert len(set(got_ids)) == len(got_ids)
        changed = [p for p in got if original.get(p.obs_id) != p.payload]
        if kind == "loss":
            assert len(changed) <= data_flips
        else:
            assert changed == []
            assert len(original) - len(got) <= flips
        kept = [i for i in got_ids if i in original]
        assert kept == [i for i in original if i in set(kept)]  # in the order added
        assert len(sent_bodies(ob)) == len(got)  # every batch is valid JSON of observations
        assert ob.add([reading(250)]) == 1
    with Outbox(path) as ob:
        assert [p.obs_id for p in ob.peek(1000)] == [*got_ids, str(reading(250).id)]
