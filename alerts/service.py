"""`vitalvagt alerts run`: evaluate patients when ingest NOTIFYs, and check missed readings.

Ingest sends a NOTIFY with the affected patients after each commit (vitalvagt/db/notify.py);
this service LISTENs and evaluates exactly those patients. Missed measurements are a
periodic apscheduler job. At start every active patient is evaluated once, so nothing that arrived
while the engine was down is missed.
"""

from __future__ import annotations

import logging
import threading

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler

from alerts.engine import check_missed, evaluate
from vitalvagt.db.connect import DatabaseUnavailable, Outage, connect
from vitalvagt.db.notify import CHANNEL, patients_of
from vitalvagt.db.notify import listen as listen_for_readings

log = logging.getLogger(__name__)


class AlertService:
    def __init__(self, database_url: str, *, missed_hours: float, missed_every_s: float) -> None:
        self.database_url = database_url
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
            scheduler.shutdown(wait=False)

    def _listen(self, outage: Outage) -> None:
        with connect(self.database_url) as listen, connect(self.database_url) as work:
            listen_for_readings(listen)
            outage.recovered()
            everyone = [r[0] for r in work.execute("SELECT id FROM patients WHERE active")]
            if everyone:
                evaluate(work, everyone)
            log.info("alerts: listening on %s", CHANNEL)
            while not self._stop.is_set():
                patients: set[str] = set()
                for note in listen.notifies(timeout=1.0, stop_after=100):
                    patients.update(patients_of(note.payload))
                if patients:
                    result = evaluate(work, sorted(patients))
                    if result.opened or result.updated:
                        log.info("alerts: %d opened, %d updated", result.opened, result.updated)
