"""SQL of the observation routes: a window of raw readings, a downsampled series
(``time_bucket``, min and max per bucket so that a spike is never averaged away) and the
roll-ups. Every query joins the patient and takes the caller's scope."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from api.queries.patients import fetch
from api.security import SCOPE_SQL


def window(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    *,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT o.id, o.kind, o.value, o.unit, o.measured_at, o.received_at, o.time_source,"
        " o.flags, o.reading_id, o.device_address FROM observations o"
        " JOIN patients p ON p.id = o.patient_id"
        f" WHERE o.patient_id = %(patient)s AND {SCOPE_SQL}"
        " AND (%(kind)s::text IS NULL OR o.kind = %(kind)s)"
        " AND (%(since)s::timestamptz IS NULL OR o.measured_at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR o.measured_at < %(until)s)"
        " ORDER BY o.measured_at DESC LIMIT %(limit)s",
        {
            **scope,
            "patient": patient_id,
            "kind": kind,
            "since": since,
            "until": until,
            "limit": limit,
        },
    )


def series(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    *,
    kind: str,
    since: datetime,
    until: datetime,
    points: int,
) -> tuple[timedelta, list[dict]]:
    """At most ``points`` buckets of equal width over [since, until): count, min, max, mean."""
    width = max((until - since) / points, timedelta(seconds=1))
    rows = fetch(
        conn,
        "SELECT time_bucket(%(width)s, o.measured_at, %(since)s) AS bucket, count(*) AS n,"
        " min(o.value) AS min, max(o.value) AS max, avg(o.value) AS mean"
        " FROM observations o JOIN patients p ON p.id = o.patient_id"
        f" WHERE o.patient_id = %(patient)s AND {SCOPE_SQL} AND o.kind = %(kind)s"
        " AND o.measured_at >= %(since)s AND o.measured_at < %(until)s"
        " GROUP BY 1 ORDER BY 1",
        {
            **scope,
            "patient": patient_id,
            "kind": kind,
            "since": since,
            "until": until,
            "width": width,
        },
    )
    return width, rows


def rollups(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    *,
    kind: str,
    resolution: str,
    since: datetime | None,
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT r.bucket, r.n, r.min_value, r.max_value, r.mean_value, r.last_value FROM"
        " observation_rollups r JOIN patients p ON p.id = r.patient_id"
        f" WHERE r.patient_id = %(patient)s AND {SCOPE_SQL} AND r.kind = %(kind)s"
        " AND r.resolution = %(resolution)s"
        " AND (%(since)s::timestamptz IS NULL OR r.bucket >= %(since)s) ORDER BY r.bucket",
        {**scope, "patient": patient_id, "kind": kind, "resolution": resolution, "since": since},
    )


def for_fhir(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    *,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The readings of a window with what the FHIR export needs (device and gateway)."""
    return fetch(
        conn,
        "SELECT o.id, o.kind, o.value, o.unit, o.measured_at, o.flags, o.reading_id,"
        " o.device_address, o.device_model, o.device_serial, o.gateway_id"
        " FROM observations o JOIN patients p ON p.id = o.patient_id"
        f" WHERE o.patient_id = %(patient)s AND {SCOPE_SQL}"
        " AND (%(kind)s::text IS NULL OR o.kind = %(kind)s)"
        " AND (%(since)s::timestamptz IS NULL OR o.measured_at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR o.measured_at < %(until)s)"
        " ORDER BY o.measured_at DESC, o.kind LIMIT %(limit)s",
        {
            **scope,
            "patient": patient_id,
            "kind": kind,
            "since": since,
            "until": until,
            "limit": limit,
        },
    )
