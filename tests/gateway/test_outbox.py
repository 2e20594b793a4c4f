"""The outbox: durable, ordered, de-duplicated and bounded."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import gateway.outbox as outbox_module
from gateway.outbox import Outbox, OutboxError, OutboxStats
from vitalvagt.kinds import Kind
from vitalvagt.observation import DeviceRef, Observation

# In the past (the hub refuses future times) but within its 365 days (older is too_old).
T0 = (datetime.now(UTC) - timedelta(days=60)).replace(hour=6, minute=0, second=0, microsecond=0)


def reading(i: int, gw: str = "gw-outbox") -> Observation:
    at = T0 + timedelta(minutes=i)
    return Observation.create(
        gateway_id=gw,
        kind=Kind.SPO2,
        value=90 + i % 10,
        unit="%",
        measured_at=at,
        received_at=at,
        device=DeviceRef(address="AA:BB:CC:DD:EE:01"),
    )


def test_readings_come_out_in_order_and_leave_only_when_removed(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o") as ob:
        assert ob.add(reading(i) for i in range(10)) == 10
        rows = ob.peek(4)
        assert [Observation.model_validate_json(r.payload) for r in rows] == [
            reading(i) for i in range(4)
        ]
        ob.remove([rows[0].seq, rows[1].seq])
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(i).id) for i in range(2, 10)]
        assert ob.peek(3, after_seq=rows[3].seq)[0].obs_id == str(reading(4).id)
        assert ob.stats().pending == 8


def test_the_same_reading_twice_is_kept_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o") as ob:
        assert ob.add([reading(1), reading(2)]) == 2
        assert ob.add([reading(2), reading(3)]) == 1
        assert ob.stats().pending == 3


def test_contents_survive_reopening(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o") as ob:
        ob.add(reading(i) for i in range(5))
    with Outbox(tmp_path / "o") as ob:
        assert ob.stats().pending == 5
        assert ob.stats().bytes == sum(len(r.payload) for r in ob.peek(10))


def _writer(path: str, n: int, conn: multiprocessing.connection.Connection) -> None:
    with Outbox(Path(path)) as ob:
        for i in range(n):
            ob.add([reading(i)])
            conn.send(i)  # acknowledged to the parent only after add() returned
        conn.send(-1)
        signal.pause()


def test_a_killed_process_loses_no_added_reading(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_writer, args=(str(tmp_path / "o"), 300, child))
    proc.start()
    confirmed = -1
    while confirmed < 150:
        confirmed = parent.recv()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with Outbox(tmp_path / "o") as ob:
        ids = [r.obs_id for r in ob.peek(1000)]
    # Every reading whose add() returned is there, in order, and nothing else.
    assert ids[: confirmed + 1] == [str(reading(i).id) for i in range(confirmed + 1)]
    assert ids == [str(reading(i).id) for i in range(len(ids))]


def test_full_outbox_warns_then_drops_the_oldest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = len(reading(0).model_dump_json(exclude_none=True))
    with Outbox(tmp_path / "o", max_bytes=size * 10) as ob, caplog.at_level(logging.WARNING):
        ob.add(reading(i) for i in range(8))
        assert ob.stats().near_full
        assert any("oldest will be dropped" in r.message for r in caplog.records)
        ob.add(reading(i) for i in range(8, 14))
        stats = ob.stats()
        assert stats.bytes <= stats.max_bytes
        assert stats.dropped_total == 4
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(i).id) for i in range(4, 14)]
        assert any("dropped the 4 oldest" in r.message for r in caplog.records)


def _segment_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.suffix in (".seg", ".idx"))


def test_a_torn_write_at_the_end_is_cut_off_and_nothing_before_it_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "o") as ob:
        ob.add(reading(i) for i in range(10))
    (seg,) = (tmp_path / "o").glob("*.seg")
    (idx,) = (tmp_path / "o").glob("*.idx")
    # A crash mid-write: an index entry whose data never fully reached the disk, plus half
    # of the next entry.
    entry = idx.read_bytes()[-32:]
    with open(idx, "ab") as f:
        f.write(entry[:16] + b"\x01" * 16 + entry[:10])
    with open(seg, "ab") as f:
        f.write(b'{"id":"trunc')
    with caplog.at_level(logging.ERROR), Outbox(tmp_path / "o") as ob:
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(i).id) for i in range(10)]
        assert any("not whole" in r.message for r in caplog.records)
        assert ob.add([reading(10)]) == 1
    with Outbox(tmp_path / "o") as ob:
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(i).id) for i in range(11)]


def test_a_record_failing_its_checksum_at_the_end_is_dropped(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o") as ob:
        ob.add(reading(i) for i in range(5))
    (seg,) = (tmp_path / "o").glob("*.seg")
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF  # the last reading's JSON, damaged in place
    seg.write_bytes(bytes(data))
    with Outbox(tmp_path / "o") as ob:
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(i).id) for i in range(4)]


def test_segments_roll_and_leave_the_disk_once_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "SEGMENT_BYTES", 2000)
    path = tmp_path / "o"
    with Outbox(path) as ob:
        for i in range(60):
            ob.add([reading(i)])
        files = _segment_files(path)
        assert len(files) >= 8, files
        rows = ob.peek(100)
        ob.remove([r.seq for r in rows[:30]])
        assert len(_segment_files(path)) < len(files)
        assert ob.stats().pending == 30
    with Outbox(path) as ob:  # the watermark survived: acknowledged readings stay gone
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(i).id) for i in range(30, 60)]
        ob.remove([r.seq for r in ob.peek(100)])
        assert ob.stats() == OutboxStats(0, 0, ob.max_bytes, 0)
        assert _segment_files(path) == []
        assert ob.add([reading(60)]) == 1  # a fresh segment, seqs carry on
        assert ob.peek(1)[0].seq > rows[-1].seq
    with Outbox(path) as ob:
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(60).id)]


def test_acknowledgements_out_of_order_remove_exactly_those_readings(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o") as ob:
        ob.add(reading(i) for i in range(10))
        seqs = [r.seq for r in ob.peek(10)]
        ob.remove(seqs[5:8])
        assert [r.obs_id for r in ob.peek(10)] == [
            str(reading(i).id) for i in (0, 1, 2, 3, 4, 8, 9)
        ]
        assert ob.stats().pending == 7
        ob.remove(seqs[:5])
        assert [r.seq for r in ob.peek(10)] == seqs[8:]
        ob.remove(seqs[7:])  # already removed ones are fine
        assert ob.stats().pending == 0


def test_a_run_is_the_body_of_a_json_array(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o") as ob:
        ob.add(reading(i) for i in range(7))
        (run,) = ob.read(100)
        body = json.loads(b"[" + run.joined(2, 6) + b"]")
        assert [Observation.model_validate(o) for o in body] == [reading(i) for i in range(2, 6)]
        assert (run.first_seq, run.count) == (ob.peek(1)[0].seq, 7)


def test_the_sqlite_outbox_of_0_1_is_imported_once(tmp_path: Path) -> None:
    old = tmp_path / "outbox.db"
    db = sqlite3.connect(old)
    db.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, obs_id TEXT NOT NULL"
        " UNIQUE, payload TEXT NOT NULL, size INTEGER NOT NULL)"
    )
    for i in range(5):
        payload = reading(i).model_dump_json(exclude_none=True)
        db.execute(
            "INSERT INTO outbox (obs_id, payload, size) VALUES (?, ?, ?)",
            (str(reading(i).id), payload, len(payload)),
        )
    db.commit()
    db.close()
    with Outbox(tmp_path / "o", legacy_sqlite=old) as ob:
        assert [r.obs_id for r in ob.peek(10)] == [str(reading(i).id) for i in range(5)]
    assert not old.exists() and (tmp_path / "outbox.db.imported").exists()
    with Outbox(tmp_path / "o", legacy_sqlite=old) as ob:
        assert ob.stats().pending == 5


def test_a_second_process_cannot_open_the_same_outbox(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o") as ob:
        ob.add([reading(0)])
        with pytest.raises(OutboxError, match="in use by another process"):
            Outbox(tmp_path / "o").open()
        assert ob.add([reading(1)]) == 1  # the first one is unaffected
    with Outbox(tmp_path / "o") as ob:  # released on close
        assert ob.stats().pending == 2


@pytest.mark.parametrize("batch_id", [None, "7:1-3"])
def test_a_published_batch_is_the_wire_batch_of_the_stored_readings(
    tmp_path: Path, batch_id: str | None
) -> None:
    """The publisher wraps the stored observations without re-encoding them; the bytes are
    those the wire module makes for the same batch, and the hub's gate reads them back."""
    from gateway.publisher import batch_payload
    from vitalvagt.wire import decode_batch, encode, make_batch

    readings = [reading(i) for i in range(3)]
    sent_at = T0 + timedelta(hours=1, microseconds=250)
    with Outbox(tmp_path / "o") as ob:
        ob.add(readings)
        (run,) = ob.read(10)
        payload = batch_payload("gw-outbox", run.joined(0, run.count), sent_at, batch_id)
    expected = make_batch("gw-outbox", readings, sent_at=sent_at, batch_id=batch_id)
    assert payload == encode(expected)
    assert decode_batch(payload, topic_gateway_id="gw-outbox", now=sent_at) == expected
