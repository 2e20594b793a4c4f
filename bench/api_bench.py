"""The clinician API under load, against the bare SQL of the same queries in the same run.

Run: .venv/bin/python bench/api_bench.py [--quick] [--pool N]

On a private embedded stack (temporary directory, free ports), loaded with COPY:
  5,000 patients in 10 teams of 2 municipalities, 10 million readings (--quick: 1 million)
  over 60 days in 5 kinds, 20,000 alerts (4 per patient; 1,000 of them active, 100 a
  team, the rest resolved history).
The API runs as its own process (uvicorn, one worker, a pool of 10 as the app's default, or
--pool N). Open loop: requests start on a fixed schedule (100/s, then 200/s) over 64
keep-alive connections whatever the answers do, latency counted from when each was due (a
queue is measured, not hidden). Raw sockets: this venv has neither httpx nor aiohttp.
  case (a)  GET /alerts (a nurse's open-alert list in triage order), target p99 <= 50 ms
  case (b)  GET /patients/{id}/series?kind=spo2, 30 days in 200 buckets (random patients
            of the nurse's team), target p99 <= 50 ms
  baselines the same SQL the route runs (the route's query alone, and every statement of
            the request: the user and scope, the patient, the query, the audit row), timed
            one after another on one connection, in the same run
  each case also runs closed-loop (one request at a time) for its service time, and the
  CPU that uvicorn and PostgreSQL spent per request (from /proc): the capacity of 2 cores
  stream     100 SSE clients on /alerts/stream; alerts raised one every 100 ms; the delay
            from before the COMMIT of each to its arrival at every client (p50/p99/max)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.audit import audit  # noqa: E402
from api.queries import alerts as qa  # noqa: E402
from api.queries import observations as qo  # noqa: E402
from api.queries import patients as qp  # noqa: E402
from api.security import Principal  # noqa: E402
from api.users import add_user, get_user  # noqa: E402
from vitalvagt.db.alert_lifecycle import record  # noqa: E402
from vitalvagt.roles import Role  # noqa: E402
from vitalvagt.settings import Settings  # noqa: E402
from vitalvagt.stack import Stack  # noqa: E402

PATIENTS, TEAMS, ALERTS_PER_PATIENT = 5000, 10, 4
KINDS = (
    ("spo2", "%", 88, 12),
    ("pulse", "/min", 55, 50),
    ("bp_systolic", "mm[Hg]", 100, 60),
    ("bp_diastolic", "mm[Hg]", 60, 35),
    ("weight", "kg", 60, 40),
)
DAYS = 60
COPY_TYPES = ["uuid", "timestamptz", "timestamptz"] + ["text"] * 4 + ["float8", "text"]
RATE = 200
CONNECTIONS = 64
SSE_CLIENTS = 100
SECRET = "bench-signing-key-" + "b" * 40
PASSWORD = "bench password 1"
NOW = datetime.now(UTC).replace(microsecond=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def team(i: int) -> str:
    return f"team-{i % TEAMS}"


def load(url: str, readings: int) -> dict[str, float]:
    """Patients, readings (binary COPY, in time order as they arrive) and alerts."""
    took: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO municipalities VALUES ('0101', 'Bench A'), ('0202', 'Bench B')")
        for t in range(TEAMS):
            conn.execute(
                "INSERT INTO acute_teams (id, municipality_id, name) VALUES (%s, %s, %s)",
                (f"team-{t}", "0101" if t < TEAMS // 2 else "0202", f"Bench {t}"),
            )
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY patients (id, municipality_id, team_id, patient_group) FROM STDIN"
            ) as copy,
        ):
            for i in range(PATIENTS):
                copy.write_row(
                    (f"p-{i:05d}", "0101" if i % TEAMS < TEAMS // 2 else "0202", team(i), "copd")
                )
        t0 = time.perf_counter()
        per_patient = readings // PATIENTS
        step = timedelta(days=DAYS) / per_patient
        start = NOW - timedelta(days=DAYS)
        ids = [f"p-{i:05d}" for i in range(PATIENTS)]
        gws = [f"gw-{i:05d}" for i in range(PATIENTS)]
        n = 0
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY observations (id, measured_at, received_at, patient_id, gateway_id,"
                " device_address, kind, value, unit) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(COPY_TYPES)
            for j in range(per_patient):
                kind, unit, base, spread = KINDS[j % len(KINDS)]
                at = start + step * j
                for i in range(PATIENTS):
                    n += 1
                    copy.write_row(
                        (
                            uuid.UUID(int=n),
                            at,
                            at,
                            ids[i],
                            gws[i],
                            "AA:00:00:00:00:01",
                            kind,
                            base + (n * 7919) % spread,
                            unit,
                        )
                    )
        took["copy_s"] = time.perf_counter() - t0
        took["rows"] = n
        # 4 alerts a patient; active: limit:spo2 of every 5th patient of each team (100 a team).
        conn.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, severity, state, kind, value,"
            " measured_at, message, opened_at, resolved_at, resolved_by)"
            " SELECT p.id, p.team_id, r.rule, r.severity,"
            "  CASE WHEN r.rule = 'limit:spo2' AND right(p.id, 5)::int / 10 %% 5 = 0 THEN 'open'"
            "  ELSE 'resolved' END::alert_state, r.kind, 80, %(now)s - random() * interval"
            "  '30 days', 'bench alert', %(now)s - random() * interval '30 days',"
            "  CASE WHEN r.rule = 'limit:spo2' AND right(p.id, 5)::int / 10 %% 5 = 0 THEN NULL"
            "  ELSE %(now)s END, 'bench'"
            " FROM patients p CROSS JOIN (VALUES ('limit:spo2', 'red', 'spo2'),"
            "  ('limit:pulse', 'yellow', 'pulse'), ('limit:bp_systolic', 'yellow',"
            "  'bp_systolic'), ('missed', 'blue', NULL)) r(rule, severity, kind)",
            {"now": NOW},
        )
        # Settled as a running hub would be: statistics, visibility map, no pending checkpoint.
        t0 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) observations")
        conn.execute("VACUUM (ANALYZE) alerts")
        conn.execute("VACUUM (ANALYZE) patients")
        took["vacuum_s"] = time.perf_counter() - t0
        for t in range(TEAMS):
            add_user(
                conn,
                f"nurse-{t}",
                display_name=f"Nurse {t}",
                role=Role.NURSE,
                team_ids=[f"team-{t}"],
                password=PASSWORD,
            )
    return took


# --- a small HTTP/1.1 client on asyncio streams -------------------------------------------
class Http:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Http:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        assert self.reader and self.writer
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close() if self.writer else None


async def token(port: int, user: str) -> str:
    h = await Http(port).open()
    body = urlencode({"username": user, "password": PASSWORD}).encode()
    status, data = await h.request(
        "POST", "/auth/token", {"Content-Type": "application/x-www-form-urlencoded"}, body
    )
    h.close()
    assert status == 200, data
    return json.loads(data)["access_token"]


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def open_loop(
    port: int, paths: Callable[[], str], headers: dict[str, str], rate: float, duration_s: float
) -> tuple[list[float], int]:
    """Requests due every 1/rate s; latency (ms) from when each was due. Returns the
    latencies and the number of answers other than 200."""
    pool: asyncio.Queue[Http] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await Http(port).open())
    lat: list[float] = []
    bad = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1

    async def one(due: float, path: str) -> None:
        nonlocal bad
        await asyncio.sleep(max(0.0, due - loop.time()))
        conn = await pool.get()
        try:
            status, _ = await asyncio.wait_for(conn.request("GET", path, headers), 120)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError):
            status = 0  # counted as failed; a fresh connection replaces this one
            conn.close()
            conn = await Http(port).open()
        finally:
            pool.put_nowait(conn)
        lat.append((loop.time() - due) * 1000)
        bad += status != 200

    n = int(rate * duration_s)
    await asyncio.gather(*(one(start + i / rate, paths()) for i in range(n)))
    while not pool.empty():
        pool.get_nowait().close()
    return lat, bad


async def closed_loop(
    port: int, paths: Callable[[], str], headers: dict[str, str], n: int
) -> list[float]:
    h = await Http(port).open()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        status, body = await h.request("GET", paths(), headers)
        assert status == 200, body[:300]
        out.append((time.perf_counter() - t) * 1000)
    h.close()
    return out


# --- CPU from /proc ---------------------------------------------------------------------------
def cpu_seconds(api_pid: int, postmaster: int) -> dict[str, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {"uvicorn": 0.0, "postgres": 0.0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) == api_pid:
            out["uvicorn"] += used
        elif int(pid) == postmaster or int(fields[1]) == postmaster:
            out["postgres"] += used
    return out


# --- baselines: the route's own SQL, on one connection ----------------------------------------
def sql_baseline(url: str, fn: Callable[[psycopg.Connection], object], n: int) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET timezone = 'UTC'")
        for _ in range(20):
            fn(conn)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn(conn)
            out.append((time.perf_counter() - t) * 1000)
    return out


def principal_of(conn: psycopg.Connection, user_id: str) -> Principal:
    """What ``api.security.principal`` reads at each request (the user, the municipalities)."""
    user = get_user(conn, user_id)
    assert user is not None
    rows = conn.execute(
        "SELECT DISTINCT municipality_id FROM acute_teams WHERE id = ANY(%s)",
        (list(user.team_ids),),
    ).fetchall()
    cities = tuple(sorted(r[0] for r in rows))
    teams = tuple(user.team_ids)
    return Principal(user_id, user.display_name, user.role, teams, cities, "127.0.0.1")


def alerts_sql(conn: psycopg.Connection, p: Principal) -> list[dict]:
    return qa.triage(
        conn,
        p.scope,
        states=["open", "acknowledged"],
        severities=None,
        team=None,
        patient=None,
        limit=500,
    )


def series_sql(conn: psycopg.Connection, p: Principal, patient: str) -> object:
    return qo.series(
        conn, p.scope, patient, kind="spo2", since=NOW - timedelta(days=30), until=NOW, points=200
    )


# --- the stream ---------------------------------------------------------------------------------
async def sse_client(
    port: int, tok: str, ready: asyncio.Event, got: dict[int, list[float]], counter: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /alerts/stream?keepalive_s=30 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {tok}\r\n\r\n".encode()
    )
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b": connected"):
                counter[0] += 1
                if counter[0] == SSE_CLIENTS:
                    ready.set()
            elif line.startswith(b"data: "):
                now = time.time()
                got.setdefault(json.loads(line[6:])["alert_id"], []).append(now)
    finally:
        writer.close()


def raise_alert(url: str, patient: str, i: int) -> tuple[int, float]:
    with psycopg.connect(url) as conn:
        alert_id = conn.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, severity, message)"
            " VALUES (%s, 'team-0', %s, 'red', 'bench stream') RETURNING id",
            (patient, f"bench:stream:{i}"),
        ).fetchone()[0]
        record(conn, alert_id, None, "open", by="bench", reason="opened")
        t = time.time()
        conn.commit()
    return alert_id, t


async def stream_case(url: str, port: int, tok: str, alerts: int) -> list[float]:
    ready, got, counter = asyncio.Event(), {}, [0]
    tasks = [
        asyncio.create_task(sse_client(port, tok, ready, got, counter)) for _ in range(SSE_CLIENTS)
    ]
    await asyncio.wait_for(ready.wait(), 60)
    committed = {}
    for i in range(alerts):
        alert_id, t = await asyncio.to_thread(
            raise_alert, url, "p-00000" if i % 2 else "p-00010", i
        )
        committed[alert_id] = t
        await asyncio.sleep(0.1)
    deadline = time.time() + 10
    while time.time() < deadline and sum(len(got.get(a, [])) for a in committed) < (
        alerts * SSE_CLIENTS
    ):
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = [(r - committed[a]) * 1000 for a in committed for r in got.get(a, [])]
    missing = alerts * SSE_CLIENTS - len(lat)
    if missing:
        print(f"stream     {missing} deliveries missing of {alerts * SSE_CLIENTS}")
    return lat


def serve(url: str, port: int, pool: int) -> None:
    """The API process (``--serve``): uvicorn with the app as ``vitalvagt api serve`` runs it."""
    import uvicorn

    from api.app import create_app
    from api.config import ApiConfig

    app = create_app(url, config=ApiConfig(jwt_secret=SECRET), pool_max_size=pool)  # type: ignore[arg-type]
    profile = os.environ.get("VV_BENCH_PROFILE")  # a file: cProfile of the whole API process
    if profile:
        import cProfile

        with cProfile.Profile() as prof:
            uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        prof.dump_stats(profile)
        return
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_http(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the API did not start")


def report(label: str, lat: list[float], bad: int, target: float | None = None) -> str:
    p99 = pct(lat, 0.99)
    verdict = ""
    if target is not None:
        verdict = (
            f" (target <= {target:.0f} ms: met)"
            if p99 <= target
            else f" (target <= {target:.0f} ms: MISSED by {p99 - target:.0f} ms)"
        )
    return (
        f"{label}: p50 {statistics.median(lat):.1f} ms, p99 {p99:.1f} ms,"
        f" max {max(lat):.1f} ms over {len(lat):,} requests, {bad} not 200{verdict}"
    )


async def run_cases(
    url: str, port: int, api_pid: int, postmaster: int, duration_s: float, stream_alerts: int
) -> None:
    team0 = [f"p-{i:05d}" for i in range(0, PATIENTS, TEAMS)]
    since = (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = {
        "healthz": lambda: "/healthz",
        "alerts": lambda: "/alerts",
        "series": lambda: (
            f"/patients/{random.choice(team0)}/series?kind=spo2&since={since}"
            f"&until={until}&points=200"
        ),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        p = principal_of(conn, "nurse-0")
        n_alerts = len(alerts_sql(conn, p))
        n_series = sum(r["n"] for r in series_sql(conn, p, team0[0])[1])
    print(
        f"           the nurse's open-alert list: {n_alerts} alerts; a 30-day spo2 series:"
        f" {n_series} readings in <= 200 buckets"
    )
    base_alert = sql_baseline(url, lambda c: alerts_sql(c, p), 300)
    base_series = sql_baseline(url, lambda c: series_sql(c, p, random.choice(team0)), 300)

    def full_alerts(c: psycopg.Connection) -> None:
        who = principal_of(c, "nurse-0")
        rows = alerts_sql(c, who)
        audit(c, who, "list_alerts", None, rows=len(rows))

    def full_series(c: psycopg.Connection) -> None:
        who, patient = principal_of(c, "nurse-0"), random.choice(team0)
        qp.get_patient(c, who.scope, patient)
        series_sql(c, who, patient)
        audit(c, who, "read_series", patient, kind="spo2")

    base_alert_all = sql_baseline(url, full_alerts, 300)
    base_series_all = sql_baseline(url, full_series, 300)
    print(report("baseline   bare SQL, open-alert list (the query)   ", base_alert, 0))
    print(report("baseline   bare SQL, open-alert list (all of it)   ", base_alert_all, 0))
    print(report("baseline   bare SQL, 30-day series (the query)     ", base_series, 0))
    print(report("baseline   bare SQL, 30-day series (all of it)     ", base_series_all, 0))

    tok = await token(port, "nurse-0")
    headers = {"Authorization": f"Bearer {tok}"}
    # The stream first, on a server no overload has touched yet.
    lat = await stream_case(url, port, tok, stream_alerts)
    if lat:
        print(
            report(
                f"stream     commit -> {SSE_CLIENTS} SSE clients, {stream_alerts} alerts", lat, 0
            )
        )
    for name, paths in cases.items():
        label = {
            "healthz": "floor      GET /healthz (no token, SELECT 1)",
            "alerts": "case (a)   GET /alerts",
            "series": "case (b)   GET .../series 30 d",
        }[name]
        await closed_loop(port, paths, headers, 30)  # warm
        c0 = cpu_seconds(api_pid, postmaster)
        t0 = time.perf_counter()
        one = await closed_loop(port, paths, headers, 300)
        wall = time.perf_counter() - t0
        c1 = cpu_seconds(api_pid, postmaster)
        per = {k: (c1[k] - c0[k]) / len(one) * 1000 for k in c0}
        total = sum(per.values())
        print(
            report(f"{label}, one at a time", one, 0)
            + f"; CPU/request: uvicorn {per['uvicorn']:.1f} ms, postgres {per['postgres']:.1f}"
            f" ms -> capacity of 2 cores ~{2000 / total:,.0f}/s, of the 1 core uvicorn can"
            f" use ~{1000 / max(per['uvicorn'], 0.01):,.0f}/s"
            f" ({len(one) / wall:,.0f}/s closed loop)"
        )
        if name == "healthz":
            continue  # the floor: what any request costs before the route's own work
        load0 = os.getloadavg()
        half, bad = await open_loop(port, paths, headers, RATE / 2, duration_s)
        print(report(f"{label} at {RATE // 2}/s for {duration_s:.0f} s", half, bad, 50))
        lat, bad = await open_loop(port, paths, headers, RATE, duration_s)
        print(
            report(f"{label} at {RATE}/s for {duration_s:.0f} s", lat, bad, 50)
            + f"; load before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}"
        )
        await asyncio.sleep(5)


@contextmanager
def private_stack(prefix: str) -> Iterator[Stack]:
    """An embedded stack of the bench's own (temporary state, free ports), removed after."""
    state = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(state, 0o755)
    stack = Stack(
        Settings(
            state_dir=state, pg_port=free_port(), mqtt_port=free_port(), mqtt_tls_port=free_port()
        )
    )
    stack.up()
    try:
        yield stack
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


