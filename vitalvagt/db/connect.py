"""The one way the hub's services reach PostgreSQL and live through its outages.

``connect`` opens a connection with a connect time-out, in UTC, and turns a refusal into
``DatabaseUnavailable``. ``Outage`` is what a service keeps while the database is away:
since when, the last error (for logs and /healthz) and how long to wait before the next
attempt, from the ``DATABASE`` retry preset. Ingest and the alert engine use both; the API
uses psycopg_pool, whose pool reconnects by itself (api/app.py).
"""

from __future__ import annotations

import time

import psycopg

from vitalvagt.errors import VitalvagtError
from vitalvagt.retry import DATABASE, RetryPolicy

CONNECT_TIMEOUT_S = 10


class DatabaseUnavailable(VitalvagtError):
    """The database refused or dropped the connection; the work is retried, not lost."""


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection:
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
    conn.execute("SET timezone = 'UTC'")  # date_trunc and time_bucket in UTC, as stored
    if not autocommit:
        conn.commit()
    return conn


class Outage:
    """A database outage as a service lives through it. ``failed`` after each failed attempt
    (returns the wait before the next), ``recovered`` after the first success."""

    def __init__(self, policy: RetryPolicy = DATABASE) -> None:
        self._backoff = policy.backoff()
        self._since: float | None = None
        self.error = ""

    def failed(self, exc: BaseException) -> float:
        if self._since is None:
            self._since = time.monotonic()
        text = str(exc)
        self.error = text.splitlines()[0] if text else type(exc).__name__
        return self._backoff.next_delay()

    def recovered(self) -> None:
        self._since = None
        self._backoff.reset()

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def down_for_s(self) -> float:
        return time.monotonic() - self._since if self._since is not None else 0.0

    @property
    def attempts(self) -> int:
        return self._backoff.attempts
