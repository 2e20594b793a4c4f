"""The contract between ingest and the alert engine: "new readings for these patients".

Ingest calls ``notify_new_readings`` inside the transaction that stores the readings, so
the notification reaches LISTENers only when the readings are committed; the engine LISTENs
on ``CHANNEL`` and reads each payload with ``patients_of``. A NOTIFY only wakes the engine:
one lost while the engine was away is made up by its catch-up at start (alerts/service.py),
and the durable unit of work planned for the engine will take its place as the record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import psycopg

CHANNEL = "vv_observations"
NOTIFY_MAX_BYTES = 7900  # PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more
_EMPTY = len('{"patients": []}')


def notify_chunks(patients: list[str]) -> Iterable[list[str]]:
    """Patient ids in groups whose ``{"patients": [...]}`` stays under the NOTIFY limit."""
    chunk: list[str] = []
    size = _EMPTY
    for p in patients:
        need = len(json.dumps(p)) + 2  # quoted, and ", " before it
        if chunk and size + need > NOTIFY_MAX_BYTES:
            yield chunk
            chunk, size = [], _EMPTY
        chunk.append(p)
        size += need
    if chunk:
        yield chunk


def notify_new_readings(cur: psycopg.Cursor, patients: Iterable[str]) -> None:
    """Queue the notification in the caller's transaction (sent when it commits)."""
    for chunk in notify_chunks(sorted(patients)):
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"patients": chunk})))


def listen(conn: psycopg.Connection) -> None:
    """Subscribe ``conn`` (autocommit) to the notifications."""
    conn.execute(f"LISTEN {CHANNEL}")


def patients_of(payload: str) -> list[str]:
    """The patient ids of one notification; a payload not in the contract names none."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return []
    patients = doc.get("patients") if isinstance(doc, dict) else None
    if not isinstance(patients, list):
        return []
    return [p for p in patients if isinstance(p, str)]