def stop(api: subprocess.Popen | None) -> None:
    """The API process, if it still runs: SIGTERM, as a service manager would."""
    if api and api.poll() is None:
        api.send_signal(signal.SIGTERM)
        api.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 million readings, shorter runs")
    ap.add_argument("--pool", type=int, default=10, help="the API's pool (default: the app's 10)")
    ap.add_argument("--serve", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.pool)
        return
    readings = 1_000_000 if args.quick else 10_000_000
    duration_s = 10 if args.quick else 30
    with private_stack("vv-bench-") as stack:
        state = stack.settings.state_dir
        url = stack.database_url()
        print(
            f"conditions: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start;"
            f" PostgreSQL 15 + TimescaleDB, uvicorn (1 worker, pool of {args.pool}) and the"
            " load generator here"
        )
        took = load(url, readings)
        t0 = time.perf_counter()
        with psycopg.connect(stack.admin_dsn(), autocommit=True) as su:
            su.execute("CHECKPOINT")  # no checkpoint of the load left to run into the cases
        took["vacuum_s"] += time.perf_counter() - t0
        print(
            f"data       {PATIENTS:,} patients, {int(took['rows']):,} readings over {DAYS} days"
            f" (COPY {took['rows'] / took['copy_s']:,.0f} rows/s, {took['copy_s']:.0f} s;"
            f" VACUUM ANALYZE, CHECKPOINT {took['vacuum_s']:.0f} s),"
            f" {PATIENTS * ALERTS_PER_PATIENT:,} alerts ({PATIENTS // 5:,} active,"
            f" {PATIENTS // 5 // TEAMS} a team)"
        )
        port = free_port()
        api_log = state / "api.log"
        api = subprocess.Popen(
            [sys.executable, __file__, "--pool", str(args.pool), "--serve", url, str(port)],
            stderr=api_log.open("wb"),
        )
        try:
            wait_http(port)
            postmaster = int((stack.paths.pg_data / "postmaster.pid").read_text().split()[0])
            alerts = 20 if args.quick else 50
            asyncio.run(run_cases(url, port, api.pid, postmaster, duration_s, alerts))
            print(f"load       at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
            errors = api_log.read_text(errors="replace")
            print(
                f"api log    {errors.count('PoolTimeout:')} pool time-outs (30 s without a free"
                f" database connection), {errors.count('api: unexpected error')} server errors"
            )
        finally:
            stop(api)


if __name__ == "__main__":
    main()
