"""`make demo`: the embedded stack plus every component that is built, as child processes."""

from __future__ import annotations

import ctypes
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
PR_SET_PDEATHSIG = 1  # linux/prctl.h
VV = [sys.executable, "-m", "vitalvagt.cli"]  # the components, run as operators run them
API_PORT, HEALTH_PORT = 8000, 9101  # preferred; a free port when taken
# The demo's cohort (20 homes, the default --homes, and 14 days of history): the seed is
# chosen so that a real simulated deterioration (an infection: fever of 38.9 and 38.6 C on
# the last two mornings of sim-p00015) falls in the last two days of the history at any time
# of day, so the alert engine opens an alert from it while the history is replayed, about a
# minute in (measured: docs/simulation.md, "The demo"); seed 1, the fleet's default, has no
# deterioration that opens one within two minutes. Nothing is planted.
DEMO_SEED = 12
# Homes whose oximeter streams continuously (a reading a second) once the fleet is live.
CONTINUOUS_HOMES = 1


def port_or_free(preferred: int) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1, else a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGTERM when the demo dies, even by
    SIGKILL, so a killed demo leaves no component running (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def demo_processes(
    *, homes: int, speed: float, history_days: int = 14, api_port: int = API_PORT,
    health_port: int = HEALTH_PORT, seed: int = DEMO_SEED,
) -> list[tuple[str, list[str]]]:  # fmt: skip
    """The component processes of the demo, in start order; only the built ones."""
    wanted = [
        ("ingest", "ingest.cli", [*VV, "ingest", "run", "--health-port", str(health_port)]),
        ("alerts", "alerts.cli", [*VV, "alerts", "run"]),
        ("api", "api.cli", [*VV, "api", "serve", "--port", str(api_port)]),
        ("fleet", "simulator.fleet", [*VV, "simulate", "fleet", "--homes", str(homes),
                                      "--speed", str(speed), "--days", str(history_days),
                                      "--live-days", str(LIVE_DAYS), "--seed", str(seed),
                                      "--continuous", str(CONTINUOUS_HOMES)]),
    ]
    return [(name, argv) for name, module, argv in wanted if _built(module)]


# Continuous oximetry as the gateway stores it: SpO2 stamped by the gateway (PLX Continuous
# has no device time); the cohort's spot-check oximeters all have clocks.
_CONTINUOUS = "kind = 'spo2' AND time_source = 'gateway'"


def _summary(database_url: str) -> str:
    import psycopg

    with psycopg.connect(database_url) as conn:
        obs, patients, dead, recent = conn.execute(
            "SELECT (SELECT count(*) FROM observations),"
            " (SELECT count(DISTINCT patient_id) FROM observations),"
            " (SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL),"
            " (SELECT count(*) FROM observations WHERE ingested_at > now() - interval '10 s')"
        ).fetchone()
        alerts = conn.execute("SELECT count(*) FROM alerts WHERE state <> 'resolved'").fetchone()[0]
    return (f"hub: {obs} readings stored for {patients} patients (+{recent} in the last 10 s),"
            f" {alerts} active alerts, {dead} dead letters")


def continuous_patient(database_url: str) -> str | None:
    """The patient whose oximeter streams continuously, once its first readings are stored."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT patient_id FROM observations WHERE {_CONTINUOUS}"
            " ORDER BY measured_at DESC LIMIT 1"
        ).fetchone()
    return row[0] if row else None


DEMO_USER = "demo"
# A demo's log-in, printed for anyone to use: the demo runs on 127.0.0.1 with simulated
# patients only. A real deployment adds its users with `vitalvagt user add`.
DEMO_PASSWORD = "vitalvagt-demo"


def demo_team(database_url: str) -> str | None:
    """The first acute team, once the simulated fleet has made it."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id FROM acute_teams ORDER BY id LIMIT 1").fetchone()
    return row[0] if row else None


def add_demo_user(team: str) -> bool:
    """The demo's nurse of ``team`` (through `vitalvagt user add`, as an operator would);
    True when the user exists afterwards."""
    r = subprocess.run([*VV, "user", "add", DEMO_USER, "--name", "Demo nurse", "--role",
                        "nurse", "--team", team, "--password-stdin"],
                       input=DEMO_PASSWORD + "\n", capture_output=True, text=True)  # fmt: skip
    return r.returncode == 0 or "exists already" in r.stderr


