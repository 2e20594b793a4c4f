"""A patient's readings: a raw window, a downsampled series (``time_bucket``, min and max
per bucket; reliable and unreliable readings apart), the personal baseline band the trend
rules compare against (vitalvagt/baseline.py), and the hourly/daily roll-ups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.audit import audit
from api.errors import Unprocessable
from api.params import PatientId, check_window
from api.queries import observations as q
from api.routes.patients import scoped_patient
from api.security import Conn, CurrentUser
from vitalvagt import baseline as base
from vitalvagt.kinds import KIND_SPECS, Kind

router = APIRouter(prefix="/patients", tags=["observations"])
BASELINE_KINDS = (
    Kind.SPO2,
    Kind.PULSE,
    Kind.WEIGHT,
    Kind.BP_SYSTOLIC,
    Kind.BP_DIASTOLIC,
    Kind.TEMPERATURE,
)
EARLIEST_AT = datetime(1971, 1, 1, tzinfo=UTC)  # a baseline reaches 65 days back


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
    buckets: list[Bucket] = Field(description="the reliable readings (no unreliable flag)")
    unreliable: list[Bucket] = Field(
        description="the readings with a flag of vitalvagt.quality.UNRELIABLE, same buckets"
    )


class BaselineBand(BaseModel):
    kind: str
    unit: str
    median: float = Field(description="median of the day values in the window")
    spread: float = Field(description="robust spread (as a standard deviation), floored")
    low: float = Field(description="median - 1 spread")
    high: float = Field(description="median + 1 spread")
    days: int = Field(description="day values in the window (at least 7)")
    since: datetime = Field(description="the window [since, until): 28 days ending 7 before")
    until: datetime


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
    of equal width, with count, min, max and mean per bucket (empty buckets left out): the
    reliable readings in ``buckets``, the unreliable ones in ``unreliable``."""
    check_window(since, until)
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=7)
    check_window(since, until)
    scoped_patient(conn, user, patient_id)
    width, rows, unreliable = q.series(
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
        unreliable=[Bucket(**r) for r in unreliable],
    )


@router.get("/{patient_id}/baseline")
def baseline(
    patient_id: PatientId,
    conn: Conn,
    user: CurrentUser,
    at: Annotated[datetime | None, Query(description="the baseline as of (default: now)")] = None,
) -> list[BaselineBand]:
    """The patient's personal baseline band at ``at``, per kind that has one, exactly as the
    trend rules define it (vitalvagt/baseline.py): the median of the day values (mean of a
    day's reliable readings, implausible weights left out) of the 28 days that end 7 days
    before ``at``, with the robust spread floored per kind; a kind with fewer than 7 day
    values has no baseline yet and is left out (the rules' provisional baseline for a new
    patient is not shown). ``low``/``high`` are median -/+ one spread: the trend rules have
    no single band (their CUSUM allowance is 0.75 spreads for trend:copd, 1.0 for the
    others), so one spread either side."""
    if at is not None and at.tzinfo is None:
        raise Unprocessable("query.at: needs a time zone (e.g. 2026-01-01T00:00Z)")
    at = at or datetime.now(UTC)
    if at < EARLIEST_AT:
        raise Unprocessable("query.at: must be after 1971")
    scoped_patient(conn, user, patient_id)
    at_s = int(at.timestamp())
    since_s, until_s = base.reading_window(at_s)
    rows = q.baseline_readings(
        conn,
        user.scope,
        patient_id,
        kinds=[k.value for k in BASELINE_KINDS],
        since=_utc(since_s),
        until=_utc(until_s),
        weights_since=_utc(since_s - base.PRIOR_MAX_DAYS * base.DAY_S),
    )
    out = []
    for kind in BASELINE_KINDS:
        mine = [r for r in rows if r["kind"] == kind.value]
        t = np.array([r["t"] for r in mine], dtype=np.int64)
        band = base.personal_band(kind, t, np.array([r["value"] for r in mine]), at_s)
        if band is not None:
            out.append(
                BaselineBand(
                    kind=kind.value,
                    unit=KIND_SPECS[kind].unit,
                    median=band.median,
                    spread=band.spread,
                    low=band.low,
                    high=band.high,
                    days=band.days,
                    since=_utc(band.since_s),
                    until=_utc(band.until_s),
                )
            )
    audit(conn, user, "read_baseline", patient_id, kinds=[b.kind for b in out])
    return out


def _utc(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


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
