"""The delivery jobs, scheduled in one place: routing, escalation and webhooks (issue 12).

``register_jobs(scheduler, database_url)`` adds two apscheduler interval jobs to the alert
service's scheduler and returns the callable that removes them again (and closes their
connections):

- ``vv-route-escalate`` every ``route_every_s`` (1 s): routes the alerts that have none yet
  (alerts/routing.py: an alert is routed a second or two after it opens), then runs the
  escalation sweep (alerts/escalation.py) at the current time;
- ``vv-webhooks`` every ``webhooks_every_s`` (1 s): sends the webhook outbox
  (alerts/webhooks.py);
- ``vv-patient-requests`` every ``requests_every_s`` (5 s): "measure again" and reminders to
  the patient's tablet (alerts/patient_requests.py).

All three read everything they need from the database on each run: a restart loses and doubles
nothing. A database outage skips runs (logged once per outage); the next run reconnects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import psycopg
from apscheduler.schedulers.base import BaseScheduler

from alerts.escalation import sweep
from alerts.patient_requests import PatientRequests
from alerts.routing import route_pending
from alerts.webhooks import WebhookDelivery
from vitalvagt.db.connect import DatabaseUnavailable, Outage, connect
from vitalvagt.routing import LOCAL

log = logging.getLogger(__name__)

ROUTE_EVERY_S = 1.0
WEBHOOKS_EVERY_S = 1.0
REQUESTS_EVERY_S = 5.0


class _DatabaseJob:
    """A job's own connection, opened on first use and after a failure."""

    def __init__(self, name: str, database_url: str,
                 work: Callable[[psycopg.Connection, datetime], None]) -> None:  # fmt: skip
        self.name = name
        self.database_url = database_url
        self.work = work
        self._conn: psycopg.Connection | None = None
        self._outage = Outage()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.database_url)
                self.work(self._conn, datetime.now(UTC))
                if self._outage.down:
                    log.info("%s: database back", self.name)
                self._outage.recovered()
            except (DatabaseUnavailable, psycopg.OperationalError) as exc:
                if not self._outage.down:
                    log.warning("%s: database unavailable, runs skipped: %s", self.name,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self._outage.failed(exc)
                self.close_locked()
            except Exception:  # the job carries on at its next run (a supervisor's rule)
                log.exception("%s: run failed", self.name)
                self.close_locked()

    def close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


def register_jobs(
    scheduler: BaseScheduler,
    database_url: str,
    *,
    zone: ZoneInfo = LOCAL,
    route_every_s: float = ROUTE_EVERY_S,
    webhooks_every_s: float = WEBHOOKS_EVERY_S,
    webhooks: WebhookDelivery | None = None,
    requests_every_s: float = REQUESTS_EVERY_S,
    patient_requests: PatientRequests | None = None,
) -> Callable[[], None]:
    """Add the routing/escalation and webhook jobs; returns the callable that removes them."""
    delivery = webhooks or WebhookDelivery()

    def route_and_escalate(conn: psycopg.Connection, now: datetime) -> None:
        routed = route_pending(conn, zone=zone)
        steps = sweep(conn, now=now)
        if routed or steps:
            log.info("delivery: %d alerts routed, %d escalation steps", routed, len(steps))

    def send(conn: psycopg.Connection, now: datetime) -> None:
        r = delivery.deliver(conn, now=now)
        if r.delivered or r.retried or r.failed:
            log.info("webhooks: %d delivered, %d to retry, %d given up", r.delivered, r.retried,
                     r.failed)  # fmt: skip

    requests = patient_requests or PatientRequests.from_settings(zone=zone)
    jobs = [_DatabaseJob("vv-route-escalate", database_url, route_and_escalate),
            _DatabaseJob("vv-webhooks", database_url, send),
            _DatabaseJob("vv-patient-requests", database_url, requests.run)]  # fmt: skip
    everies = (route_every_s, webhooks_every_s, requests_every_s)
    for job, every in zip(jobs, everies, strict=True):
        scheduler.add_job(job, "interval", seconds=every, id=job.name, max_instances=1,
                          coalesce=True, replace_existing=True)  # fmt: skip

    def unregister() -> None:
        for job in jobs:
            try:
                scheduler.remove_job(job.name)
            except LookupError:  # apscheduler's JobLookupError; the scheduler already shut down
                pass
            job.close()
        requests.close()

    return unregister
