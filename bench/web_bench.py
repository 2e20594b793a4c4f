"""The web view's patient page with 6 months of a patient's readings, in headless Chromium,
against the time of the page's API calls alone in the same run.

Run: .venv/bin/python bench/web_bench.py [--loads N] [--continuous]

On a private embedded stack, one COPD patient with 180 days of readings:
  spot checks  SpO2, pulse, blood pressure (systolic, diastolic) and weight, four times a
               day, a reading in 20 flagged unreliable, and 30 alerts over the half year
  --continuous and continuous oximetry at night as well: SpO2 and pulse a reading a second,
               8 hours a night (about 5 million readings a kind)
The API runs as its own process (uvicorn, as `vitalvagt api serve`). Chromium (Debian's, via
Selenium and chromedriver) loads /web/#/patients/<id> with the range set to 6 months, N times
(default 10), each a full page load with an empty cache (the API sends no-store):
  page       navigation start until the page says it is ready: every plot drawn with its
             bands, the alerts and the ISBAR text shown (``performance.mark('vv-ready')``);
             target <= 1 s
  baseline   the same API requests the page made, issued from the same browser with fetch
             (JSON parsed, nothing drawn): (a) all at once, the least any page could wait for
             them; (b) in the page's own order of dependent steps
  weight     bytes transferred for the page (HTML, scripts, styles, API answers)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.users import add_user  # noqa: E402
from bench.api_bench import COPY_TYPES, free_port, private_stack, stop, wait_http  # noqa: E402
from tests.web.conftest import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM  # noqa: E402
from vitalvagt.roles import Role  # noqa: E402

DAYS = 180
PATIENT, GATEWAY, TEAM = "bench-p-0001", "bench-gw-0001", "bench-team"
PASSWORD = "bench password 1"
NOW = datetime.now(UTC).replace(microsecond=0)
SPOT = (("spo2", "%", 93, 4), ("pulse", "/min", 78, 10), ("bp_systolic", "mm[Hg]", 132, 14),
        ("bp_diastolic", "mm[Hg]", 80, 8), ("weight", "kg", 72, 2))  # fmt: skip


def load(url: str, continuous: bool) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO municipalities VALUES ('0101', 'Bench')")
        conn.execute(
            "INSERT INTO acute_teams (id, municipality_id, name) VALUES (%s, '0101', 'Bench')",
            (TEAM,),
        )
        conn.execute(
            "INSERT INTO patients (id, municipality_id, team_id, patient_group, gp_name)"
            " VALUES (%s, '0101', %s, 'copd', 'Bench GP')",
            (PATIENT, TEAM),
        )
        conn.execute(
            "INSERT INTO gateways (id, patient_id, credential_hash) VALUES (%s, %s, 'x')",
            (GATEWAY, PATIENT),
        )
        n = 0
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY observations (id, measured_at, received_at, patient_id, gateway_id,"
                " device_address, kind, value, unit, flags) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types([*COPY_TYPES, "text[]"])
            start = NOW - timedelta(days=DAYS)
            for d in range(DAYS):
                day = start + timedelta(days=d)
                if continuous:  # 22:00 to 06:00, a reading a second
                    night = day.replace(hour=21, minute=0, second=0)
                    for s in range(8 * 3600):
                        at = night + timedelta(seconds=s)
                        for kind, unit, base, spread in SPOT[:2]:
                            n += 1
                            copy.write_row((uuid.UUID(int=n), at, at, PATIENT, GATEWAY,
                                            "AA:00:00:00:00:02", kind,
                                            base - 1 + (n * 7919) % spread, unit, []))  # fmt: skip
                for hour in (7, 11, 15, 19):
                    at = day.replace(hour=hour, minute=3, second=0)
                    for kind, unit, base, spread in SPOT:
                        n += 1
                        flags = ["body_movement"] if n % 20 == 0 else []
                        copy.write_row((uuid.UUID(int=n), at, at, PATIENT, GATEWAY,
                                        "AA:00:00:00:00:01", kind, base + (n * 7919) % spread,
                                        unit, flags))  # fmt: skip
        conn.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, severity, state, kind, value,"
            " measured_at, message, opened_at, resolved_at, resolved_by)"
            " SELECT %(p)s, %(t)s, 'limit:spo2', 'red',"
            "  (CASE WHEN i = 0 THEN 'open' ELSE 'resolved' END)::alert_state, 'spo2', 84,"
            "  %(now)s - i * interval '6 days', 'SpO2 84 %% below the alert limit 85 %%',"
            "  %(now)s - i * interval '6 days',"
            "  CASE WHEN i = 0 THEN NULL ELSE %(now)s - i * interval '6 days' + interval '1 h'"
            "  END, CASE WHEN i = 0 THEN NULL ELSE 'bench' END"
            " FROM generate_series(0, 29) i",
            {"p": PATIENT, "t": TEAM, "now": NOW},
        )
        conn.execute("VACUUM (ANALYZE) observations")
        conn.execute("VACUUM (ANALYZE) alerts")
        add_user(conn, "bench-nurse", display_name="Bench nurse", role=Role.NURSE,
                 team_ids=[TEAM], password=PASSWORD)  # fmt: skip
    return n


def browser():
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, "--window-size=1280,800"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def session(port: int) -> str:
    """The tokens as the page keeps them, from a real log-in."""
    import urllib.parse
    import urllib.request

    form = urllib.parse.urlencode({"username": "bench-nurse", "password": PASSWORD}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/token", data=form) as r:
        a = json.load(r)
    now_ms = time.time() * 1000
    return json.dumps({"access": a["access_token"], "refresh": a["refresh_token"],
                       "accessUntil": now_ms + a["expires_in"] * 1000,
                       "refreshUntil": now_ms + a["refresh_expires_in"] * 1000})  # fmt: skip


PAGE_TIMING = """
const ready = performance.getEntriesByName('vv-ready')[0];
const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
const api = res.filter(r => !new URL(r.name).pathname.startsWith('/web'));
return {ready: ready ? ready.startTime : null,
        bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
        assetBytes: nav.transferSize + res.filter(r => new URL(r.name).pathname.startsWith('/web'))
                      .reduce((a, r) => a + r.transferSize, 0),
        apiBytes: api.reduce((a, r) => a + r.transferSize, 0),
        api: api.map(r => ({url: r.name, start: r.startTime, end: r.responseEnd}))};
