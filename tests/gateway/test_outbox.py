"""The outbox: durable, ordered, de-duplicated and bounded."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.outbox import Outbox
from vitalvagt.kinds import Kind
from vitalvagt.observation import DeviceRef, Observation

T0 = datetime(2025, 1, 1, 6, 0, tzinfo=UTC)  # well in the past: the hub refuses future times


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
    with Outbox(tmp_path / "o.db") as ob:
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
    with Outbox(tmp_path / "o.db") as ob:
        assert ob.add([reading(1), reading(2)]) == 2
        assert ob.add([reading(2), reading(3)]) == 1
        assert ob.stats().pending == 3


def test_contents_survive_reopening(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        ob.add(reading(i) for i in range(5))
    with Outbox(tmp_path / "o.db") as ob:
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
    proc = ctx.Process(target=_writer, args=(str(tmp_path / "o.db"), 300, child))
    proc.start()
    confirmed = -1
    while confirmed < 150:
        confirmed = parent.recv()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with Outbox(tmp_path / "o.db") as ob:
        ids = [r.obs_id for r in ob.peek(1000)]
    # Every reading whose add() returned is there, in order, and nothing else.
    assert ids[: confirmed + 1] == [str(reading(i).id) for i in range(confirmed + 1)]
    assert ids == [str(reading(i).id) for i in range(len(ids))]


def test_full_outbox_warns_then_drops_the_oldest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = len(reading(0).model_dump_json(exclude_none=True))
    with Outbox(tmp_path / "o.db", max_bytes=size * 10) as ob, caplog.at_level(logging.WARNING):
        ob.add(reading(i) for i in range(8))
        assert ob.stats().near_full
        assert any("oldest will be dropped" in r.message for r in caplog.records)
        ob.add(reading(i) for i in range(8, 14))
        stats = ob.stats()
        assert stats.bytes <= stats.max_bytes
        assert stats.dropped_total == 4
        assert [r.obs_id for r in ob.peek(100)] == [str(reading(i).id) for i in range(4, 14)]
        assert any("dropped the 4 oldest" in r.message for r in caplog.records)
