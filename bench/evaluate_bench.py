"""Offline evaluation speed (`vitalvagt evaluate`): patient-days per second.

    .venv/bin/python bench/evaluate_bench.py [--patients 300] [--days 180] [--seed 1]

Generates a cohort in a temporary directory, reads it back (alerts/evaluate_input.py) and
replays every reading through the rules (alerts/replay.py), timing each part. The raw
baseline of the same run is the guideline rule set (fixed limits, one vectorised pass per
patient); the full set is measured in one chunk per patient, and in one chunk per day for
the first `--day-patients` patients (what the live engine does, a batch at a time over the
patient's history: the findings are the same, the cost grows with the history). No
assertions.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from alerts.evaluate_input import read_cohort
from alerts.replay import replay_patient
from alerts.ruleset import FULL, GUIDELINE
from simulator.cohort import DEFAULT_START, CohortSpec, write_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--day-patients", type=int, default=20)
    args = parser.parse_args()
    spec = CohortSpec(args.patients, args.days, args.seed, DEFAULT_START)
    print(f"evaluate bench: {spec.patients} patients x {spec.days} days, seed {spec.seed}; "
          f"Python {platform.python_version()} on {platform.machine()}, one process")
    with tempfile.TemporaryDirectory(prefix="vv-evaluate-bench-") as tmp:
        summary = write_cohort(Path(tmp) / "cohort", spec)
        began = time.perf_counter()
        patients = read_cohort(summary.path)
        read_s = time.perf_counter() - began
    series = [(p.series(), p.ctx) for p in patients]
    days = sum((int(s.t[-1]) - int(s.t[0])) / 86400 + 1 for s, _ in series if len(s))
    n_obs = sum(len(s) for s, _ in series)
    print(f"  {n_obs} observations, {days:,.0f} monitored patient-days; reading the files "
          f"{read_s:.2f} s ({n_obs / read_s:,.0f} observations/s)")
    some = series[: args.day_patients]
    for label, rs, chunking, group in (
        ("guideline, one chunk (baseline)", GUIDELINE, "all", series),
        ("full, one chunk per patient", FULL, "all", series),
        (f"full, one chunk per patient ({len(some)} pts)", FULL, "all", some),
        (f"full, one chunk per day ({len(some)} pts)", FULL, "day", some),
    ):
        g_days = sum((int(s.t[-1]) - int(s.t[0])) / 86400 + 1 for s, _ in group if len(s))
        g_obs = sum(len(s) for s, _ in group)
        began = time.perf_counter()
        n_alerts = sum(len(replay_patient(s, ctx, rs, chunking)) for s, ctx in group)
        sec = time.perf_counter() - began
        print(f"  {label:40s} {sec:7.2f} s {g_days / sec:10,.0f} patient-days/s "
              f"{g_obs / sec:10,.0f} readings/s  ({n_alerts} alerts)")


if __name__ == "__main__":
    main()
