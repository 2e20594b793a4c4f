"""Outgoing webhooks: every alert transition, to each endpoint of its team or municipality.

The outbox is a table (``webhook_outbox``, vitalvagt/db/migrations/0011_delivery.sql) filled
by a trigger on ``alert_transitions`` INSERT, in the transaction of the transition: whoever
changes an alert (the engine, the escalation sweep, the API), the notification is durable
with the change. ``WebhookDelivery.deliver`` (a scheduled job, alerts/delivery_jobs.py) sends
the rows:

- Body: JSON (``build_body``): the transition as recorded and the alert as it is at the first
  attempt (with its routing; an alert's first transition waits up to ``ROUTING_WAIT`` for the
  routing job). The body is frozen in the row before the first attempt: every retry sends the
  same bytes.
- Headers: ``Vitalvagt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with
  the endpoint's secret>``, ``Vitalvagt-Timestamp: <t>``, ``Idempotency-Key: <transition id>``
  (the same on every retry: a receiver drops what it has seen).
- Order: per (endpoint, alert), a transition is not sent while an earlier one is pending.
- Retries: any answer but 2xx (or none: refused, time-out) is retried with the ``WEBHOOK``
  back-off (vitalvagt/retry.py: 5 s doubling to 10 minutes, +-20 % jitter). A failure pushes
  back the endpoint's other pending rows too, so a receiver that is down is probed, not
  flooded; when it answers again everything follows in order.
- Give-up: a row still pending ``give_up`` after it was written (24 hours by default) becomes
  ``failed``, with its last status and error, and stays in the table for an operator; the
  alert's later rows are then sent.

Delivery is at least once: a crash between the receiver's answer and the commit sends that row
again, with the same idempotency key and body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from vitalvagt.retry import WEBHOOK, RetryPolicy

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Vitalvagt-Signature"
TIMESTAMP_HEADER = "Vitalvagt-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
GIVE_UP = timedelta(hours=24)
ROUTING_WAIT = timedelta(seconds=30)
TIMEOUT_S = 10.0
BATCH = 100
TOLERANCE_S = 300  # a receiver refuses a timestamp further from its clock than this

# (status or None, error text or None) for one POST
Sender = Callable[[str, bytes, dict[str, str], float], tuple[int | None, str | None]]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now_s: float,
           tolerance_s: float = TOLERANCE_S) -> bool:  # fmt: skip
    """What a receiver does (docs/operations.md has the stand-alone version)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), fields.get("v1", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer that is not 2xx: retried, never followed


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float
         ) -> tuple[int | None, str | None]:  # fmt: skip
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(65536)
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:  # refused, unknown host, TLS: the reason inside
        reason = exc.reason
        return None, f"{type(reason).__name__}: {reason}"[:500]
    except OSError as exc:  # a time-out or a reset while reading the answer
        return None, f"{type(exc).__name__}: {exc}"[:500]


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def build_body(conn: psycopg.Connection, transition_id: int) -> bytes:
    """The JSON body of one transition (compact, keys sorted: the bytes that are signed)."""
    tr = conn.execute(
        "SELECT t.id, t.alert_id, t.from_state, t.to_state, t.at, t.by, t.reason, t.note,"
        " a.patient_id, a.team_id, a.routed_team_id, a.rule, a.rule_version, a.category,"
        " a.severity, a.state::text, a.kind, a.value, a.measured_at, a.opened_at, a.message,"
        " a.escalation_level, a.routing, p.municipality_id FROM alert_transitions t"
        " JOIN alerts a ON a.id = t.alert_id JOIN patients p ON p.id = a.patient_id"
        " WHERE t.id = %s",
        (transition_id,),
    ).fetchone()
    (tid, aid, frm, to, at, by, reason, note, patient, team, routed, rule, version, category,
     severity, state, kind, value, measured_at, opened_at, message, level, routing,
     municipality) = tr  # fmt: skip
    body = {
        "event": "alert.transition",
        "idempotency_key": str(tid),
        "transition": {"id": tid, "alert_id": aid, "from_state": frm, "to_state": to,
                       "at": _iso(at), "by": by, "reason": reason, "note": note},
        "alert": {"id": aid, "patient_id": patient, "municipality_id": municipality,
                  "team_id": team, "routed_team_id": routed, "rule": rule,
                  "rule_version": version, "category": category, "severity": severity,
                  "state": state, "kind": kind, "value": value, "measured_at": _iso(measured_at),
                  "opened_at": _iso(opened_at), "message": message, "escalation_level": level,
                  "routing": routing},
    }  # fmt: skip
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class DeliveryResult:
    delivered: int = 0
    retried: int = 0
    failed: int = 0  # given up in this call


