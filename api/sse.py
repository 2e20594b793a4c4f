"""Server-Sent Events: what the API's streams share.

- ``Listener``: one LISTEN connection per API process for a PostgreSQL notification channel.
  It keeps its connection through database outages (the ``DATABASE`` back-off) and hands
  every notification to ``on_notify``; after each (re)connect it calls ``on_connect``, for
  what may have been missed meanwhile. The alert stream (api/routes/stream.py) and the
  readings stream (api/routes/readings_stream.py) each have one, so a stream wakes for a
  change whichever process made it, without polling the database.
- ``changed_or_keepalive``: a stream's wait for its next change, with the comment lines that
  keep it open (``KeepAlive`` seconds apart) and its end when the client has gone.
- ``sse_response`` and ``sse_responses``: the response and its OpenAPI description.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import Query, Request
from fastapi.responses import StreamingResponse

from vitalvagt.retry import DATABASE

log = logging.getLogger(__name__)

KeepAlive = Annotated[float, Query(ge=0.05, le=60, description="seconds between keep-alives")]


KEEPALIVE = ": keep-alive\n\n"


async def changed_or_keepalive(
    request: Request, changed: asyncio.Event, keepalive_s: float
) -> str | None:
    """Wait at most ``keepalive_s`` for ``changed``: "" when it was set, the keep-alive
    comment when the time passed first, None when the client has gone meanwhile."""
    try:
        await asyncio.wait_for(changed.wait(), keepalive_s)
        return ""
    except TimeoutError:
        return None if await request.is_disconnected() else KEEPALIVE


def sse_responses(description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of a stream's 200 answer."""
    return {
        200: {
            "description": f"text/event-stream: {description}",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    # X-Accel-Buffering: a proxy (nginx) must pass each event on at once
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )


class Listener:
    channel: str  # set by each kind of feed

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run(), name=f"api-listen-{self.channel}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def on_connect(self) -> None:
        """Listening (again): notifications sent while away are lost."""

    def on_notify(self, payload: str) -> None:
        """One notification's payload."""

    async def _run(self) -> None:
        backoff = DATABASE.backoff()
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    backoff.reset()
                    self.on_connect()
                    async for n in conn.notifies():
                        self.on_notify(n.payload)
            except psycopg.OperationalError as exc:
                delay = backoff.next_delay()
                log.warning(
                    "api: the %s feed lost the database (%s); again in %.1f s",
                    self.channel,
                    str(exc).splitlines()[0] if str(exc) else exc,
                    delay,
                )
                await asyncio.sleep(delay)
