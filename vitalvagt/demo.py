"""`make demo`: the embedded stack plus every component that is built, as child processes."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time

from vitalvagt.settings import Settings
from vitalvagt.stack import Stack, describe


def _built(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# After the accelerated history, the fleet goes on in real time for this long: a demo runs
# until Ctrl-C, not until the history is replayed.
LIVE_DAYS = 30
API_PORT, HEALTH_PORT = 8000, 9101  # preferred; a free port when taken


def port_or_free(preferred: int) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1, else a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def demo_processes(
    *, homes: int, speed: float, history_days: int = 14, api_port: int = API_PORT,
    health_port: int = HEALTH_PORT,
) -> list[tuple[str, list[str]]]:  # fmt: skip
    """The component processes of the demo, in start order; only the built ones."""
    vv = [sys.executable, "-m", "vitalvagt.cli"]
    wanted = [
        ("ingest", "ingest.cli", [*vv, "ingest", "run", "--health-port", str(health_port)]),
        ("alerts", "alerts.cli", [*vv, "alerts", "run"]),
        ("api", "api.cli", [*vv, "api", "serve", "--port", str(api_port)]),
        ("fleet", "simulator.fleet", [*vv, "simulate", "fleet", "--homes", str(homes),
                                      "--speed", str(speed), "--days", str(history_days),
                                      "--live-days", str(LIVE_DAYS)]),
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


def run_demo(
    settings: Settings,
    *,
    homes: int,
    speed: float,
    duration_s: float | None,
    history_days: int = 14,
) -> int:
    stack = Stack(settings)
    stack.up()
    print(describe(stack.status()))
    api_port, health_port = port_or_free(API_PORT), port_or_free(HEALTH_PORT)
    procs = demo_processes(homes=homes, speed=speed, history_days=history_days,
                           api_port=api_port, health_port=health_port)  # fmt: skip
    print(f"API: http://127.0.0.1:{api_port}/docs   ingest health:"
          f" http://127.0.0.1:{health_port}/healthz")
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
