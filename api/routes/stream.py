"""``GET /alerts/stream``: Server-Sent Events of new and changed alerts of the user's teams.

Each event is one row of ``alert_transitions`` (an alert opened, raised, acknowledged,
snoozed, resolved...) with its alert; the event id is the transition's id. The rows are
read from the table, scoped in SQL like every query, after the id the client last got
(``Last-Event-ID`` on a reconnect, else from now on): a client that reconnects gets exactly
the events it missed. ``AlertFeed`` LISTENs on the channel a trigger on
``alert_transitions`` NOTIFYs (0008_users.sql) and only wakes the streams; every API process
has its own, so each streams every change whichever process or engine made it. Between
changes a comment line keeps the connection alive.

Known limit: ids are taken when a row is inserted, so a transaction that inserts a lower id
but commits after a higher one was streamed is not sent to a client already past it (the
life cycle's transactions are short; docs/api.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse

from api.errors import Unprocessable
from api.queries.patients import fetch
from api.security import SCOPE_SQL, Principal, StreamingUser
from api.sse import KeepAlive, Listener, changed_or_keepalive, sse_response, sse_responses

router = APIRouter(prefix="/alerts", tags=["alerts"])
CHANNEL = "vv_alert_transitions"
BATCH = 200


class AlertFeed(Listener):
    """Wakes every alert stream of this process when a transition was committed (or the
    connection came back after an outage: the streams then catch up by id)."""

    channel = CHANNEL

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self._changed = asyncio.Event()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def on_connect(self) -> None:
        self._wake()

    def on_notify(self, payload: str) -> None:
        self._wake()

    def event(self) -> asyncio.Event:
        """Take this before reading the table; it is set by the next change."""
        return self._changed


def transitions_after(
    conn: psycopg.Connection, scope: dict[str, Any], after: int | None, limit: int
) -> list[dict[str, Any]]:
    return fetch(
        conn,
        "SELECT t.id, t.alert_id, t.from_state, t.to_state, t.at, t.by, t.reason, t.note,"
        " a.patient_id, a.team_id, a.rule, a.severity, a.state::text AS state, a.message"
        " FROM alert_transitions t JOIN alerts a ON a.id = t.alert_id"
        " JOIN patients p ON p.id = a.patient_id"
        f" WHERE t.id > %(after)s AND {SCOPE_SQL} AND a.team_id = ANY(%(teams)s)"
        " ORDER BY t.id LIMIT %(limit)s",
        {**scope, "after": after, "limit": limit},
    )


def last_transition(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM alert_transitions").fetchone()
    return int(row[0]) if row else 0


def _read(request: Request, user: Principal, after: int) -> list[dict[str, Any]]:
    with request.app.state.pool.connection() as conn:
        return transitions_after(conn, user.scope, after, BATCH)


def _start(request: Request) -> int:
    with request.app.state.pool.connection() as conn:
        return last_transition(conn)


async def _events(
    request: Request, user: Principal, after: int | None, keepalive_s: float
) -> AsyncIterator[str]:
    feed: AlertFeed = request.app.state.alerts_feed
    if after is None:
        after = await run_in_threadpool(_start, request)
    yield f"retry: 3000\n: connected as {user.user_id}, after {after}\n\n"
    while True:
        changed = feed.event()
        rows = await run_in_threadpool(_read, request, user, after)
        for r in rows:
            after = r["id"]
            yield f"id: {after}\nevent: alert\ndata: {json.dumps(jsonable_encoder(r))}\n\n"
        if len(rows) == BATCH:
            continue
        comment = await changed_or_keepalive(request, changed, keepalive_s)
        if comment is None:
            return
        if comment:
            yield comment


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses=sse_responses("one `alert` event per transition, id = its id"),
)
async def alert_stream(
    request: Request,
    user: StreamingUser,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    keepalive_s: KeepAlive = 15.0,
) -> StreamingResponse:
    """New and changed alerts of the user's teams, as they are committed; resumable with
    ``Last-Event-ID``. A comment line every ``keepalive_s`` seconds keeps it open."""
    after = None
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise Unprocessable("header.last-event-id: an event id (a whole number)")
        after = int(last_event_id)
    return sse_response(_events(request, user, after, keepalive_s))
