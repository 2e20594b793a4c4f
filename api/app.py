"""The clinician API (FastAPI): patients, their readings and trends, and dead letters.

Every read of a patient's data is written to the audit log with the acting user (the
`X-Vitalvagt-User` header, set by the municipality's login proxy; authentication itself is
not built yet, see docs/operations.md). Errors are JSON problems (RFC 9457).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api.errors import ApiError, NotFound
from vitalvagt.kinds import KIND_SPECS, Kind

PROBLEM = "application/problem+json"
User = Annotated[str, Header(alias="X-Vitalvagt-User", min_length=1, max_length=100)]


def _problem(status: int, title: str, detail: Any) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status,
                         "detail": detail}, status_code=status, media_type=PROBLEM)  # fmt: skip


def create_app(database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncConnectionPool(
            database_url, min_size=1, max_size=10, open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
        ) as pool:  # fmt: skip
            app.state.pool = pool
            yield

    app = FastAPI(title="Vitalvagt clinician API", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def http_problem(_: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc.status_code, "request failed", exc.detail)

    @app.exception_handler(ApiError)
    async def api_problem(_: Request, exc: ApiError) -> JSONResponse:
        return _problem(exc.status, exc.title, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_problem(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        return _problem(422, "invalid request", detail)

    async def query(sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with app.state.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def audit(user: str, action: str, patient_id: str | None, **detail: Any) -> None:
        async with app.state.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO audit_log (actor, action, patient_id, detail) VALUES (%s, %s, %s, %s)",
                (user, action, patient_id, Jsonb(detail)),
            )

    async def patient_or_404(patient_id: str) -> dict[str, Any]:
        rows = await query(
            "SELECT p.id, p.patient_group::text AS group, p.team_id, t.name AS team,"
            " p.municipality_id, p.gp_name, p.active, g.id AS gateway_id,"
            " g.last_seen_at AS gateway_last_seen FROM patients p"
            " JOIN acute_teams t ON t.id = p.team_id"
            " LEFT JOIN gateways g ON g.patient_id = p.id WHERE p.id = %s",
            (patient_id,),
        )
        if not rows:
            raise NotFound(f"patient {patient_id!r} is not known")
        return rows[0]

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        await query("SELECT 1")
        return {"status": "ok", "database": True}

    @app.get("/patients")
    async def patients(user: User, team: str | None = None) -> list[dict[str, Any]]:
        """Active patients (optionally of one team) with the time of their latest reading."""
        rows = await query(
            "SELECT p.id, p.patient_group::text AS group, p.team_id,"
            " (SELECT max(measured_at) FROM observations o WHERE o.patient_id = p.id)"
            " AS last_reading"
            " FROM patients p WHERE p.active AND (%s::text IS NULL OR p.team_id = %s)"
            " ORDER BY p.id",
            (team, team),
        )
        await audit(user, "list_patients", None, team=team)
        return rows

    @app.get("/patients/{patient_id}")
    async def patient(patient_id: str, user: User) -> dict[str, Any]:
        """One patient and the latest reading of each kind."""
        p = await patient_or_404(patient_id)
        latest = await query(
            "SELECT DISTINCT ON (kind) kind, value, unit, measured_at, flags FROM observations"
            " WHERE patient_id = %s ORDER BY kind, measured_at DESC",
            (patient_id,),
        )
        await audit(user, "read_patient", patient_id)
        return {**p, "latest": latest}

    @app.get("/patients/{patient_id}/observations")
    async def observations(
        patient_id: str, user: User, kind: Kind | None = None,
        since: datetime | None = None, until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """A patient's readings in a time window, newest first."""
        await patient_or_404(patient_id)
        rows = await query(
            "SELECT id, kind, value, unit, measured_at, received_at, time_source, flags,"
            " reading_id, device_address FROM observations WHERE patient_id = %s"
            " AND (%s::text IS NULL OR kind = %s)"
            " AND (%s::timestamptz IS NULL OR measured_at >= %s)"
            " AND (%s::timestamptz IS NULL OR measured_at < %s)"
            " ORDER BY measured_at DESC LIMIT %s",
            (patient_id, kind, kind, since, since, until, until, limit),
        )
        await audit(user, "read_observations", patient_id, kind=kind, rows=len(rows))
        return rows

    @app.get("/patients/{patient_id}/trend")
    async def trend(
        patient_id: str, user: User, kind: Kind,
        resolution: Annotated[str, Query(pattern="^(hour|day)$")] = "day",
        since: datetime | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Roll-ups (count, min, max, mean, last) per hour or day: long trends."""
        await patient_or_404(patient_id)
        rows = await query(
            "SELECT bucket, n, min_value, max_value, mean_value, last_value FROM"
            " observation_rollups WHERE patient_id = %s AND kind = %s AND resolution = %s"
            " AND (%s::timestamptz IS NULL OR bucket >= %s) ORDER BY bucket",
            (patient_id, kind, resolution, since, since),
        )
        await audit(user, "read_trend", patient_id, kind=kind)
        return {"kind": kind, "unit": KIND_SPECS[kind].unit, "resolution": resolution,
                "buckets": rows}  # fmt: skip

    @app.get("/dead-letters")
    async def dead_letters(user: User, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        """Refused messages waiting for a fix (operators)."""
        return await query(
            "SELECT id, received_at, topic, gateway_id, reason_code, reason FROM dead_letters"
            " WHERE replayed_at IS NULL ORDER BY id DESC LIMIT %s",
            (limit,),
        )

    return app
