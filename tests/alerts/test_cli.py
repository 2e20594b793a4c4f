"""`vitalvagt alerts ack|snooze|resolve`: the life cycle from the command line, each change
a transition and an audit entry; a stale change is refused with exit 1."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from tests.conftest import stack_env
from tests.ingest.conftest import add_home
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack


def _cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    argv_ = [sys.executable, "-m", "vitalvagt.cli", "alerts", *argv]
    return subprocess.run(argv_, env=stack_env(stack), capture_output=True, text=True, timeout=60)


def test_snooze_acknowledge_resolve_from_the_command_line(
    stack: Stack, registry: psycopg.Connection
) -> None:
    _, _, p = add_home(registry, stack, "alert-cli")
    (alert_id,) = registry.execute(
        "INSERT INTO alerts (patient_id, team_id, rule, severity, message)"
        " VALUES (%s, 'team-test', 'limit:pulse', 'red', 'Pulse 140') RETURNING id",
        (p,),
    ).fetchone()
    lifecycle.record(registry, alert_id, None, "open", by="engine", reason="opened")
    r = _cli(stack, "snooze", str(alert_id), "--by", "nurse-bo", "--minutes", "30",
             "--note", "calls back at ten")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert registry.execute(
        "SELECT state::text, snoozed_until > now() + interval '29 minutes' FROM alerts"
        " WHERE id = %s", (alert_id,)).fetchone() == ("snoozed", True)  # fmt: skip
    assert _cli(stack, "ack", str(alert_id), "--by", "nurse-bo").returncode == 0
    assert (
        _cli(stack, "resolve", str(alert_id), "--by", "nurse-bo", "--note", "fine").returncode == 0
    )
    again = _cli(stack, "ack", str(alert_id), "--by", "nurse-bo")
    assert again.returncode == 1 and "not in a state that allows ack" in again.stderr
    steps = [(t.from_state, t.to_state, t.by) for t in lifecycle.history(registry, alert_id)]
    assert steps == [(None, "open", "engine"), ("open", "snoozed", "nurse-bo"),
                     ("snoozed", "acknowledged", "nurse-bo"),
                     ("acknowledged", "resolved", "nurse-bo")]  # fmt: skip
    audited = registry.execute(
        "SELECT action FROM audit_log WHERE actor = 'nurse-bo' AND detail->>'alert' = %s"
        " ORDER BY id", (str(alert_id),)).fetchall()  # fmt: skip
    assert [a for (a,) in audited] == ["snooze_alert", "ack_alert", "resolve_alert"]
