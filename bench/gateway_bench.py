"""Gateway benchmark: outbox replay rate against bare paho, and resident memory with devices.

Run: .venv/bin/python bench/gateway_bench.py [--readings 100000] [--rss-seconds 20]

Starts its own embedded stack (PostgreSQL + mosquitto) in a temporary directory on free
ports, provisions a gateway, and stops and deletes everything at the end.

(a) Replay: an outbox filled with N readings (a tablet back online after days away) is
    drained by ``Publisher`` until every reading is acknowledged and removed: once with
    end-to-end receipts (as in service; the hub's receipts come from a stand-in that answers
    each batch at once, so that the gateway's own cost is measured, not ingest's, which
    bench/ingest_bench.py measures), once on PUBACKs alone (``receipts=False``). The baseline,
    measured in the same run against the same broker: bare paho publishing the SAME message
    payloads (same batches of ``batch_size`` readings, QoS 1, same in-flight window), timed
    until every PUBACK arrived. Both include connecting. Rounds alternate; best against best
    and the median of each round's own ratio are printed.
(b) Memory: the gateway process (`vitalvagt gateway run`) with five emulated devices
    connected and measuring every second. The devices run in this process and reach the
    gateway's bumble central over TCP HCI, so the child's RSS (VmRSS from /proc) is the
    gateway alone. For comparison: `vitalvagt simulate home` (gateway, devices and
    their controllers in one process), and a process that only imports the gateway's modules.

No assertions on time or memory: this prints figures with their conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from gateway.outbox import Outbox
from gateway.publisher import BrokerConfig, Publisher, batch_payload
from simulator.emulated_home import measure_round, pair_emulated
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.kinds import Kind
from vitalvagt.mqtt_cleanup import client_tls_context
from vitalvagt.observation import DeviceRef, Observation
from vitalvagt.settings import Settings
from vitalvagt.stack import Stack
from vitalvagt.wire import (
    Receipt,
    ReceiptItem,
    ReceiptOutcome,
    batch_id_of,
    encode,
    obs_topic,
    receipt_topic,
)

GATEWAY_ID = "gw-bench-1"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- (a) replay


def fill(outbox: Outbox, n: int) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    device = DeviceRef(address="D1:56:56:22:00:02", model="SIM-1", serial="0002")
    chunk: list[Observation] = []
    for i in range(n):
        at = t0 + timedelta(seconds=i)
        chunk.append(
            Observation.create(
                gateway_id=GATEWAY_ID,
                kind=Kind.SPO2,
                value=90 + i % 10,
                unit="%",
                measured_at=at,
                received_at=at,
                device=device,
            )
        )
        if len(chunk) == 10_000:
            outbox.add(chunk)
            chunk = []
    outbox.add(chunk)


async def replay_publisher(cfg: BrokerConfig, path: Path) -> tuple[float, int]:
    """Seconds until the Publisher drained the outbox; messages it sent."""
    with Outbox(path) as outbox:
        start = time.perf_counter()
        async with Publisher(cfg, outbox) as pub:
            while outbox.stats().pending:
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - start
            return elapsed, pub.published_messages


def receipt_echo(port: int, password: str) -> None:
    """A stand-in for ingest's receipts, run as its own process (``--receipt-echo``, so that
    it takes no time from the Publisher's process): the ingest service user on the services
    listener, answering every batch at once with a receipt naming it (no database). Runs
    until its standard input closes."""

    def on_message(client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        batch_id = batch_id_of(msg.payload)
        if batch_id is not None:
            gw = msg.topic.split("/")[3]
            item = ReceiptItem(batch_id=batch_id, outcome=ReceiptOutcome.STORED)
            receipt = Receipt(gateway_id=gw, at=datetime.now(UTC), batches=(item,))
            client.publish(receipt_topic(gw), encode(receipt), qos=1)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="vv-bench-echo", protocol=mqtt.MQTTv5
    )
    client.username_pw_set("vv-ingest", password)
    client.max_inflight_messages_set(1000)
    client.on_message = on_message
    client.on_connect = lambda c, *_: (c.subscribe("vv/v1/gw/+/obs", qos=1), print("ready"))
    client.connect("127.0.0.1", port)
    client.loop_start()
    sys.stdin.read()
    client.disconnect()
    client.loop_stop()


@contextlib.contextmanager
def receipt_echo_process(stack: Stack) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--receipt-echo", str(stack.settings.mqtt_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "VV_ECHO_PASSWORD": stack.secrets()["vv-ingest"]},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the receipt stand-in did not start")
    try:
        yield
    finally:
        proc.stdin.close()
        proc.wait(10)


def replay_bare(cfg: BrokerConfig, payloads: list[bytes], *, receipts: bool = False) -> float:
    """Seconds for bare paho to publish the same payloads, QoS 1, same window, all acked;
    with ``receipts``, also until the stand-in's receipt for every batch came back."""
    done = threading.Event()
    connected = threading.Event()
    acked = 0
    named = 0
    all_named = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal named
        named += len(Receipt.model_validate_json(msg.payload).batches)
        if named >= len(payloads):
            all_named.set()

    def on_connect(c: mqtt.Client, *_a: object) -> None:
        if receipts:
            c.subscribe(receipt_topic(cfg.gateway_id), qos=1)
        connected.set()

    def on_publish(*_a: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(payloads):
            done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="vv-bench-bare", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(cfg.gateway_id, cfg.password)
    if cfg.tls_ca:
        client.tls_set_context(client_tls_context(cfg.tls_ca))
    client.max_inflight_messages_set(cfg.max_inflight)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_message = on_message
    start = time.perf_counter()
    client.connect_async(cfg.host, cfg.port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("bare paho: no CONNACK")
        topic = obs_topic(cfg.gateway_id)
        for payload in payloads:
            client.publish(topic, payload, qos=1)  # paho holds what exceeds the window
        if not done.wait(300):
            raise RuntimeError(f"bare paho: {acked} of {len(payloads)} acknowledged")
        if receipts and not all_named.wait(300):
            raise RuntimeError(f"bare paho: receipts for {named} of {len(payloads)} batches")
        return time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()


def bench_replay(cfg: BrokerConfig, work: Path, n: int, rounds: int) -> None:
    print(
        f"\n(a) outbox replay: {n:,} readings, batches of {cfg.batch_size}, QoS 1, "
        f"in-flight window {cfg.max_inflight} messages, mosquitto on 127.0.0.1 "
        "(persistence on; the receipt stand-in subscribed to the batches)"
    )
    template = work / "template"
    start = time.perf_counter()
    with Outbox(template, max_bytes=2**40) as outbox:
        fill(outbox, n)
        rows = [p for run in outbox.read(n) for p in run.payloads]
        size = outbox.stats().bytes
    print(
        f"  filled the outbox in {time.perf_counter() - start:.1f} s "
        f"({size / 1e6:.1f} MB of observation JSON)"
    )
    now = datetime.now(UTC)
    payloads = [
        batch_payload(cfg.gateway_id, b",".join(rows[i : i + cfg.batch_size]), now)
        for i in range(0, len(rows), cfg.batch_size)
    ]
    # The same with batch ids, for bare paho waiting for the stand-in's receipts too: the
    # ceiling that the receipt round trip itself sets (the stand-in is a Python client).
    with_ids = [
        batch_payload(cfg.gateway_id, b",".join(rows[i : i + cfg.batch_size]), now, f"b:{i}")
        for i in range(0, len(rows), cfg.batch_size)
    ]
    puback_cfg = dataclasses.replace(cfg, receipts=False)
    best = {"pub": float("inf"), "ack": float("inf"), "bare": float("inf"), "bare_r": float("inf")}
    ratios: dict[str, list[float]] = {"pub": [], "ack": [], "pub_r": []}
    for r in range(rounds):
        bare_s = replay_bare(cfg, payloads)
        bare_r_s = replay_bare(cfg, with_ids, receipts=True)
        pub_s, messages = asyncio.run(replay_publisher(cfg, copy_outbox(template, work / f"r{r}")))
        ack_s, _ = asyncio.run(replay_publisher(puback_cfg, copy_outbox(template, work / f"a{r}")))
        for k, v in (("pub", pub_s), ("ack", ack_s), ("bare", bare_s), ("bare_r", bare_r_s)):
            best[k] = min(best[k], v)
        ratios["pub"].append(bare_s / pub_s)
        ratios["ack"].append(bare_s / ack_s)
        ratios["pub_r"].append(bare_r_s / pub_s)
        print(
            f"  round {r + 1}: Publisher with receipts {pub_s:5.2f} s ({messages} messages),"
            f" on PUBACKs {ack_s:5.2f} s; bare paho {bare_s:5.2f} s, bare paho awaiting the"
            f" receipts {bare_r_s:5.2f} s ({len(payloads)} messages)"
        )
    for name, secs in (
        ("Publisher, receipts (removed on receipt)", best["pub"]),
        ("Publisher, PUBACKs only", best["ack"]),
        ("bare paho (same payloads), PUBACKs", best["bare"]),
        ("bare paho, awaiting the receipts too", best["bare_r"]),
    ):
        print(f"  {name:<41} {n / secs:10,.0f} readings/s {len(payloads) / secs:9,.0f} messages/s")
    med = {k: statistics.median(v) for k, v in ratios.items()}
    print(
        f"  replay / bare paho (median of the rounds' own ratios; target >= 50 %):"
        f" with receipts {med['pub']:.0%} ({best['bare'] / best['pub']:.0%} best against best),"
        f" on PUBACKs only {med['ack']:.0%}; with receipts against bare paho awaiting the same"
        f" receipts {med['pub_r']:.0%}"
    )
    # Memory: one more round, not timed, with tracemalloc (it slows Python down): the peak
    # of Python's heap while the Publisher replays the whole backlog.
    copy = copy_outbox(template, work / "replay-memory")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    asyncio.run(replay_publisher(cfg, copy))
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    print(
        f"  peak Python heap during the replay of {n:,} readings ({size / 1e6:.0f} MB of JSON):"
        f" {peak / 1e6:.1f} MB above the start (tracemalloc)"
    )
    # What the outbox itself costs: reading every reading once and acknowledging them all
    # in batches as the Publisher does, with no network at all.
    with Outbox(copy_outbox(template, work / "floor"), max_bytes=2**40) as outbox:
        start = time.perf_counter()
        runs = outbox.read(n)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        step = 5000
        for lo in range(1, n + 1, step):
            outbox.acknowledge([(lo, min(n, lo + step - 1))])
        delete_s = time.perf_counter() - start
        assert outbox.stats().pending == 0 and sum(len(r.payloads) for r in runs) == n
    floor_s = read_s + delete_s
    print(
        f"  outbox floor without network: read {read_s:.3f} s + acknowledge {delete_s:.3f} s"
        f" = {floor_s:.3f} s ({n / floor_s:,.0f} readings/s)"
    )


def copy_outbox(template: Path, copy: Path) -> Path:
    shutil.copytree(template, copy)
    return copy


# --------------------------------------------------------------------------- (b) memory


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def child_env(base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VV_")}
    return {**env, "PYTHONWARNINGS": "ignore", "VV_LOG_LEVEL": "WARNING", **base}


async def sample(proc: asyncio.subprocess.Process, seconds: float) -> tuple[int, int]:
    """(peak, last) RSS in kB over ``seconds``."""
    peak = last = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.returncode is None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            last = rss_kb(proc.pid)
            peak = max(peak, last)
        await asyncio.sleep(0.5)
    return peak, last


async def stop(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        proc.terminate()
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode(errors="replace")


async def bench_memory_split(env: dict[str, str], work: Path, seconds: float) -> None:
    from simulator.ble_devices import standard_devices
    from simulator.ble_home import EmulatedHome

    zone = ZoneInfo("Europe/Copenhagen")
    gw_dir = work / "gw-rss"
    async with EmulatedHome(standard_devices()) as home:
        spec = await home.link.serve_hci_tcp()
        pair_emulated(Settings(gateway_dir=gw_dir), home)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vitalvagt.cli",
            "gateway",
            "run",
            cwd=ROOT,
            env=child_env(
                {**env, "VV_GATEWAY_DIR": str(gw_dir), "VV_BLE_TRANSPORT": f"bumble:{spec}"}
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(30):
                while not all(d.subscribed() for d in home.devices):
                    await asyncio.sleep(0.1)
            connected = time.monotonic()
            rng = random.Random(1)

            async def measure() -> int:
                sent = 0
                while True:
                    sent += await measure_round(home, zone, rng)
                    await asyncio.sleep(1.0)

            task = asyncio.create_task(measure())
            peak, last = await sample(proc, seconds)
            task.cancel()
            connected_s = time.monotonic() - connected
            values = sum(len(d.sent) for d in home.devices)
        finally:
            out = await stop(proc)
    print(
        f"  gateway process alone (devices in another process, TCP HCI): peak "
        f"{peak / 1024:.1f} MB, last {last / 1024:.1f} MB; 5 devices connected for "
        f"{connected_s:.0f} s, {values} values delivered by the devices"
    )
    tail = [line for line in out.splitlines() if "stopping" in line]
    if tail:
        print(f"    {tail[-1].strip()}")


async def bench_memory_emulated(env: dict[str, str], work: Path, seconds: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vitalvagt.cli",
        "simulate",
        "home",
        "--measure-every-s",
        "1",
        cwd=ROOT,
        env=child_env({**env, "VV_GATEWAY_DIR": str(work / "gw-emulated")}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        peak, last = await sample(proc, seconds)
    finally:
        out = await stop(proc)
    print(
        f"  `simulate home` (gateway + 5 emulated devices in one process): peak "
        f"{peak / 1024:.1f} MB, last {last / 1024:.1f} MB over {seconds:g} s"
    )
    tail = [line for line in out.splitlines() if "stopping" in line]
    if tail:
        print(f"    {tail[-1].strip()}")


def bench_memory_imports() -> None:
    rss = "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    for what, modules in (
        ("native transport (no bumble)", "gateway.app, gateway.ble, bleak, paho.mqtt.client"),
        ("bumble transport", "gateway.app, gateway.ble, simulator.bumble_backend"),
    ):
        code = f"import {modules}\n{rss}"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        print(
            f"  a process that only imports the gateway's modules, {what}: "
            f"{int(out.stdout) / 1024:.1f} MB"
        )


def bench_memory(env: dict[str, str], work: Path, seconds: float) -> None:
    print(
        f"\n(b) resident memory (VmRSS), devices measuring every second, sampled every "
        f"0.5 s for {seconds:g} s (target <= 80 MB)"
    )
    asyncio.run(bench_memory_split(env, work, seconds))
    asyncio.run(bench_memory_emulated(env, work, seconds))
    bench_memory_imports()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000, help="outbox size (100,000)")
    parser.add_argument("--rounds", type=int, default=5, help="replay rounds (5)")
    parser.add_argument("--batch-size", type=int, default=100, help="readings per message")
    parser.add_argument("--max-inflight", type=int, default=1000, help="in-flight window")
    parser.add_argument("--rss-seconds", type=float, default=20.0, help="memory sampling time")
    parser.add_argument("--receipt-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receipt_echo:  # the receipt stand-in's own process (receipt_echo_process)
        receipt_echo(args.receipt_echo, os.environ["VV_ECHO_PASSWORD"])
        return 0
    # The publisher logs each (expected) disconnection between rounds; keep the figures clean.
    logging.basicConfig(level=logging.ERROR)

    print(
        f"gateway bench; Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    state = Path(tempfile.mkdtemp(prefix="vv-bench-stack-", dir="/tmp"))
    os.chmod(state, 0o755)  # the postgres and mosquitto users must reach it
    settings = Settings(
        state_dir=state, pg_port=free_port(), mqtt_port=free_port(), mqtt_tls_port=free_port()
    )
    stack = Stack(settings)
    try:
        stack.up()
        with psycopg.connect(stack.database_url(), autocommit=True) as conn:
            password = provision_gateway(conn, GATEWAY_ID)
        stack.sync_broker_users()
        cfg = BrokerConfig(
            host="127.0.0.1",
            port=settings.mqtt_tls_port,  # the gateway listener, TLS, as tablets connect
            gateway_id=GATEWAY_ID,
            password=password,
            tls_ca=stack.paths.ca_cert,
            batch_size=args.batch_size,
            max_inflight=args.max_inflight,
        )
        with tempfile.TemporaryDirectory(prefix="vv-bench-") as tmp:
            work = Path(tmp)
            with receipt_echo_process(stack):
                bench_replay(cfg, work, args.readings, args.rounds)
            env = {
                "VV_STATE_DIR": str(state),
                "VV_PG_PORT": str(settings.pg_port),
                "VV_MQTT_PORT": str(settings.mqtt_port),
                "VV_MQTT_TLS_PORT": str(settings.mqtt_tls_port),
                "VV_GATEWAY_ID": GATEWAY_ID,
                "VV_MQTT_PASSWORD": password,
            }
            bench_memory(env, work, args.rss_seconds)
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