def login_hint(api: str) -> str:
    token = (f"TOKEN=$(curl -s -d 'username={DEMO_USER}&password={DEMO_PASSWORD}'"
             f" {api}/auth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)"
             "[\"access_token\"])')")  # fmt: skip
    return "\n".join([
        f"demo log-in: user {DEMO_USER}, password {DEMO_PASSWORD} (a nurse of the simulated team)",
        f"  the web view:       {api}/web/  (log in there with the demo log-in)",
        f"  a token:            {token}",
        f"  patients:           curl -H \"Authorization: Bearer $TOKEN\" {api}/patients",
        f"  the team's alerts:  curl -H \"Authorization: Bearer $TOKEN\" {api}/alerts",
    ])  # fmt: skip


def where_to_look(*, api_port: int, health_port: int, mqtt_port: int, secrets: str) -> str:
    """What the demo prints about where to watch it."""
    api = f"http://127.0.0.1:{api_port}"
    secret = f'json.load(open("{secrets}"))["vv-ingest"]'
    password = f"$(python3 -c 'import json; print({secret})')"
    return "\n".join([
        "where to look:",
        f"  the web view:       {api}/web/  (the acute team's triage list, patients, homes)",
        f"  API (OpenAPI docs): {api}/docs   ingest health: http://127.0.0.1:{health_port}/healthz",
        "  the API's demo log-in is printed once the simulated team exists (seconds)",
        "  active alerts:      vitalvagt alerts list",
        f"  readings arriving over MQTT: mosquitto_sub -V mqttv5 -h 127.0.0.1 -p {mqtt_port}"
        f' -u vv-ingest -P "{password}" -t "vv/v1/gw/+/obs"',
        "  once the history is replayed (about a minute), one home's oximeter streams a reading"
        " a second; its patient is printed then",
    ])  # fmt: skip


def run_demo(
    settings: Settings,
    *,
    homes: int,
    speed: float,
    duration_s: float | None,
    history_days: int = 14,
    seed: int = DEMO_SEED,
    api_port: int = API_PORT,
    health_port: int = HEALTH_PORT,
) -> int:
    stack = Stack(settings)
    stack.up()
    print(describe(stack.status()))
    api_port, health_port = port_or_free(api_port), port_or_free(health_port)
    procs = demo_processes(homes=homes, speed=speed, history_days=history_days,
                           api_port=api_port, health_port=health_port, seed=seed)  # fmt: skip
    print(f"API: http://127.0.0.1:{api_port}/docs   ingest health:"
          f" http://127.0.0.1:{health_port}/healthz")
    print(where_to_look(api_port=api_port, health_port=health_port,
                        mqtt_port=stack.settings.mqtt_port, secrets=str(stack.paths.secrets)))
    if not procs:
        print("\nthe stack is up; no hub component is built yet, so there is nothing more to run.")
        print("stop it with `vitalvagt stack down` (data is kept).")
        return 0
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name, argv in procs:
            print(f"starting {name}: {' '.join(argv[2:])}")
            children.append((name, subprocess.Popen(argv, preexec_fn=_die_with_parent)))
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_report = time.monotonic() + 10
        streaming: str | None = None
        user_added = not any(name == "api" for name, _ in procs)
        api = f"http://127.0.0.1:{api_port}"
        while deadline is None or time.monotonic() < deadline:
            if not user_added and (team := demo_team(stack.database_url())):
                if add_demo_user(team):
                    user_added = True
                    print(login_hint(api), flush=True)
            if time.monotonic() >= next_report:
                next_report += 10
                print(_summary(stack.database_url()), flush=True)
                if streaming is None and (streaming := continuous_patient(stack.database_url())):
                    print(f"continuous oximetry from {streaming}, a reading a second: curl -H"
                          f" \"Authorization: Bearer $TOKEN\" '{api}/patients/"
                          f"{streaming}/observations?kind=spo2&limit=10'", flush=True)
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
