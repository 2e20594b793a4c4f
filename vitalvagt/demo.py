"""`make demo`: the embedded stack plus every component that is built, as child processes."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time

from vitalvagt.settings import Settings
from vitalvagt.stack import Stack, describe


def _built(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def demo_processes(*, homes: int, speed: float) -> list[tuple[str, list[str]]]:
    """The component processes of the demo, in start order; only the built ones."""
    vv = [sys.executable, "-m", "vitalvagt.cli"]
    wanted = [
        ("ingest", "ingest.cli", [*vv, "ingest", "run"]),
        ("alerts", "alerts.cli", [*vv, "alerts", "run"]),
        ("api", "api.cli", [*vv, "api", "serve"]),
        ("fleet", "simulator.fleet", [*vv, "simulate", "fleet", "--homes", str(homes),
                                      "--speed", str(speed)]),
    ]
    return [(name, argv) for name, module, argv in wanted if _built(module)]


def _summary(database_url: str) -> str:
    import psycopg

    with psycopg.connect(database_url) as conn:
        obs, patients, dead = conn.execute(
            "SELECT (SELECT count(*) FROM observations),"
            " (SELECT count(DISTINCT patient_id) FROM observations),"
            " (SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL)"
        ).fetchone()
        alerts = conn.execute("SELECT count(*) FROM alerts WHERE state <> 'resolved'").fetchone()[0]
    return (f"hub: {obs} readings stored for {patients} patients, {alerts} active alerts,"
            f" {dead} dead letters")


def run_demo(settings: Settings, *, homes: int, speed: float, duration_s: float | None) -> int:
    stack = Stack(settings)
    stack.up()
    print(describe(stack.status()))
    procs = demo_processes(homes=homes, speed=speed)
    if not procs:
        print("\nthe stack is up; no hub component is built yet, so there is nothing more to run.")
        print("stop it with `vitalvagt stack down` (data is kept).")
        return 0
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name, argv in procs:
            print(f"starting {name}: {' '.join(argv[2:])}")
            children.append((name, subprocess.Popen(argv)))
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_report = time.monotonic() + 10
        while deadline is None or time.monotonic() < deadline:
            if time.monotonic() >= next_report:
                next_report += 10
                print(_summary(stack.database_url()), flush=True)
            for name, child in children:
                if child.poll() is not None:
                    print(f"{name} stopped with exit code {child.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for _, child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
