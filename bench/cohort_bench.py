"""Cohort generation speed: patient-days per second, with the conditions it was measured in.

    .venv/bin/python bench/cohort_bench.py [--patients 1000] [--days 90] [--seed 1]

Two figures from the same run: the physiology alone (numpy arrays, nothing written: the raw
baseline) and the whole cohort written to a temporary directory (ids, CSV, gzip), so that
the cost of the files is visible. No assertions: this prints figures.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from simulator.cohort import DEFAULT_START, CohortSpec, generate, write_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    spec = CohortSpec(args.patients, args.days, args.seed, DEFAULT_START)
    patient_days = spec.patients * spec.days
    print(f"cohort bench: {spec.patients} patients x {spec.days} days = {patient_days} "
          f"patient-days, seed {spec.seed}, group {spec.group.value}; Python "
          f"{platform.python_version()} on {platform.machine()}, one process")

    began = time.perf_counter()
    readings = events = 0
    for sim in generate(spec):
        readings += len(sim.readings)
        events += len(sim.events)
    raw_s = time.perf_counter() - began
    print(f"  physiology only (arrays): {raw_s:6.2f} s  {patient_days / raw_s:10,.0f} "
          f"patient-days/s  {readings / raw_s:10,.0f} observations/s")

    with tempfile.TemporaryDirectory(prefix="vv-cohort-bench-") as tmp:
        began = time.perf_counter()
        summary = write_cohort(Path(tmp) / "cohort", spec)
        total_s = time.perf_counter() - began
        size = sum(f.stat().st_size for f in summary.path.iterdir())
    print(f"  cohort written to disk:   {total_s:6.2f} s  {patient_days / total_s:10,.0f} "
          f"patient-days/s  {summary.observations / total_s:10,.0f} observations/s")
    print(f"  {summary.observations} observations, {summary.clinical_events} clinical events, "
          f"{summary.events - summary.clinical_events} artefacts, {size / 1e6:.1f} MB on disk; "
          f"writing costs {total_s / raw_s:.1f}x the physiology")


if __name__ == "__main__":
    main()
