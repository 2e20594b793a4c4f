"""Webhooks (issue 12, point 4) against a real HTTP receiver on 127.0.0.1: the signature
verified by the receiver, and a receiver that is down for a while gets every transition
exactly once and in order per alert after it comes back, across a restart of the job."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from alerts.routing import route_pending
from alerts.webhooks import WebhookDelivery, signature_header, verify
from tests.alerts.delivery_helpers import add_alert, add_patient, add_teams
from tests.conftest import free_port
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.retry import RetryPolicy
from vitalvagt.stack import Stack

SECRET = "s3cret-for-the-test-receiver"
FAST = RetryPolicy("test webhook", initial_s=1.0, max_s=4.0)


def receiver_verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written as a receiver would (docs/operations.md)."""
    fields = dict(p.split("=", 1) for p in headers["Vitalvagt-Signature"].split(","))
    if abs(time.time() - int(fields["t"])) > 300 or fields["t"] != headers["Vitalvagt-Timestamp"]:
        return False
    mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), fields["v1"])


class Receiver:
    """An HTTP receiver in a thread; ``stop``/``start`` take it down and up on one port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[dict] = []
        self.rejected = 0
        self.status = 200
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = receiver_verifies(SECRET, dict(self.headers), body)
                if not ok:
                    outer.rejected += 1
                elif outer.status == 200:
                    outer.got.append({"key": self.headers["Idempotency-Key"],
                                      **json.loads(body)})  # fmt: skip
                self.send_response(outer.status if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


def _endpoint(conn: psycopg.Connection, municipality: str, url: str) -> int:
    return conn.execute(
        "INSERT INTO webhook_endpoints (municipality_id, url, secret) VALUES (%s, %s, %s)"
        " RETURNING id", (municipality, url, SECRET)).fetchone()[0]  # fmt: skip


def _rows(conn: psycopg.Connection, endpoint: int) -> list[tuple]:
    return conn.execute(
        "SELECT transition_id, status, attempts, last_status, last_error FROM webhook_outbox"
        " WHERE endpoint_id = %s ORDER BY id", (endpoint,)).fetchall()  # fmt: skip


def test_signature_helpers() -> None:
    body = b'{"a":1}'
    header = signature_header(SECRET, 1_700_000_000, body)
    assert verify(SECRET, header, body, now_s=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now_s=1_700_000_100)  # body changed
    assert not verify("another-secret-entirely", header, body, now_s=1_700_000_100)
    assert not verify(SECRET, header, body, now_s=1_700_000_301)  # too old: a replay
    assert not verify(SECRET, "v1=abc", body, now_s=1_700_000_000)


@pytest.mark.stack
def test_each_transition_is_signed_and_delivered(
    stack: Stack, registry: psycopg.Connection, receiver: Receiver
) -> None:
    day, _, _ = add_teams(registry, "9104")
    pid = add_patient(registry, "p-webhook-one", "9104", day)
    endpoint = _endpoint(registry, "9104", receiver.url)
    a = add_alert(registry, pid, day, opened_at=datetime.now(UTC))
    delivery = WebhookDelivery(policy=FAST)
    now = datetime.now(UTC)
    assert delivery.deliver(registry, now=now).delivered == 0  # waits for the routing job
    route_pending(registry)
    assert delivery.deliver(registry, now=now).delivered == 1
    assert receiver.rejected == 0 and len(receiver.got) == 1
    got = receiver.got[0]
    tid = registry.execute("SELECT id FROM alert_transitions WHERE alert_id = %s",
                           (a,)).fetchone()[0]  # fmt: skip
    assert got["key"] == got["idempotency_key"] == str(tid)
    assert got["event"] == "alert.transition"
    assert got["transition"]["reason"] == "opened" and got["transition"]["to_state"] == "open"
    assert got["alert"]["patient_id"] == pid and got["alert"]["severity"] == "red"
    assert got["alert"]["routing"]["team"]["id"] in (day, "9104-night", "9104-weekend")
    assert _rows(registry, endpoint) == [(tid, "delivered", 1, 200, None)]
    # A receiver that rejects (a wrong secret here): retried, never marked delivered
    registry.execute("UPDATE webhook_endpoints SET secret = 'not-the-receivers-secret' WHERE id"
                     " = %s", (endpoint,))  # fmt: skip
    lifecycle.acknowledge(registry, a, by="nurse-anne", note="on my way")
    now = datetime.now(UTC)
    assert delivery.deliver(registry, now=now).retried == 1
    assert receiver.rejected == 1 and _rows(registry, endpoint)[-1][1:4] == ("pending", 1, 401)
    registry.execute("UPDATE webhook_endpoints SET active = false WHERE id = %s", (endpoint,))


@pytest.mark.stack
def test_a_receiver_down_gets_everything_once_in_order_across_a_restart(
    stack: Stack, registry: psycopg.Connection, receiver: Receiver
) -> None:
    day, _, _ = add_teams(registry, "9105")
    p1 = add_patient(registry, "p-webhook-a", "9105", day)
    p2 = add_patient(registry, "p-webhook-b", "9105", day, group="heart_failure")
    endpoint = _endpoint(registry, "9105", receiver.url)
    receiver.stop()  # down from the start
    a = add_alert(registry, p1, day, opened_at=datetime.now(UTC))
    b = add_alert(registry, p2, day, rule="weight:gain3d", severity="yellow", kind="weight",
                  value=84.2, opened_at=datetime.now(UTC))  # fmt: skip
    route_pending(registry)
    clock = datetime.now(UTC) + timedelta(minutes=1)
    first = WebhookDelivery(policy=FAST)
    lifecycle.acknowledge(registry, a, by="nurse-anne", note="calling")
    for _ in range(4):  # the job runs while the receiver is down; more transitions come
        r = first.deliver(registry, now=clock)
        assert r.delivered == 0
        clock += timedelta(seconds=5)
    lifecycle.snooze(registry, b, by="nurse-bo", until=clock + timedelta(hours=1), note=None)
    lifecycle.resolve(registry, a, by="nurse-anne", note="seen, fine")
    rows = _rows(registry, endpoint)
    assert {s for _, s, *_ in rows} == {"pending"} and rows[0][2] >= 2  # the head was retried
    # The "restart": a new delivery job on a new connection; the receiver comes back
    receiver.start()
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        second = WebhookDelivery(policy=FAST)
        for _ in range(20):
            clock += timedelta(seconds=5)
            second.deliver(conn, now=clock)
            if all(s == "delivered" for _, s, *_ in _rows(conn, endpoint)):
                break
    expected = registry.execute(
        "SELECT alert_id, id FROM alert_transitions WHERE alert_id = ANY(%s) ORDER BY id",
        ([a, b],)).fetchall()  # fmt: skip
    assert len(expected) == 5  # a: opened, acknowledged, resolved; b: opened, snoozed
    got = [(g["transition"]["alert_id"], g["transition"]["id"]) for g in receiver.got]
    assert sorted(got) == sorted(expected)  # every transition, exactly once
    for alert_id in (a, b):  # in order per alert
        mine = [t for x, t in got if x == alert_id]
        assert mine == sorted(mine)
    assert [g["transition"]["reason"] for g in receiver.got if g["transition"]["alert_id"] == a] \
        == ["opened", "acknowledged", "resolved"]
    assert receiver.rejected == 0
    registry.execute("UPDATE webhook_endpoints SET active = false WHERE id = %s", (endpoint,))


@pytest.mark.stack
def test_given_up_after_the_documented_time_and_then_visible_as_failed(
    stack: Stack, registry: psycopg.Connection
) -> None:
    day, _, _ = add_teams(registry, "9106")
    pid = add_patient(registry, "p-webhook-gone", "9106", day)
    endpoint = _endpoint(registry, "9106", f"http://127.0.0.1:{free_port()}/nobody")
    a = add_alert(registry, pid, day, opened_at=datetime.now(UTC))
    route_pending(registry)
    lifecycle.acknowledge(registry, a, by="nurse-anne", note=None)
    delivery = WebhookDelivery(policy=FAST)  # gives up after 24 hours, the default
    now = datetime.now(UTC)
    assert delivery.deliver(registry, now=now).retried == 1
    delivery.deliver(registry, now=now + timedelta(hours=23, minutes=59))
    assert [r[1] for r in _rows(registry, endpoint)] == ["pending", "pending"]
    delivery.deliver(registry, now=now + timedelta(hours=24, seconds=5))
    rows = _rows(registry, endpoint)
    assert [r[1] for r in rows] == ["failed", "failed"]
    assert "ConnectionRefusedError" in rows[0][4] and rows[0][4].endswith("(given up)")
    assert rows[1][4] == "never attempted (given up)"  # it waited behind the first
    registry.execute("UPDATE webhook_endpoints SET active = false WHERE id = %s", (endpoint,))


@pytest.mark.stack
def test_the_team_an_alert_is_routed_to_hears_of_its_opening(
    stack: Stack, registry: psycopg.Connection, receiver: Receiver
) -> None:
    """The alert opens (its first transition) before the routing job names the team answering
    now. The night team's endpoint then got the acknowledgement of an alert it had never been
    told had opened; now routing queues it the transitions so far, in order."""
    day, night, _ = add_teams(registry, "9107")
    pid = add_patient(registry, "p-webhook-night", "9107", day)
    endpoint = registry.execute(
        "INSERT INTO webhook_endpoints (team_id, url, secret) VALUES (%s, %s, %s) RETURNING id",
        (night, receiver.url, SECRET),
    ).fetchone()[0]
    # a Wednesday at 22:30 in Copenhagen: the day team's patient, the night team's hours
    opened = datetime(2026, 11, 25, 21, 30, tzinfo=UTC)
    a = add_alert(registry, pid, day, opened_at=opened)
    assert _rows(registry, endpoint) == []  # not the night team's alert yet
    route_pending(registry)
    routed = registry.execute("SELECT routed_team_id FROM alerts WHERE id = %s", (a,)).fetchone()
    assert routed == (night,)
    lifecycle.acknowledge(registry, a, by="nurse-nat", note="kører nu")
    delivery = WebhookDelivery(policy=FAST)
    for _ in range(3):  # one per (endpoint, alert) and take: the acknowledgement waits its turn
        delivery.deliver(registry, now=datetime.now(UTC))
    assert [g["transition"]["reason"] for g in receiver.got] == ["opened", "acknowledged"]
    assert receiver.got[0]["alert"]["routing"]["team"]["id"] == night
    assert [r[1] for r in _rows(registry, endpoint)] == ["delivered", "delivered"]
    route_pending(registry)  # nothing new to route: nothing queued twice
    assert len(_rows(registry, endpoint)) == 2
    registry.execute("UPDATE webhook_endpoints SET active = false WHERE id = %s", (endpoint,))
