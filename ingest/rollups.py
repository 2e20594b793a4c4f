"""Retention and roll-ups, as apscheduler jobs (this TimescaleDB build has no policies).

Ingest marks the (patient, kind, hour) buckets each batch touched in ``rollup_dirty`` in the
same transaction; ``refresh_rollups`` recomputes exactly those hours from raw rows, and the
days they belong to from the hours. Long trends read ``observation_rollups``; they outlive
the raw chunks that retention drops. Hours older than the retention horizon are not
recomputed: their raw rows may already be gone and the roll-up is the record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler

from ingest.bounds import DeadLetterLimits, expire_dead_letters

log = logging.getLogger(__name__)

LOCK_KEY = 0x7676_726F  # one roll-up refresh at a time across ingest processes


@dataclass(frozen=True)
class RollupResult:
    hours: int
    days: int


def refresh_rollups(conn: psycopg.Connection, *, retention_days: int) -> RollupResult:
    with conn.transaction():
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            return RollupResult(0, 0)
        conn.execute("SET LOCAL timezone = 'UTC'")
        conn.execute(
            "CREATE TEMP TABLE dirty (patient_id text, kind text, hour timestamptz) ON COMMIT DROP"
        )
        # A separate statement from the recompute below, so the recompute sees every batch
        # that committed before its dirty mark was taken.
        conn.execute(
            "WITH taken AS (DELETE FROM rollup_dirty RETURNING patient_id, kind, hour)"
            " INSERT INTO dirty SELECT * FROM taken"
            " WHERE hour >= now() - make_interval(days => %s)",
            (retention_days,),
        )
        hours = conn.execute(
            "INSERT INTO observation_rollups (resolution, patient_id, kind, bucket, n, min_value,"
            " max_value, sum_value, last_value, last_at, updated_at)"
            " SELECT 'hour', d.patient_id, d.kind, d.hour, count(*), min(o.value), max(o.value),"
            " sum(o.value), last(o.value, o.measured_at), max(o.measured_at), now()"
            " FROM dirty d JOIN observations o ON o.patient_id = d.patient_id AND o.kind = d.kind"
            " AND o.measured_at >= d.hour AND o.measured_at < d.hour + interval '1 hour'"
            " GROUP BY d.patient_id, d.kind, d.hour"
            " ON CONFLICT (resolution, patient_id, kind, bucket) DO UPDATE SET n = EXCLUDED.n,"
            " min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,"
            " sum_value = EXCLUDED.sum_value, last_value = EXCLUDED.last_value,"
            " last_at = EXCLUDED.last_at, updated_at = now()"
        ).rowcount
        days = conn.execute(
            "INSERT INTO observation_rollups (resolution, patient_id, kind, bucket, n, min_value,"
            " max_value, sum_value, last_value, last_at, updated_at)"
            " SELECT 'day', r.patient_id, r.kind, date_trunc('day', r.bucket), sum(r.n),"
            " min(r.min_value), max(r.max_value), sum(r.sum_value), last(r.last_value, r.last_at),"
            " max(r.last_at), now()"
            " FROM observation_rollups r"
            " JOIN (SELECT DISTINCT patient_id, kind, date_trunc('day', hour) AS day FROM dirty) d"
            " ON r.patient_id = d.patient_id AND r.kind = d.kind AND r.resolution = 'hour'"
            " AND r.bucket >= d.day AND r.bucket < d.day + interval '1 day'"
            " GROUP BY r.patient_id, r.kind, date_trunc('day', r.bucket)"
            " ON CONFLICT (resolution, patient_id, kind, bucket) DO UPDATE SET n = EXCLUDED.n,"
            " min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,"
            " sum_value = EXCLUDED.sum_value, last_value = EXCLUDED.last_value,"
            " last_at = EXCLUDED.last_at, updated_at = now()"
        ).rowcount
    if hours:
        log.info("roll-ups: refreshed %d hours and %d days", hours, days)
    return RollupResult(hours, days)


def drop_old_chunks(conn: psycopg.Connection, *, retention_days: int) -> int:
    """Drop raw observation chunks wholly older than the retention; roll-ups stay."""
    with conn.transaction():
        dropped = conn.execute(
            "SELECT drop_chunks('observations', older_than => now() - make_interval(days => %s))",
            (retention_days,),
        ).fetchall()
    if dropped:
        log.info(
            "retention: dropped %d raw chunks older than %d days", len(dropped), retention_days
        )
    return len(dropped)


def start_jobs(
    database_url: str,
    *,
    retention_days: int,
    rollup_interval_s: float,
    dead_letter_retention_days: int = DeadLetterLimits().retention_days,
) -> BackgroundScheduler:
    """The periodic jobs of ingest, in one scheduler (design rule 5)."""

    def rollups() -> None:
        with psycopg.connect(database_url) as conn:
            refresh_rollups(conn, retention_days=retention_days)

    def retention() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            drop_old_chunks(conn, retention_days=retention_days)
            expired = expire_dead_letters(conn, retention_days=dead_letter_retention_days)
            if expired:
                log.info("retention: deleted %d dead letters older than %d days", expired,
                         dead_letter_retention_days)  # fmt: skip

    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        rollups, "interval", seconds=rollup_interval_s, id="rollups", max_instances=1, coalesce=True
    )
    scheduler.add_job(
        retention, "interval", hours=6, id="retention", max_instances=1, coalesce=True
    )
    scheduler.start()
    return scheduler
