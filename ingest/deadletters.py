"""Dead letters: every refused message, kept with its reason; listed and replayed after a fix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from ingest.errors import StorageRefused
from ingest.messages import Accepted, Message
from ingest.registry import GatewayDirectory, validate
from ingest.store import Store


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_at: datetime
    topic: str
    gateway_id: str | None
    code: str
    reason: str
    size: int
    replayed_at: datetime | None
    replay_result: str | None


def list_dead_letters(
    conn: psycopg.Connection, *, include_replayed: bool = False, limit: int = 100
) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT id, received_at, topic, gateway_id, reason_code, reason, payload_size,"
        " replayed_at, replay_result FROM dead_letters"
        " WHERE %s OR replayed_at IS NULL ORDER BY id LIMIT %s",
        (include_replayed, limit),
    ).fetchall()
    return [DeadLetter(*r) for r in rows]


@dataclass(frozen=True)
class ReplayOutcome:
    id: int
    stored: bool
    detail: str


def replay(database_url: str, *, ids: list[int] | None = None) -> list[ReplayOutcome]:
    """Run open dead letters through validation again; store the ones that now pass.

    A replayed reading that was stored meanwhile is skipped by its stable id, so a replay
    interrupted half-way can simply be run again.
    """
    outcomes = []
    with psycopg.connect(database_url, autocommit=True) as conn, Store(database_url) as store:
        store.open()
        directory = GatewayDirectory(min_reload_s=0)
        directory.reload(conn)
        letters = conn.execute(
            "SELECT id, topic, payload, payload_truncated FROM dead_letters"
            " WHERE replayed_at IS NULL AND (%s::bigint[] IS NULL OR id = ANY(%s)) ORDER BY id",
            (ids, ids),
        ).fetchall()
        for dl_id, topic, payload, truncated in letters:
            if truncated:  # only its first bytes were kept: never valid, nothing to replay
                detail = "still refused: kept truncated (it was over the size limit)"
                conn.execute(
                    "UPDATE dead_letters SET replay_result = %s WHERE id = %s", (detail, dl_id)
                )
                outcomes.append(ReplayOutcome(dl_id, False, detail))
                continue
            outcome = validate(Message(topic, bytes(payload), datetime.now(UTC)), directory, conn)
            if isinstance(outcome, Accepted):
                try:
                    result = store.write([outcome], [])
                except StorageRefused as exc:
                    # Still refused by the database: say so and go on with the next one.
                    detail = f"still refused: {exc.reason}"
                    conn.execute(
                        "UPDATE dead_letters SET replay_result = %s WHERE id = %s", (detail, dl_id)
                    )
                    outcomes.append(ReplayOutcome(dl_id, False, detail))
                    continue
                detail = f"stored {result.inserted} readings ({result.duplicates} already stored)"
                conn.execute(
                    "UPDATE dead_letters SET replayed_at = now(), replay_result = %s WHERE id = %s",
                    (detail, dl_id),
                )
                outcomes.append(ReplayOutcome(dl_id, True, detail))
            else:
                detail = f"still refused: {outcome.reason}"
                conn.execute(
                    "UPDATE dead_letters SET replay_result = %s WHERE id = %s", (detail, dl_id)
                )
                outcomes.append(ReplayOutcome(dl_id, False, detail))
    return outcomes
