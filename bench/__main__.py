"""`make bench`: every benchmark in turn, each printing its conditions and its baseline."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["decode_bench.py", "cohort_bench.py", "gateway_bench.py", "ingest_bench.py",
           "fleet_bench.py", "evaluate_bench.py", "alert_bench.py",
           "api_bench.py", "web_bench.py"]

failed = []
for name in BENCHES:
    print(f"\n=== {name} ===", flush=True)
    if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
        failed.append(name)
sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
