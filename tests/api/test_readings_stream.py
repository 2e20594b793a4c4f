"""The patient page's readings stream against a real API under uvicorn and the real
database: an event when ingest's notification names the patient (the alert engine's wake-up
call, vitalvagt/db/notify.py), none for another patient, and nothing outside the team."""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx2
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.users import Role
from tests.api.conftest import World, auth, serving
from vitalvagt.db.notify import notify_new_readings
from vitalvagt.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


class Watcher:
    """A client of one patient's readings stream in a thread: the events it got, in order."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue = queue.Queue()
        self.open = threading.Event()
        self.stop = threading.Event()
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self.thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        with httpx2.stream("GET", url, headers=headers, timeout=10) as r:
            self.status = r.status_code
            if r.status_code != 200:
                self.open.set()
                return
            event = None
            for line in r.iter_lines():
                if line.startswith(": watching"):
                    self.open.set()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.events.put((event, json.loads(line[6:])))
                if self.stop.is_set():
                    return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _notify(conn: psycopg.Connection, patients: list[str]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        notify_new_readings(cur, patients)


def test_a_patients_new_readings_wake_the_page_and_only_within_the_team(
    stack: Stack, world: World, registry: psycopg.Connection, client: TestClient
) -> None:
    a, b = world.a, world.b
    ha, hb = auth(client, a.users[Role.NURSE]), auth(client, b.users[Role.NURSE])
    with serving(stack) as base:
        url = f"{base}/patients/{a.patient}/readings/stream?keepalive_s=0.2"
        w = Watcher(url, ha)
        try:
            assert w.open.wait(10) and w.status == 200
            _notify(registry, [b.patient])  # another team's patient: not this page's
            with pytest.raises(queue.Empty):
                w.events.get(timeout=1.0)
            _notify(registry, [b.patient, a.patient])
            assert w.events.get(timeout=5) == ("readings", {"patient_id": a.patient})
            time.sleep(0.3)
            _notify(registry, [a.patient])  # within the 2 s gap: still told, once, after it
            _notify(registry, [a.patient])
            assert w.events.get(timeout=5) == ("readings", {"patient_id": a.patient})
            with pytest.raises(queue.Empty):
                w.events.get(timeout=2.5)
        finally:
            w.close()
        # team B's nurse: the same 404 as an unknown patient; no token: 401
        other = Watcher(url, hb)
        other.open.wait(10)
        unknown = Watcher(f"{base}/patients/no-such-patient/readings/stream", hb)
        unknown.open.wait(10)
        assert other.status == unknown.status == 404
        nobody = Watcher(url, {})
        nobody.open.wait(10)
        assert nobody.status == 401
    row = registry.execute(
        "SELECT count(*) FROM audit_log WHERE actor = %s AND action = 'watch_readings'"
        " AND patient_id = %s", (a.users[Role.NURSE], a.patient)).fetchone()  # fmt: skip
    assert row == (1,)
