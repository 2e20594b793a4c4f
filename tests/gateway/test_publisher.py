"""The publisher against the real mosquitto, with outages made by a TCP proxy in between."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.outbox import Outbox
from gateway.publisher import BrokerConfig, Publisher
from ingest.service import IngestService
from tests.gateway.test_outbox import reading
from tests.mqtt import Connected, connect
from tests.proxy import Proxy
from vitalvagt.stack import Stack
from vitalvagt.wire import decode_batch

pytestmark = pytest.mark.stack


def received_ids(watcher: Connected, *, want: set[str], timeout_s: float) -> list[str]:
    """Observation ids in arrival order (duplicates included) until all wanted ids arrived."""
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not want <= set(got) and time.monotonic() < deadline:
        try:
            topic, payload = watcher.messages.get(timeout=0.2)
        except queue.Empty:
            continue
        gw = topic.split("/")[3]
        batch = decode_batch(payload, topic_gateway_id=gw, now=None)
        got.extend(str(o.id) for o in batch.observations)
    return got


def first_seen(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


async def wait_until(cond, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_broker_outage_loses_nothing_and_keeps_order(
    stack: Stack, gateway_creds: tuple[str, str], tmp_path: Path
, ingest: IngestService
) -> None:
    gw, password = gateway_creds
    watcher = connect(
        stack.settings.mqtt_port,
        "vv-ingest",
        stack.secrets()["vv-ingest"],
        subscribe=f"vv/v1/gw/{gw}/obs",
    )
    proxy = await Proxy(stack.settings.mqtt_tls_port).start()  # TLS passes through
    cfg = BrokerConfig(
        host="127.0.0.1",
        port=proxy.port,
        gateway_id=gw,
        password=password,
        tls_ca=stack.paths.ca_cert,
        max_inflight=20,
        batch_size=10,
    )
    readings = [reading(i, gw) for i in range(500)]
    try:
        with Outbox(tmp_path / "outbox") as ob:
            async with Publisher(cfg, ob) as pub:
                await wait_until(lambda: pub.connected, 10)
                for r in readings[:200]:  # live: one reading at a time, as devices measure
                    ob.add([r])
                    pub.wake()
                await wait_until(lambda: ob.stats().pending == 0, 20)
                await proxy.cut()  # the broker is gone; the devices keep measuring
                await wait_until(lambda: not pub.connected, 10)
                for r in readings[200:]:
                    ob.add([r])
                    pub.wake()
                await asyncio.sleep(0.5)
                assert ob.stats().pending == 300, "readings left the outbox while offline"
                await proxy.restore()
                await wait_until(lambda: ob.stats().pending == 0, 30)
        want = [str(r.id) for r in readings]
        got = await asyncio.to_thread(received_ids, watcher, want=set(want), timeout_s=20)
        assert first_seen(got) == want
    finally:
        watcher.close()
        await proxy.close()


async def test_refused_message_stays_in_the_outbox(
    stack: Stack, gateway_creds: tuple[str, str], tmp_path: Path
) -> None:
    gw, password = gateway_creds
    # A misconfigured tablet: valid credentials, but another gateway's id in its topics.
    cfg = BrokerConfig(
        host="127.0.0.1",
        port=stack.settings.mqtt_tls_port,
        gateway_id="gw-not-mine",
        username=gw,
        password=password,
        tls_ca=stack.paths.ca_cert,
    )
    with Outbox(tmp_path / "outbox") as ob:
        ob.add([reading(i, "gw-not-mine") for i in range(3)])
        async with Publisher(cfg, ob) as pub:
            await wait_until(lambda: pub.refused_messages >= 1, 10)
            await asyncio.sleep(0.5)
            assert pub.refused_messages == 1, "refused messages are retried with back-off"
        assert ob.stats().pending == 3, "refused readings must stay in the outbox"


CHILD = """
import asyncio, sys
from pathlib import Path
from gateway.outbox import Outbox
from gateway.publisher import BrokerConfig, Publisher

async def main():
    cfg = BrokerConfig(host="127.0.0.1", port=int(sys.argv[1]), gateway_id=sys.argv[2],
                       password=sys.argv[3], tls_ca=Path(sys.argv[5]), max_inflight=1,
                       batch_size=20)  # one batch at a time, each awaiting its receipt
    with Outbox(Path(sys.argv[4])) as ob:
        async with Publisher(cfg, ob) as pub:
            while True:
                print(pub.acked_readings, ob.stats().pending, flush=True)
                await asyncio.sleep(0.02)

asyncio.run(main())
"""


def test_gateway_killed_mid_publish_resends_everything_with_the_same_ids(
    stack: Stack, gateway_creds: tuple[str, str], tmp_path: Path
, ingest: IngestService
) -> None:
    gw, password = gateway_creds
    path = tmp_path / "outbox"
    readings = [reading(i, gw) for i in range(3000)]
    with Outbox(path) as ob:
        ob.add(readings)
    watcher = connect(
        stack.settings.mqtt_port,
        "vv-ingest",
        stack.secrets()["vv-ingest"],
        subscribe=f"vv/v1/gw/{gw}/obs",
    )
    argv = [sys.executable, "-c", CHILD, str(stack.settings.mqtt_tls_port), gw, password,
            str(path), str(stack.paths.ca_cert)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        for line in child.stdout:  # kill it mid-stream: some sent and removed, some not
            acked, pending = map(int, line.split())
            assert pending > 0, "the outbox drained before the kill: slow the child down"
            if 300 < acked and pending < len(readings):
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with Outbox(path) as ob:
            left = ob.stats().pending
        assert 0 < left < len(readings)
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        for line in child.stdout:
            if int(line.split()[1]) == 0:
                break
        child.send_signal(signal.SIGTERM)
        child.wait()
        child.stdout.close()
        want = [str(r.id) for r in readings]
        got = received_ids(watcher, want=set(want), timeout_s=20)
        assert set(got) == set(want), f"{len(set(want) - set(got))} readings never arrived"
        assert first_seen(got) == want
    finally:
        watcher.close()


def test_status_is_retained_online_and_the_will_says_offline(
    stack: Stack, gateway_creds: tuple[str, str], tmp_path: Path
) -> None:
    gw, password = gateway_creds
    path = tmp_path / "outbox"
    Outbox(path).open().close()
    argv = [sys.executable, "-c", CHILD, str(stack.settings.mqtt_tls_port), gw, password,
            str(path), str(stack.paths.ca_cert)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        child.stdout.readline()
        time.sleep(0.5)
        # A watcher that connects later still sees the retained status.
        late = connect(
            stack.settings.mqtt_port,
            "vv-api",
            stack.secrets()["vv-api"],
            subscribe=f"vv/v1/gw/{gw}/status",
        )
        _, payload = late.messages.get(timeout=5)
        assert json.loads(payload)["state"] == "online"
        os.kill(child.pid, signal.SIGKILL)  # no clean goodbye: the broker sends the will
        _, payload = late.messages.get(timeout=120)
        assert json.loads(payload)["state"] == "offline"
        late.close()
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
