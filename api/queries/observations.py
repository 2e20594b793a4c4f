"""SQL of the observation routes: a window of raw readings, a downsampled series
(``time_bucket``, min and max per bucket so that a spike is never averaged away, reliable
and unreliable readings apart), the readings a personal baseline is made of, and the
roll-ups. Every query joins the patient and takes the caller's scope."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from api.queries.patients import fetch
from api.security import SCOPE_SQL
from vitalvagt.quality import UNRELIABLE

_UNRELIABLE = sorted(f.value for f in UNRELIABLE)


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
) -> tuple[timedelta, list[dict], list[dict]]:
    """At most ``points`` buckets of equal width over [since, until): count, min, max, mean,
    of the reliable readings and, on the same grid, of the unreliable ones (a quality flag
    of vitalvagt.quality.UNRELIABLE). One scan: grouped by bucket and reliability."""
    width = max((until - since) / points, timedelta(seconds=1))
    rows = fetch(
        conn,
        "SELECT time_bucket(%(width)s, o.measured_at, %(since)s) AS bucket,"
        " NOT (o.flags && %(unreliable)s::text[]) AS reliable, count(*) AS n,"
        " min(o.value) AS min, max(o.value) AS max, avg(o.value) AS mean"
        " FROM observations o JOIN patients p ON p.id = o.patient_id"
        f" WHERE o.patient_id = %(patient)s AND {SCOPE_SQL} AND o.kind = %(kind)s"
        " AND o.measured_at >= %(since)s AND o.measured_at < %(until)s"
        " GROUP BY 1, 2 ORDER BY 1",
        {
            **scope,
            "patient": patient_id,
            "kind": kind,
            "since": since,
            "until": until,
            "width": width,
            "unreliable": _UNRELIABLE,
        },
    )
    split: dict[bool, list[dict]] = {True: [], False: []}
    for r in rows:
        split[r.pop("reliable")].append(r)
    return width, split[True], split[False]


def baseline_readings(
    conn: psycopg.Connection,
    scope: dict[str, Any],
    patient_id: str,
    *,
    kinds: list[str],
    since: datetime,
    until: datetime,
    weights_since: datetime,
) -> list[dict[str, Any]]:
    """The reliable readings of ``kinds`` in [since, until) in time order (epoch seconds),
    the weights from ``weights_since`` on: a weight's plausibility is judged by the weights
    before it (vitalvagt/baseline.py)."""
    return fetch(
        conn,
        "SELECT o.kind, floor(extract(epoch FROM o.measured_at))::bigint AS t, o.value"
        " FROM observations o JOIN patients p ON p.id = o.patient_id"
        f" WHERE o.patient_id = %(patient)s AND {SCOPE_SQL} AND o.kind = ANY(%(kinds)s)"
        " AND NOT (o.flags && %(unreliable)s::text[])"
        " AND o.measured_at >= %(weights_since)s AND o.measured_at < %(until)s"
        " AND (o.kind = 'weight' OR o.measured_at >= %(since)s)"
        " ORDER BY o.measured_at",
        {
            **scope,
            "patient": patient_id,
            "kinds": kinds,
            "since": since,
            "until": until,
            "weights_since": weights_since,
            "unreliable": _UNRELIABLE,
        },
    )


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
