"""A patient's readings: a raw window, a downsampled series (``time_bucket``, min and max
per bucket) and the hourly/daily roll-ups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.audit import audit
from api.params import PatientId, check_window
from api.queries import observations as q
from api.routes.patients import scoped_patient
from api.security import Conn, CurrentUser
from vitalvagt.kinds import KIND_SPECS, Kind

router = APIRouter(prefix="/patients", tags=["observations"])


class Observation(BaseModel):
    id: UUID
    kind: str
    value: float
    unit: str
    measured_at: datetime
    received_at: datetime
    time_source: str
    flags: list[str]
    reading_id: UUID | None
    device_address: str


class Bucket(BaseModel):
    bucket: datetime
    n: int
    min: float
    max: float
    mean: float


class Series(BaseModel):
    kind: str
    unit: str
    since: datetime
    until: datetime
    bucket_s: float
    buckets: list[Bucket]


class RollupBucket(BaseModel):
    bucket: datetime
    n: int
    min_value: float
    max_value: float
    mean_value: float
    last_value: float


class Trend(BaseModel):
    kind: str
    unit: str
    resolution: str
    buckets: list[RollupBucket]


@router.get("/{patient_id}/observations")
def observations(
    patient_id: PatientId,
    conn: Conn,
    user: CurrentUser,
    kind: Kind | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> list[Observation]:
    """A patient's readings in a time window [since, until), newest first."""
    check_window(since, until)
    scoped_patient(conn, user, patient_id)
    rows = q.window(conn, user.scope, patient_id, kind=kind, since=since, until=until, limit=limit)
    audit(conn, user, "read_observations", patient_id, kind=kind, rows=len(rows))
    return [Observation(**r) for r in rows]


@router.get("/{patient_id}/series")
def series(
    patient_id: PatientId,
    conn: Conn,
    user: CurrentUser,
    kind: Kind,
    since: datetime | None = None,
    until: datetime | None = None,
    points: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> Series:
    """One kind over [since, until) (default: the last 7 days) in at most ``points`` buckets
    of equal width, with count, min, max and mean per bucket (empty buckets left out)."""
    check_window(since, until)
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=7)
    check_window(since, until)
    scoped_patient(conn, user, patient_id)
    width, rows = q.series(
        conn, user.scope, patient_id, kind=kind.value, since=since, until=until, points=points
    )
    audit(conn, user, "read_series", patient_id, kind=kind.value, buckets=len(rows))
    return Series(
        kind=kind.value,
        unit=KIND_SPECS[kind].unit,
        since=since,
        until=until,
        bucket_s=width.total_seconds(),
        buckets=[Bucket(**r) for r in rows],
    )


@router.get("/{patient_id}/trend")
def trend(
    patient_id: PatientId,
    conn: Conn,
    user: CurrentUser,
    kind: Kind,
    resolution: Annotated[str, Query(pattern="^(hour|day)$")] = "day",
    since: datetime | None = None,
) -> Trend:
    """Roll-ups (count, min, max, mean, last) per hour or day: long trends."""
    check_window(since, None)
    scoped_patient(conn, user, patient_id)
    rows: list[dict[str, Any]] = q.rollups(
        conn, user.scope, patient_id, kind=kind.value, resolution=resolution, since=since
    )
    audit(conn, user, "read_trend", patient_id, kind=kind.value)
    return Trend(
        kind=kind.value,
        unit=KIND_SPECS[kind].unit,
        resolution=resolution,
        buckets=[RollupBucket(**r) for r in rows],
    )
