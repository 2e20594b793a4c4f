"""Ingest under failure: SIGKILL, a PostgreSQL restart, and two processes sharing the load.

All against the real broker and database; 'exactly once' is checked by counting rows and
distinct stable ids for the gateway.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.conftest import free_port, stack_env
from tests.ingest.conftest import (
    add_home,
    add_homes,
    count_rows,
    gateway_client,
    payloads,
    readings,
    wait_for,
)
from tests.mqtt import end_session
from vitalvagt.stack import PG_BIN, Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def ingest_process(
    stack: Stack, instance: str, *, health_port: int = 0, keep_session: bool = False
) -> Iterator[subprocess.Popen]:
    """``keep_session``: leave the broker session for the next process of this instance."""
    env = stack_env(stack)
    argv = [
        sys.executable,
        "-m",
        "vitalvagt.cli",
        "ingest",
        "run",
        "--instance",
        instance,
        "--health-port",
        str(health_port),
        "--no-jobs",
        "--end-session-on-exit",
    ]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until subscribed
        if "subscribed" in line:
            break
    drain = threading.Thread(target=proc.stderr.read, daemon=True)
    drain.start()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        drain.join(5)
        proc.stderr.close()
        if not keep_session:
            # A killed process leaves its session (a day's expiry) on the shared subscription.
            end_session(stack, "vv-ingest", f"vv-ingest-{instance}")


def publish_stream(stack: Stack, gw: str, pw: str, messages: list[bytes]) -> threading.Thread:
    def run() -> None:
        c = gateway_client(stack, gw, pw)
        try:
            for i in range(0, len(messages), 100):  # windows of 100 in flight
                infos = [
                    c.client.publish(f"vv/v1/gw/{gw}/obs", m, qos=1) for m in messages[i : i + 100]
                ]
                for info in infos:
                    info.wait_for_publish(30)
        finally:
            c.close()

    t = threading.Thread(target=run, name=f"publisher-{gw}")
    t.start()
    return t


def test_ingest_killed_mid_stream_stores_every_reading_exactly_once(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gw, pw, _ = add_home(registry, stack, "killed")
    messages = payloads(gw, readings(gw, 50_000), 50)
    with ingest_process(stack, "kill", keep_session=True) as first:
        pub = publish_stream(stack, gw, pw, messages)
        wait_for(lambda: count_rows(registry, gw)[0] >= 5_000, 60, "the stream to be under way")
        first.send_signal(signal.SIGKILL)
        first.wait()
    stored_at_kill = count_rows(registry, gw)[0]
    assert stored_at_kill < 50_000, "the kill came too late to test anything"
    with ingest_process(stack, "kill"):
        pub.join(120)
        wait_for(lambda: count_rows(registry, gw)[0] >= 50_000, 120, "all 50,000 readings")
    assert count_rows(registry, gw) == (50_000, 50_000)


def _restart_postgres(stack: Stack) -> None:
    cmd = [
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(stack.paths.pg_data),
        "-m",
        "fast",
        "-w",
        "restart",
        "-l",
        str(stack.paths.pg_log),
    ]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True)


def test_postgres_restart_mid_stream_stores_every_reading_exactly_once(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gw, pw, _ = add_home(registry, stack, "pgrestart")
    messages = payloads(gw, readings(gw, 20_000), 50)
    with ingest_process(stack, "pgrestart") as proc:
        pub = publish_stream(stack, gw, pw, messages)
        wait_for(lambda: count_rows(registry, gw)[0] >= 2_000, 60, "the stream to be under way")
        _restart_postgres(stack)
        with psycopg.connect(stack.database_url(), autocommit=True) as conn:
            pub.join(120)
            wait_for(lambda: count_rows(conn, gw)[0] >= 20_000, 120, "all 20,000 readings")
            assert count_rows(conn, gw) == (20_000, 20_000)
        assert proc.poll() is None, "ingest died with the database instead of waiting for it"


def _rows_written(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r"^vv_ingest_rows_written_total (\S+)$", text, re.M)
    assert m, "rows-written counter missing from /metrics"
    return float(m.group(1))


def test_two_ingest_processes_split_the_load_and_store_each_reading_once(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gws = add_homes(registry, stack, [f"split{i}" for i in range(4)])
    ports = free_port(), free_port()
    with (
        ingest_process(stack, "a", health_port=ports[0]),
        ingest_process(stack, "b", health_port=ports[1]),
    ):
        pubs = [
            publish_stream(stack, gw, pw, payloads(gw, readings(gw, 5_000), 10))
            for gw, pw, _ in gws
        ]
        for p in pubs:
            p.join(120)
        for gw, _, _ in gws:
            wait_for(lambda gw=gw: count_rows(registry, gw)[0] >= 5_000, 120, f"{gw}'s readings")
        written = [_rows_written(p) for p in ports]
    for gw, _, _ in gws:
        assert count_rows(registry, gw) == (5_000, 5_000)
    assert sum(written) == 20_000
    assert min(written) > 0.2 * 20_000, f"one process did (almost) nothing: {written}"
