"""`vitalvagt alerts run`: take ingest's units of work as they come, and run the sweeps.

Ingest records a unit of work with the readings it stores and sends a NOTIFY after the
commit (vitalvagt/db/notify.py); the NOTIFY only wakes this service, which then takes work
until none is left (alerts/engine.py). It also looks for work every ``POLL_S`` without one,
and at start it first drains what piled up while it was down: a lost NOTIFY delays an alert
by at most ``POLL_S``, never loses it. The sweeps are apscheduler jobs: missed measurements
and snoozes that have run out.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler

from alerts.delivery_jobs import register_jobs
from alerts.engine import WorkResult, check_missed, drain
from alerts.ruleset import FULL, RuleSet
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.db.connect import DatabaseUnavailable, Outage, connect
from vitalvagt.db.notify import CHANNEL
from vitalvagt.db.notify import listen as listen_for_readings

log = logging.getLogger(__name__)

POLL_S = 1.0  # look for work this often even without a NOTIFY
SNOOZE_SWEEP_S = 15.0  # a snooze ends at most this late


class AlertService:
    def __init__(
        self,
        database_url: str,
        *,
        missed_hours: float,
        missed_every_s: float,
        ruleset: RuleSet = FULL,
    ) -> None:
        self.database_url = database_url
        self.ruleset = ruleset
        self.missed_hours = missed_hours
        self.missed_every_s = missed_every_s
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _missed(self) -> None:
        try:
            with connect(self.database_url, autocommit=False) as conn:
                n = check_missed(conn, hours=self.missed_hours)
        except (DatabaseUnavailable, psycopg.OperationalError) as exc:
            # The next run comes at its interval; the listener's loop waits out the outage.
            log.warning("alerts: missed-measurement check skipped, database unavailable: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
            return
        if n:
            log.warning("alerts: %d missed-measurement alerts opened", n)

    def run(self) -> None:
        scheduler = BackgroundScheduler(timezone="UTC")
        scheduler.add_job(self._missed, "interval", seconds=self.missed_every_s, id="missed",
                          max_instances=1, coalesce=True)  # fmt: skip
        scheduler.add_job(self._snoozes, "interval", seconds=SNOOZE_SWEEP_S, id="snoozes",
                          max_instances=1, coalesce=True)  # fmt: skip
        # Routing, escalation and the webhooks' outbox (alerts/delivery_jobs.py).
        unregister_delivery = register_jobs(scheduler, self.database_url)
        scheduler.start()
        outage = Outage()
        try:
            while not self._stop.is_set():
                try:
                    self._listen(outage)
                except (DatabaseUnavailable, psycopg.OperationalError) as exc:
                    delay = outage.failed(exc)
                    log.warning("alerts: database unavailable (%s); retrying in %.1fs",
                                outage.error, delay)  # fmt: skip
                    self._stop.wait(delay)
        finally:
            unregister_delivery()
            scheduler.shutdown(wait=False)

    def _snoozes(self) -> None:
        try:
            with connect(self.database_url) as conn:
                n = lifecycle.end_snoozes(conn, now=datetime.now(UTC))
        except (DatabaseUnavailable, psycopg.OperationalError):
            return  # the next sweep comes; the listener's loop logs the outage
        if n:
            log.info("alerts: %d snoozed alerts open again", n)

    def _listen(self, outage: Outage) -> None:
        with connect(self.database_url) as listen, connect(self.database_url) as work:
            listen_for_readings(listen)
            outage.recovered()
            self._report(drain(work, ruleset=self.ruleset), "caught up")
            log.info("alerts: listening on %s", CHANNEL)
            while not self._stop.is_set():
                # Woken by a NOTIFY, or every POLL_S: the work rows are the record.
                for _ in listen.notifies(timeout=POLL_S, stop_after=1):
                    pass
                self._report(drain(work, ruleset=self.ruleset), "evaluated")

    @staticmethod
    def _report(result: WorkResult, what: str) -> None:
        if result.units:
            # A line per change; plain evaluations (a reading a second from a continuous
            # oximeter) only at DEBUG.
            changed = result.opened or result.updated or result.notices or result.cleared
            level = logging.INFO if changed else logging.DEBUG
            log.log(level, "alerts: %s %d readings (%d units): %d opened, %d updated,"
                    " %d notices, %d cleared", what, result.readings, result.units,
                    result.opened, result.updated, result.notices, result.cleared)  # fmt: skip
