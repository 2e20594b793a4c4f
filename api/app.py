"""The clinician API (FastAPI): alerts, patients, readings and trends, gateways, admin.

Every request but ``/healthz``, ``/auth/token``, ``/auth/refresh``, ``/auth/logout``, the
docs and the web view's static files (``/web/``, api/routes/web.py) carries a bearer token
(api/tokens.py); every query of patient data is scoped in SQL to the user's teams and
municipalities (api/security.py); every read and change is in the audit log (api/audit.py).
Errors are JSON problems (RFC 9457), all of them in the OpenAPI description. The routes are
plain functions: FastAPI runs them in its thread pool, each with a connection of the pool,
so that they call the core's life-cycle functions directly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool
from starlette.exceptions import HTTPException

from api.config import ApiConfig, api_config
from api.errors import PROBLEM_RESPONSES, PUBLIC_RESPONSES, ApiError, problem
from api.middleware import Hardening
from api.routes import (
    admin,
    alerts,
    auth,
    fhir,
    gateways,
    observations,
    patients,
    readings_stream,
    stream,
    web,
)
from api.tokens import OidcVerifier
from vitalvagt.settings import load_settings

log = logging.getLogger(__name__)
# Routes that answer without a token (tests/api/test_authz.py holds every other to it).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/auth/token",
        "/auth/refresh",
        "/auth/logout",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        # the web view's files: the page, its scripts and styles; no data (api/routes/web.py)
        "/",
        "/web",
        "/web/",
        "/web/static/{name}",
        "/web/vendor/{name}",
    }
)


def _configure(conn: psycopg.Connection) -> None:
    conn.execute("SET timezone = 'UTC'")
    # No JIT: a patient's 6 months are 180 chunks, and compiling the plan for them took
    # 10-17 s of a query that runs in well under one (bench/web_bench.py, EXPLAIN ANALYZE).
    conn.execute("SET jit = off")


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def create_app(
    database_url: str,
    *,
    config: ApiConfig | None = None,
    on_gateways_changed: Callable[[], None] | None = None,
    # As many connections as FastAPI's thread pool has threads (anyio's default, 40): a route
    # holds its connection until its dependency's exit, which also needs a thread. With fewer
    # connections than threads, threads waiting for a connection took every thread and the
    # holders could not give theirs back: the API stopped answering under load
    # (bench/api_bench.py at 200 requests/s with 10).
    pool_max_size: int = 40,
) -> FastAPI:
    """The app on ``database_url``. ``config`` defaults to the one of the ``VV_*`` settings;
    ``on_gateways_changed`` runs after a gateway is provisioned or revoked (the embedded
    stack rewrites the broker's password file then)."""
    config = config or api_config(load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            pool = ConnectionPool(
                database_url,
                min_size=1,
                max_size=pool_max_size,
                open=False,
                kwargs={"autocommit": True},
                configure=_configure,
            )
            pool.open(wait=True, timeout=30)
            stack.callback(pool.close)
            app.state.pool = pool
            app.state.alerts_feed = await stack.enter_async_context(stream.AlertFeed(database_url))
            app.state.readings_feed = await stack.enter_async_context(
                readings_stream.ReadingsFeed(database_url)
            )
            yield

    app = FastAPI(
        title="Vitalvagt clinician API",
        version="0.2.0",
        lifespan=lifespan,
        description="Alerts, patients and their readings for the municipalities' acute"
        " teams. Authenticate with POST /auth/token (OAuth2 password flow) or a token of the"
        " configured OpenID Connect provider; see docs/api.md.",
    )
    app.state.config = config
    app.state.oidc = OidcVerifier(config.oidc) if config.oidc else None
    app.state.on_gateways_changed = on_gateways_changed
    app.add_middleware(Hardening, max_body_bytes=config.max_body_bytes)

    @app.exception_handler(HTTPException)
    async def http_problem(_: Request, exc: HTTPException) -> JSONResponse:
        titles = {404: "not found", 405: "method not allowed"}
        return problem(
            exc.status_code,
            titles.get(exc.status_code, "request failed"),
            str(exc.detail),
            dict(exc.headers or {}),
        )

    @app.exception_handler(ApiError)
    async def api_problem(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_problem(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The reason only, never the value given (it may be 100 KB, or personal data).
        detail = [{"field": _field(e["loc"]), "reason": e["msg"][:300]} for e in exc.errors()]
        return problem(422, "invalid request", detail)

    @app.exception_handler(psycopg.DataError)
    async def data_problem(_: Request, exc: psycopg.DataError) -> JSONResponse:
        log.info("api: value refused by the database: %s", type(exc).__name__)
        return problem(422, "invalid request", "a value the database cannot store or compare")

    @app.exception_handler(psycopg.IntegrityError)
    async def integrity_problem(_: Request, exc: psycopg.IntegrityError) -> JSONResponse:
        return problem(
            409,
            "conflict",
            "the change breaks a rule of the data: "
            f"{exc.diag.constraint_name or type(exc).__name__}",
        )

    @app.exception_handler(Exception)
    async def server_problem(_: Request, exc: Exception) -> JSONResponse:
        log.exception("api: unexpected error")
        return problem(500, "server error", "the server failed; the error is logged")

    @app.get("/healthz", tags=["health"], responses=PUBLIC_RESPONSES)
    def healthz(request: Request) -> dict[str, Any]:
        with request.app.state.pool.connection() as conn:
            conn.execute("SELECT 1")
        return {"status": "ok", "database": True}

    app.include_router(auth.router, responses=PROBLEM_RESPONSES)
    # the stream before the alerts: /alerts/stream is no /alerts/{alert_id}
    for module in (stream, alerts, patients, readings_stream, observations, fhir, gateways,
                   admin):  # fmt: skip
        app.include_router(module.router, responses=PROBLEM_RESPONSES)
    app.include_router(web.router)
    return app
