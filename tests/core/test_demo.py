"""`vitalvagt demo` runs on after the accelerated history (issue 10, the demo's live phase):
the fleet's cohort goes on past today, so the fleet does not end when the history is
replayed, and the demo ends with exit 0 at its duration (as on Ctrl-C), not with 1 after a
minute. Against a real stack of its own: the demo's ingest keeps a persistent session on the
shared subscription after it stops (as in service, so that readings wait for its next run),
and on the session's broker that session would take a share of every later test's readings."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import stack_env, temporary_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _counts(database_url: str) -> tuple[int, int]:
    """Continuous-oximetry SpO2 rows stored (gateway-stamped, as PLX Continuous is) and the
    limit alerts opened so far."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM observations WHERE kind = 'spo2'"
            "  AND time_source = 'gateway' AND 'device_time_missing' = ANY(flags)),"
            " (SELECT count(*) FROM alerts WHERE rule LIKE 'limit:%')"
        ).fetchone()
    return row[0], row[1]


def test_the_demo_goes_on_after_the_history_and_ends_with_exit_0() -> None:
    # The demo's own cohort (seed and 20 homes, 14 days of history), at a speed that replays
    # the history in seconds; the demo then runs on live until its duration, while this test
    # watches the database: the continuous oximeter's rows keep growing, and the cohort's
    # deteriorations in the last two days of the history have opened limit alerts.
    argv = [sys.executable, "-m", "vitalvagt.cli", "demo", "--speed", "1e6",
            "--duration-s", "40"]  # fmt: skip
    samples: list[tuple[float, int]] = []  # (seconds since start, continuous rows)
    with temporary_stack("vv-test-demo-") as stack:
        url = stack.database_url()
        began = time.monotonic()
        with subprocess.Popen(argv, env=stack_env(stack), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as demo:  # fmt: skip
            try:
                while demo.poll() is None and time.monotonic() - began < 120:
                    time.sleep(2)
                    with contextlib.suppress(Exception):  # the stack may still be starting
                        samples.append((time.monotonic() - began, _counts(url)[0]))
                out, _ = demo.communicate(timeout=60)
            finally:
                if demo.poll() is None:
                    demo.kill()
        alerts = _counts(url)[1]
    assert demo.returncode == 0, out[-3000:]
    assert re.search(r"API: http://127.0.0.1:\d+/docs", out)
    assert "the last 30 live" in out, "the fleet's cohort does not go on past today"
    assert "stopped with exit code" not in out, out[-3000:]
    stored = [int(n) for n in re.findall(r"hub: (\d+) readings stored", out)]
    assert stored and stored[-1] > 0, out[-3000:]
    assert "where to look:" in out and "mosquitto_sub" in out, out[:3000]
    # Live phase: from its first row on, the continuous oximeter's rows grow every few
    # seconds (a reading a second, five a message), for at least 15 s.
    # (Until the last growth: the demo stops at its duration while this test still samples.)
    streaming = [(t, n) for t, n in samples if n > 0]
    assert streaming, (samples, out[-3000:])
    last = next(t for t, n in streaming if n == streaming[-1][1])
    assert last - streaming[0][0] >= 15, (samples, out[-3000:])
    for t0, n0 in streaming:
        later = [n for t, n in streaming if t0 + 6 <= t <= t0 + 12]
        if later and t0 + 12 <= last:
            assert max(later) > n0, f"no continuous readings for 6 s after {t0:.0f} s: {samples}"
    assert streaming[-1][1] >= 10, samples
    assert re.search(r"continuous oximetry from sim-p\d+", out), out[-3000:]
    assert alerts >= 1, f"no limit alert opened; {out[-3000:]}"
