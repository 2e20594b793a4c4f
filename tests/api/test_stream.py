"""The live stream with real servers: two API processes' worth (two uvicorn servers, each
with its own LISTEN connection), users of two teams, alerts raised for both. Each user sees
only their own team's; a client that reconnects (to the other server) with Last-Event-ID
gets exactly the events it missed."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx2
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.users import Role
from tests.api.conftest import Team, World, api_config, auth, own_address, serving
from vitalvagt.db import alert_lifecycle
from vitalvagt.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


class Listener:
    """A stream client in a thread, keeping the events (id, patient, reason) it got."""

    def __init__(self, base: str, headers: dict[str, str], last_event_id: int | None = None):
        self.events: list[tuple[int, str, str]] = []
        self.stop = threading.Event()
        self.headers = dict(headers)
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = str(last_event_id)
        self.url = f"{base}/alerts/stream?keepalive_s=0.2"
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sse-listener")
        self.thread.start()
        assert self.connected.wait(10), "the stream did not open"

    def _run(self) -> None:
        import json

        with httpx2.stream("GET", self.url, headers=self.headers, timeout=10) as r:
            assert r.status_code == 200, r.read()
            event_id = None
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: ") and event_id is not None:
                    d = json.loads(line[6:])
                    self.events.append((event_id, d["patient_id"], d["reason"]))
                if self.stop.is_set():
                    return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def wait_for(self, n: int, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < n:
            assert time.monotonic() < deadline, f"got {self.events}, wanted {n} events"
            time.sleep(0.05)


def raise_alert(conn: psycopg.Connection, t: Team, rule: str) -> int:
    with conn.transaction():
        alert_id = conn.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, severity, message) VALUES"
            " (%s, %s, %s, 'yellow', 'x') RETURNING id",
            (t.patient, t.team, rule),
        ).fetchone()[0]
        alert_lifecycle.record(conn, alert_id, None, "open", by="engine", reason="opened")
    return alert_id


def test_each_user_gets_their_teams_events_and_a_reconnect_misses_nothing(
    stack: Stack, world: World, registry: psycopg.Connection
) -> None:
    a, b = world.a, world.b
    with TestClient(
        create_app(stack.database_url(), config=api_config()), client=own_address()
    ) as c:
        ha, hb = auth(c, a.users[Role.NURSE]), auth(c, b.users[Role.NURSE])
    with serving(stack) as one, serving(stack) as two:
        la, lb = Listener(one, ha), Listener(two, hb)
        try:
            a1 = raise_alert(registry, a, "r1")
            raise_alert(registry, b, "r1")
            alert_lifecycle.acknowledge(registry, a1, by="nurse", note=None)
            raise_alert(registry, b, "r2")
            la.wait_for(2)
            lb.wait_for(2)
            time.sleep(0.5)  # nothing more comes
            assert [(p, r) for _, p, r in la.events] == [
                (a.patient, "opened"),
                (a.patient, "acknowledged"),
            ]
            assert [(p, r) for _, p, r in lb.events] == [(b.patient, "opened")] * 2
        finally:
            la.close()
        # A is away: three changes of A's alerts (and one of B's) happen meanwhile
        last = la.events[-1][0]
        alert_lifecycle.snooze(
            registry, a1, by="nurse", note=None, until=datetime.now(UTC) + timedelta(hours=1)
        )
        a2 = raise_alert(registry, a, "r2")
        raise_alert(registry, b, "r3")
        alert_lifecycle.resolve(registry, a2, by="nurse", note="ok")
        missed = [
            r[0]
            for r in registry.execute(
                "SELECT t.id FROM alert_transitions t JOIN alerts x ON x.id = t.alert_id"
                " WHERE x.team_id = %s AND t.id > %s ORDER BY t.id",
                (a.team, last),
            )
        ]
        assert len(missed) == 3
        again = Listener(two, ha, last_event_id=last)  # to the other server
        try:
            again.wait_for(3)
            time.sleep(0.5)
            assert [e[0] for e in again.events] == missed  # exactly those: none lost, none twice
            assert [e[2] for e in again.events] == ["snoozed", "opened", "resolved"]
            lb.wait_for(3)
            assert {e[1] for e in lb.events} == {b.patient}
        finally:
            again.close()
            lb.close()


def test_the_stream_needs_a_token_and_a_well_formed_last_event_id(
    client: TestClient, world: World
) -> None:
    assert client.get("/alerts/stream").status_code == 401
    h = auth(client, world.a.users[Role.NURSE])
    r = client.get("/alerts/stream", headers={**h, "Last-Event-ID": "12; DROP"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