def delay_s(policy: RetryPolicy, attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt (with jitter)."""
    backoff = policy.backoff()
    delay = 0.0
    for _ in range(max(attempts, 1)):
        delay = backoff.next_delay()
    return delay


_HEADS = (
    "SELECT o.id FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id"
    " JOIN alerts a ON a.id = o.alert_id"
    " WHERE o.status = 'pending' AND e.active AND o.next_attempt_at <= %(now)s"
    " AND (o.body IS NOT NULL OR a.routing IS NOT NULL OR o.created_at <= %(routing_by)s)"
    " AND NOT EXISTS (SELECT 1 FROM webhook_outbox b WHERE b.endpoint_id = o.endpoint_id"
    "  AND b.alert_id = o.alert_id AND b.status = 'pending' AND b.transition_id < o.transition_id)"
    " AND NOT (o.endpoint_id = ANY(%(skip)s::bigint[]))"
    " ORDER BY o.id LIMIT %(limit)s"
)


class WebhookDelivery:
    """Sends the outbox. Stateless between calls: all it knows is in the table, so a new
    instance (after a restart) carries on exactly where the last one stopped."""

    def __init__(self, *, policy: RetryPolicy = WEBHOOK, give_up: timedelta = GIVE_UP,
                 timeout_s: float = TIMEOUT_S, batch: int = BATCH,
                 sender: Sender = post) -> None:  # fmt: skip
        self.policy = policy
        self.give_up = give_up
        self.timeout_s = timeout_s
        self.batch = batch
        self.sender = sender

    def deliver(self, conn: psycopg.Connection, *, now: datetime) -> DeliveryResult:
        result = DeliveryResult(failed=self._give_up(conn, now))
        failing: set[int] = set()  # endpoints that failed in this call: not tried again now
        sent = 0
        while sent < self.batch:
            heads = [r[0] for r in conn.execute(_HEADS, {
                "now": now, "routing_by": now - ROUTING_WAIT, "skip": sorted(failing),
                "limit": self.batch - sent}).fetchall()]  # fmt: skip
            if not heads:
                break
            for outbox_id in heads:
                outcome = self._one(conn, outbox_id, now, failing)
                if outcome is None:
                    continue
                sent += 1
                if outcome:
                    result.delivered += 1
                else:
                    result.retried += 1
        return result

    def _give_up(self, conn: psycopg.Connection, now: datetime) -> int:
        with conn.transaction():
            rows = conn.execute(
                "UPDATE webhook_outbox SET status = 'failed',"
                " last_error = coalesce(last_error, 'never attempted') || ' (given up)'"
                " WHERE status = 'pending' AND created_at <= %s RETURNING id, endpoint_id,"
                " transition_id",
                (now - self.give_up,),
            ).fetchall()
        for outbox_id, endpoint, transition in rows:
            log.error("webhook %d: transition %d given up after %s (outbox row %d)", endpoint,
                      transition, self.give_up, outbox_id)  # fmt: skip
        return len(rows)

    def _one(self, conn: psycopg.Connection, outbox_id: int, now: datetime,
             failing: set[int]) -> bool | None:  # fmt: skip
        """Send one row; True delivered, False to be retried, None skipped."""
        with conn.transaction():  # freeze the body before the first attempt
            row = conn.execute(
                "SELECT o.endpoint_id, o.transition_id, o.body, o.attempts, e.url, e.secret"
                " FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id"
                " WHERE o.id = %s AND o.status = 'pending' FOR UPDATE OF o SKIP LOCKED",
                (outbox_id,),
            ).fetchone()
            if row is None or row[0] in failing:
                return None
            endpoint, transition, body, attempts, url, secret = row
            if body is None:
                body = build_body(conn, transition).decode()
                conn.execute("UPDATE webhook_outbox SET body = %s WHERE id = %s",
                             (body, outbox_id))  # fmt: skip
        with conn.transaction():
            locked = conn.execute(
                "SELECT 1 FROM webhook_outbox WHERE id = %s AND status = 'pending'"
                " FOR UPDATE SKIP LOCKED", (outbox_id,)).fetchone()  # fmt: skip
            if locked is None:
                return None
            data = body.encode()
            timestamp = int(now.timestamp())
            headers = {"Content-Type": "application/json", "User-Agent": "vitalvagt-webhooks/1",
                       SIGNATURE_HEADER: signature_header(secret, timestamp, data),
                       TIMESTAMP_HEADER: str(timestamp), IDEMPOTENCY_HEADER: str(transition)}
            status, error = self.sender(url, data, headers, self.timeout_s)
            if status is not None and 200 <= status < 300:
                conn.execute(
                    "UPDATE webhook_outbox SET status = 'delivered', delivered_at = %s,"
                    " attempts = attempts + 1, last_attempt_at = %s, last_status = %s,"
                    " last_error = NULL WHERE id = %s",
                    (now, now, status, outbox_id),
                )
                return True
            retry_at = now + timedelta(seconds=delay_s(self.policy, attempts + 1))
            conn.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_attempt_at = %s,"
                " last_status = %s, last_error = %s, next_attempt_at = %s WHERE id = %s",
                (now, status, error or f"HTTP {status}", retry_at, outbox_id),
            )
            # The endpoint's other rows wait as long: a receiver that is down is probed.
            conn.execute(
                "UPDATE webhook_outbox SET next_attempt_at = greatest(next_attempt_at, %s)"
                " WHERE endpoint_id = %s AND status = 'pending'",
                (retry_at, endpoint),
            )
        failing.add(endpoint)
        log.warning("webhook %d: transition %d not delivered (%s), attempt %d; next at %s",
                    endpoint, transition, error or status, attempts + 1,
                    retry_at.isoformat())  # fmt: skip
        return False
