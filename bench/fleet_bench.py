"""The largest fleet this machine sustains in real time, through broker and ingest.

Run: .venv/bin/python bench/fleet_bench.py [--homes N] [--days D]

A cohort of N homes x D days ending now is replayed at increasing speeds through the whole
hub (fleet -> mosquitto -> `vitalvagt ingest run` -> TimescaleDB). At speed S the hub
carries the traffic of N x S homes in real time; it kept up when 99 % of the batches were
published within 1 s (real time) of being due and ingest had stored everything within 5 s
after the last one. The baseline is each batch's due time on the fleet's own clock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import free_port, start_ingest  # noqa: E402
from simulator.cohort import CohortSpec, write_cohort  # noqa: E402
from simulator.cohort_format import GroupChoice  # noqa: E402
from simulator.fleet_run import run_fleet  # noqa: E402
from vitalvagt.settings import Settings  # noqa: E402
from vitalvagt.stack import Stack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--homes", type=int, default=1000)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--speeds", default="1440,5760,23040,92160")
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="vv-bench-", dir="/tmp"))
    os.chmod(state, 0o755)
    stack = Stack(Settings(state_dir=state, pg_port=free_port(), mqtt_port=free_port(),
                           mqtt_tls_port=free_port()))
    stack.up()
    ingest = start_ingest(stack)
    best = 0
    per_day = 0.0
    try:
        with psycopg.connect(stack.database_url(), autocommit=True) as conn:
            for seed, speed in enumerate(float(s) for s in args.speeds.split(",")):
                # A fresh cohort per speed (own seed: new ids), ending today.
                tmp = Path(tempfile.mkdtemp(prefix="vv-cohort-"))
                start = date.today() - timedelta(days=args.days + 1)
                spec = CohortSpec(args.homes, args.days, 100 + seed, start, GroupChoice.MIXED)
                cohort = write_cohort(tmp, spec).path
                before = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
                t = time.perf_counter()
                stats = run_fleet(
                    database_url=stack.database_url(), host="127.0.0.1",
                    port=stack.settings.mqtt_tls_port, tls_ca=stack.paths.ca_cert,
                    cohort_dir=str(cohort), speed=speed,
                    on_provisioned=stack.sync_broker_users,
                )  # fmt: skip
                took = time.perf_counter() - t  # includes provisioning (about a second)
                deadline = time.perf_counter() + 5
                stored = 0
                while time.perf_counter() < deadline:
                    total = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
                    stored = total - before
                    if stored >= stats.readings_acked:
                        break
                    time.sleep(0.1)
                lags = sorted(stats.lags_s)
                p99 = lags[int(0.99 * (len(lags) - 1))] if lags else 0.0
                kept_up = p99 <= 1.0 and stored >= stats.readings_acked
                homes_rt = int(args.homes * speed)
                print(f"speed {speed:>7,.0f}x: {args.homes} homes x {args.days} d, "
                      f"{stats.readings_acked:,} readings in {stats.messages_acked:,} messages; "
                      f"{took:.1f} s; publish lag p99 {p99:.2f} s; ingest stored {stored:,}: "
                      f"{'kept up' if kept_up else 'fell behind'}"
                      f" = {homes_rt:,} homes in real time")
                shutil.rmtree(tmp, ignore_errors=True)
                if not kept_up:
                    break
                best = homes_rt
                per_day = stats.readings_acked / (args.homes * args.days)
        print(f"largest fleet sustained in real time: {best:,} homes"
              f" (at {per_day:.1f} readings a home a day)")
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(30)
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
