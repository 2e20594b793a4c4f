"""`vitalvagt demo` runs on after the accelerated history (issue 10, the demo's live phase):
the fleet's cohort goes on past today, so the fleet does not end when the history is
replayed, and the demo ends with exit 0 at its duration (as on Ctrl-C), not with 1 after a
minute. Against a real stack of its own: the demo's ingest keeps a persistent session on the
shared subscription after it stops (as in service, so that readings wait for its next run),
and on the session's broker that session would take a share of every later test's readings."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import free_port, stack_env, temporary_stack
from vitalvagt.demo import DEMO_PASSWORD, DEMO_USER

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _counts(database_url: str) -> tuple[int, int]:
    """Continuous-oximetry SpO2 rows stored (gateway-stamped, as PLX Continuous is) and the
    clinical alerts opened so far."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM observations WHERE kind = 'spo2'"
            "  AND time_source = 'gateway' AND 'device_time_missing' = ANY(flags)),"
            " (SELECT count(*) FROM alerts WHERE category = 'clinical')"
        ).fetchone()
    return row[0], row[1]


def _alerts_via_api(port: int) -> int:
    """The active alerts the demo's nurse sees, logging in as the printed log-in says."""
    api = f"http://127.0.0.1:{port}"
    form = urllib.parse.urlencode({"username": DEMO_USER, "password": DEMO_PASSWORD}).encode()
    with urllib.request.urlopen(f"{api}/auth/token", data=form, timeout=5) as answer:
        token = json.load(answer)["access_token"]
    ask = urllib.request.Request(f"{api}/alerts", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(ask, timeout=5) as answer:
        return len(json.load(answer))


def _alerts_in_the_web_view(port: int) -> int:
    """Log in to the web view as the demo's nurse, in Chromium: the alert rows of her list."""
    from tests.web.conftest import ARTIFACTS, SIZES, Browser, require_browser

    require_browser()
    b = Browser(f"http://127.0.0.1:{port}", SIZES["landscape"], ARTIFACTS / "web" / "demo")
    try:
        b.login(DEMO_USER, DEMO_PASSWORD)
        rows = b.wait("document.querySelectorAll('tr.alert-row').length", 15, "alert rows")
        b.screenshot("demo-triage-list")
        return int(rows)
    finally:
        b.quit()


def test_the_demo_goes_on_after_the_history_and_ends_with_exit_0() -> None:
    # The demo's own cohort (seed and 20 homes, 14 days of history), at a speed that replays
    # the history in seconds; the demo then runs on live until its duration, while this test
    # watches the database: the continuous oximeter's rows keep growing, and the cohort's
    # deteriorations in the last two days of the history have opened limit alerts.
    api_port = free_port()
    argv = [sys.executable, "-m", "vitalvagt.cli", "demo", "--speed", "1e6",
            "--duration-s", "40", "--api-port", str(api_port)]  # fmt: skip
    samples: list[tuple[float, int]] = []  # (seconds since start, continuous rows)
    seen_by_nurse: list[int] = []  # alerts the demo's log-in sees in the API, when it can
    api_errors: list[str] = []
    web_rows: int | None = None  # the alert rows the nurse sees in the web view
    with temporary_stack("vv-test-demo-") as stack:
        url = stack.database_url()
        began = time.monotonic()
        with subprocess.Popen(argv, env=stack_env(stack), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as demo:  # fmt: skip
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
            reader.start()
            try:
                while demo.poll() is None and time.monotonic() - began < 120:
                    time.sleep(2)
                    with contextlib.suppress(Exception):  # the stack may still be starting
                        samples.append((time.monotonic() - began, _counts(url)[0]))
                    # Only once the log-in is printed: failed log-ins before the user exists
                    # would (rightly) trip the API's rate limit.
                    if any("demo log-in:" in line for line in list(lines)):
                        try:
                            seen_by_nurse.append(_alerts_via_api(api_port))
                        except OSError as exc:  # the API may still be starting
                            api_errors.append(repr(exc))
                        if web_rows is None and seen_by_nurse and max(seen_by_nurse) >= 1:
                            web_rows = _alerts_in_the_web_view(api_port)
                demo.wait(timeout=60)
                reader.join(10)
                out = "".join(lines)
            finally:
                if demo.poll() is None:
                    demo.kill()  # its components die with it (the demo's PR_SET_PDEATHSIG)
                reader.join(30)
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
    assert alerts >= 1, f"no clinical alert opened; {out[-3000:]}"
    # The demo's log-in is printed and works: the nurse sees the team's alerts in the API.
    assert f"demo log-in: user {DEMO_USER}, password {DEMO_PASSWORD}" in out, out[-3000:]
    assert seen_by_nurse and max(seen_by_nurse) >= 1, (seen_by_nurse, api_errors, out[-3000:])
    # ... and in the web view whose address the demo prints, in Chromium (issue 14)
    assert re.search(rf"the web view: +http://127.0.0.1:{api_port}/web/", out), out[:3000]
    assert web_rows is not None and web_rows >= 1, web_rows
