"""End-to-end receipts under failure (issue 9, defect 3): gateways with their real outboxes
publish 20,000 readings while mosquitto is SIGKILLed twice and ingest once. A reading leaves
a tablet's outbox only on the hub's receipt after the commit, so afterwards every reading is
stored exactly once and every outbox is empty.

The session's own broker is killed and started again (``stack.up()``); ingest runs as a
process of its own so that it can be killed too. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from gateway.outbox import Outbox
from gateway.publisher import BrokerConfig, Publisher
from tests.conftest import kill_broker
from tests.ingest.conftest import add_homes, count_rows, readings
from tests.ingest.test_faults import ingest_process
from vitalvagt.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

GATEWAYS = 4
PER_GATEWAY = 5_000


async def _until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _kill_broker(stack: Stack) -> None:
    kill_broker(stack)
    for _ in range(100):  # gone, not a zombie still holding the pid
        if stack.mq_pid() is None:
            return
        time.sleep(0.05)
    raise AssertionError("mosquitto survived SIGKILL")


async def test_broker_killed_twice_and_ingest_once_lose_nothing_and_store_once(
    stack: Stack, registry: psycopg.Connection, tmp_path: Path
) -> None:
    homes = add_homes(registry, stack, [f"rcpt{i}" for i in range(GATEWAYS)])
    data = {gw: readings(gw, PER_GATEWAY) for gw, _, _ in homes}

    def stored() -> int:
        with psycopg.connect(stack.database_url()) as conn:
            return sum(count_rows(conn, gw)[0] for gw in data)

    async with contextlib.AsyncExitStack() as es:
        outboxes, pubs = {}, []
        for gw, pw, _ in homes:
            ob = es.enter_context(Outbox(tmp_path / gw))
            cfg = BrokerConfig(
                host="127.0.0.1", port=stack.settings.mqtt_tls_port, gateway_id=gw,
                password=pw, tls_ca=stack.paths.ca_cert, batch_size=50,
                receipt_timeout_s=5.0,  # short, for the test; 60 s in service
            )  # fmt: skip
            pubs.append(await es.enter_async_context(Publisher(cfg, ob)))
            outboxes[gw] = ob

        async def measure(lo: int, hi: int) -> None:
            """The devices keep measuring: readings lo..hi-1 of every home, in small steps."""
            for start in range(lo, hi, 100):
                for (gw, ob), pub in zip(outboxes.items(), pubs, strict=True):
                    ob.add(data[gw][start : min(start + 100, hi)])
                    pub.wake()
                await asyncio.sleep(0.02)

        def awaiting() -> int:
            return sum(len(p._awaiting) for p in pubs)

        with ingest_process(stack, "rcpt") as first:
            await measure(0, 1_000)
            await _until(lambda: stored() >= 1_000, 60, "the stream to be under way")
            first.send_signal(signal.SIGKILL)  # ingest dies: the broker queues its share
            first.wait(10)
        await measure(1_000, 2_500)
        # Acknowledged by the broker, queued for ingest, not receipted: what a crash now loses.
        await _until(lambda: awaiting() > 0, 30, "batches awaiting a receipt")
        queued = awaiting()
        _kill_broker(stack)  # 1: the broker crashes with ingest's queue in memory
        await measure(2_500, 3_000)  # into the outboxes while the broker is down
        await asyncio.to_thread(stack.up)
        with ingest_process(stack, "rcpt"):
            await measure(3_000, 4_000)
            await _until(lambda: stored() >= 4 * 3_000, 120, "readings after the first crash")
            _kill_broker(stack)  # 2: mid-stream, ingest running
            await measure(4_000, PER_GATEWAY)
            await asyncio.to_thread(stack.up)
            await _until(
                lambda: all(ob.stats().pending == 0 for ob in outboxes.values()),
                180,
                "every outbox to empty",
            )
        resent = sum(p.resent_batches for p in pubs)
    with psycopg.connect(stack.database_url()) as conn:
        for gw in data:
            assert count_rows(conn, gw) == (PER_GATEWAY, PER_GATEWAY), gw
    print(f"{queued} batches awaited a receipt at the first crash; {resent} sent again")
    assert resent > 0, "nothing was sent again: the crashes tested nothing"
