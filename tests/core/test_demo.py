"""`vitalvagt demo` runs on after the accelerated history (issue 10, the demo's live phase):
the fleet's cohort goes on past today, so the fleet does not end when the history is
replayed, and the demo ends with exit 0 at its duration (as on Ctrl-C), not with 1 after a
minute. Against a real stack of its own: the demo's ingest keeps a persistent session on the
shared subscription after it stops (as in service, so that readings wait for its next run),
and on the session's broker that session would take a share of every later test's readings."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import stack_env, temporary_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_the_demo_goes_on_after_the_history_and_ends_with_exit_0() -> None:
    # One day of history at a million-fold speed is replayed in well under a second; the
    # demo then runs on live until its duration.
    argv = [sys.executable, "-m", "vitalvagt.cli", "demo", "--homes", "3", "--history-days",
            "1", "--speed", "1e6", "--duration-s", "30"]  # fmt: skip
    with temporary_stack("vv-test-demo-") as stack:
        done = subprocess.run(argv, env=stack_env(stack), capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert re.search(r"API: http://127.0.0.1:\d+/docs", out)
    assert "the last 30 live" in out, "the fleet's cohort does not go on past today"
    assert "stopped with exit code" not in out, out[-3000:]
    stored = [int(n) for n in re.findall(r"hub: (\d+) readings stored", out)]
    assert stored and stored[-1] > 0, out[-3000:]