"""

# The API requests again, from the page's origin with the page's token: all at once, and in
# the dependency steps the page takes (each step's requests start when the one before ends).
API_ALONE = """
const done = arguments[arguments.length - 1];
const [urls, steps] = [arguments[0], arguments[1]];
const token = JSON.parse(sessionStorage.getItem('vv.session')).access;
const get = (u) => fetch(u, {headers: {Authorization: 'Bearer ' + token}, cache: 'no-store'})
  .then(r => r.json());
(async () => {
  let t0 = performance.now();
  await Promise.all(urls.map(get));
  const parallel = performance.now() - t0;
  t0 = performance.now();
  for (const step of steps) await Promise.all(step.map(get));
  done({parallel, stepwise: performance.now() - t0});
})().catch(e => done({error: String(e)}));
"""


def steps_of(api: list[dict]) -> list[list[str]]:
    """The page's requests in dependent steps: a request starts in the step after the one
    whose requests had all ended before it began."""
    steps: list[list[str]] = []
    end = -1.0
    for r in sorted(api, key=lambda r: r["start"]):
        if not steps or r["start"] >= end:
            steps.append([])
        steps[-1].append(r["url"])
        end = max(end, r["end"]) if r["start"] < end else r["end"]
    return steps


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(port: int, loads: int) -> None:
    driver = browser()
    driver.set_script_timeout(300)
    base = f"http://127.0.0.1:{port}/web/"
    pages, parallel, stepwise = [], [], []
    timing: dict = {}
    try:
        driver.get(base)
        driver.execute_script("localStorage.setItem('vv.range', '180d')")
        for i in range(loads + 1):  # the first warms PostgreSQL's cache and is not counted
            driver.get("about:blank")
            driver.get(base)
            driver.execute_script("sessionStorage.setItem('vv.session', arguments[0])",
                                  session(port))  # fmt: skip
            driver.get(f"{base}#/patients/{PATIENT}")
            driver.refresh()  # a full load of the page at the patient's address
            deadline = time.monotonic() + 60
            while not driver.execute_script("return performance.getEntriesByName('vv-ready')"
                                            ".length"):  # fmt: skip
                if time.monotonic() > deadline:
                    raise SystemExit("the patient page did not become ready in 60 s")
                time.sleep(0.02)
            shown = driver.execute_script(
                "return document.querySelector('.ranges [aria-pressed=true]')?.dataset.range")
            if shown != "180d":
                raise SystemExit(f"the page shows {shown!r}, not 6 months")
            timing = driver.execute_script(PAGE_TIMING)
            alone = driver.execute_async_script(
                API_ALONE, [r["url"] for r in timing["api"]], steps_of(timing["api"])
            )
            if "error" in alone:
                raise SystemExit(f"the API calls alone failed: {alone['error']}")
            if i:
                pages.append(timing["ready"])
                parallel.append(alone["parallel"])
                stepwise.append(alone["stepwise"])
    finally:
        driver.quit()
    n = len(timing["api"])
    print(f"page       ready in p50 {statistics.median(pages):.0f} ms, p95 {pct(pages, 0.95):.0f}"
          f" ms, max {max(pages):.0f} ms over {loads} loads (target <= 1000 ms):"
          f" {'met' if pct(pages, 0.95) <= 1000 else 'NOT met'}")  # fmt: skip
    print(f"baseline   the page's {n} API requests alone: all at once p50"
          f" {statistics.median(parallel):.0f} ms; in the page's {len(steps_of(timing['api']))}"
          f" dependent steps p50 {statistics.median(stepwise):.0f} ms")  # fmt: skip
    print(f"           the page beyond its API calls (drawing, scripts): p50"
          f" {statistics.median(pages) - statistics.median(stepwise):.0f} ms")  # fmt: skip
    print(f"weight     {timing['bytes'] / 1024:.0f} KiB transferred: page and scripts"
          f" {timing['assetBytes'] / 1024:.0f} KiB, API answers {timing['apiBytes'] / 1024:.0f}"
          " KiB (uncompressed: the API sends no compression)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=10)
    ap.add_argument("--continuous", action="store_true", help="and 1 Hz oximetry at night")
    args = ap.parse_args()
    with private_stack("vv-webbench-") as stack:
        state = stack.settings.state_dir
        url = stack.database_url()
        t0 = time.perf_counter()
        rows = load(url, args.continuous)
        print(f"conditions {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f};"
              f" PostgreSQL 15 + TimescaleDB, uvicorn (1 worker), Chromium headless, here")
        print(f"data       1 patient, {rows:,} readings over {DAYS} days"
              f" ({'with' if args.continuous else 'without'} continuous night oximetry),"
              f" 30 alerts; loaded in {time.perf_counter() - t0:.0f} s")  # fmt: skip
        port = free_port()
        api = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "api_bench.py"), "--pool", "40", "--serve",
             url, str(port)],
            stderr=(state / "api.log").open("wb"),
        )  # fmt: skip
        try:
            wait_http(port)
            measure(port, args.loads)
        finally:
            stop(api)


if __name__ == "__main__":
    main()
