"""``GET /patients/{id}/readings/stream``: Server-Sent Events when a patient's new readings
are stored, so a nurse who asked for a new measurement sees it arrive on the patient page.

Ingest NOTIFYs ``vv_observations`` with the patient ids of every batch it commits
(vitalvagt/db/notify.py, the alert engine's wake-up call); ``ReadingsFeed`` LISTENs on that
channel once per API process and wakes the streams of the patients named. An event carries
the patient id only: the page reads what is new with the ordinary, audited requests. Events
come at most every ``MIN_GAP_S``: a patient on continuous oximetry has a batch every few
seconds, and the page needs to know, not to count. After an outage of the database the feed
wakes every stream (notifications sent meanwhile are lost): one reload too many, none missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.audit import audit
from api.errors import NotFound
from api.params import PatientId
from api.queries import patients as q
from api.security import Principal, StreamingUser
from api.sse import KeepAlive, Listener, changed_or_keepalive, sse_response, sse_responses
from vitalvagt.db.notify import CHANNEL, patients_of

router = APIRouter(prefix="/patients", tags=["patients"])
MIN_GAP_S = 2.0


class ReadingsFeed(Listener):
    """Per patient, an event set when that patient's readings were committed."""

    channel = CHANNEL

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self._waiting: dict[str, asyncio.Event] = {}

    def on_connect(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for ev in waiting.values():
            ev.set()

    def on_notify(self, payload: str) -> None:
        for patient in patients_of(payload):
            ev = self._waiting.pop(patient, None)
            if ev is not None:
                ev.set()

    def event(self, patient_id: str) -> asyncio.Event:
        """Set by the patient's next readings; every stream of the patient shares it."""
        return self._waiting.setdefault(patient_id, asyncio.Event())


def _check(request: Request, user: Principal, patient_id: str) -> None:
    with request.app.state.pool.connection() as conn:
        if q.get_patient(conn, user.scope, patient_id) is None:
            raise NotFound(f"patient {patient_id!r} is not known")
        audit(conn, user, "watch_readings", patient_id)


async def _events(request: Request, patient_id: str, keepalive_s: float) -> AsyncIterator[str]:
    feed: ReadingsFeed = request.app.state.readings_feed
    yield "retry: 3000\n: watching new readings\n\n"
    data = json.dumps({"patient_id": patient_id})
    changed = feed.event(patient_id)
    while True:
        comment = await changed_or_keepalive(request, changed, keepalive_s)
        if comment is None:
            return
        if comment:
            yield comment
            continue
        # The next one is taken before the gap, so readings stored during it set it and are
        # told right after the gap.
        changed = feed.event(patient_id)
        yield f"event: readings\ndata: {data}\n\n"
        await asyncio.sleep(MIN_GAP_S)


@router.get(
    "/{patient_id}/readings/stream",
    response_class=StreamingResponse,
    responses=sse_responses("a `readings` event when new readings are stored"),
)
async def readings_stream(
    patient_id: PatientId, request: Request, user: StreamingUser, keepalive_s: KeepAlive = 15.0
) -> StreamingResponse:
    """An event each time new readings of the patient are stored (at most every 2 s); a
    comment line every ``keepalive_s`` seconds keeps it open. 404 outside the user's teams."""
    await run_in_threadpool(_check, request, user, patient_id)
    return sse_response(_events(request, patient_id, keepalive_s))
