"""Roll-ups equal the aggregates of the raw readings, also after late and duplicate arrivals."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.messages import Accepted, Message
from ingest.registry import GatewayDirectory, validate
from ingest.rollups import drop_old_chunks, refresh_rollups
from ingest.service import IngestService
from ingest.store import Store
from tests.ingest.conftest import add_home, count_rows, gateway_client, payloads, readings, wait_for
from vitalvagt.observation import Observation
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack


def expected(obs: list[Observation], resolution: str) -> dict[datetime, tuple]:
    """Aggregates computed in Python from what was sent (independent of the SQL)."""
    buckets: dict[datetime, list[Observation]] = defaultdict(list)
    for o in obs:
        at = o.measured_at
        key = at.replace(minute=0, second=0, microsecond=0)
        if resolution == "day":
            key = key.replace(hour=0)
        buckets[key].append(o)
    out = {}
    for key, group in buckets.items():
        values = [o.value for o in group]
        last = max(group, key=lambda o: o.measured_at)
        out[key] = (
            len(values),
            min(values),
            max(values),
            pytest.approx(sum(values) / len(values)),
            last.value,
        )
    return out


def stored(conn: psycopg.Connection, patient: str, resolution: str) -> dict[datetime, tuple]:
    rows = conn.execute(
        "SELECT bucket, n, min_value, max_value, mean_value, last_value FROM observation_rollups"
        " WHERE patient_id = %s AND resolution = %s AND kind = 'spo2'",
        (patient, resolution),
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_rollups_match_raw_aggregates_incrementally(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    gw, pw, patient = add_home(registry, stack, "rollup")
    everything = readings(gw, 300)  # one every 37 s: about three hours
    first, late = everything[::2], everything[1::2]
    c = gateway_client(stack, gw, pw)
    try:
        for m in payloads(gw, first, 25):
            c.publish(f"vv/v1/gw/{gw}/obs", m)
        wait_for(lambda: count_rows(registry, gw)[0] == len(first), 20, "the first half")
        refresh_rollups(registry, retention_days=100_000)
        assert stored(registry, patient, "hour") == expected(first, "hour")
        assert stored(registry, patient, "day") == expected(first, "day")
        # Late arrivals into the same hours, with a few duplicates of stored readings.
        for m in payloads(gw, late + first[:10], 25):
            c.publish(f"vv/v1/gw/{gw}/obs", m)
        wait_for(lambda: count_rows(registry, gw)[0] == len(everything), 20, "the late half")
    finally:
        c.close()
    result = refresh_rollups(registry, retention_days=100_000)
    assert result.hours == len(expected(everything, "hour"))
    assert stored(registry, patient, "hour") == expected(everything, "hour")
    assert stored(registry, patient, "day") == expected(everything, "day")
    # Nothing dirty left: a second refresh recomputes nothing.
    assert refresh_rollups(registry, retention_days=100_000).hours == 0


def test_retention_drops_old_raw_chunks_and_keeps_rollups(
    stack: Stack, registry: psycopg.Connection, ingest: IngestService
) -> None:
    gw, _pw, patient = add_home(registry, stack, "retention")
    # From 2020, so that dropping chunks older than 2021 touches no other test's readings.
    # Ingest refuses readings that old today (too_old), so they are written through its store
    # with the hub's clock set to their time, as ingest would have written them then.
    t0 = datetime(2020, 6, 1, 8, tzinfo=UTC)
    obs = readings(gw, 50, t0=t0)
    msg = Message(f"vv/v1/gw/{gw}/obs", payloads(gw, obs, 50)[0], t0 + timedelta(hours=1))
    directory = GatewayDirectory(min_reload_s=0)
    accepted = validate(msg, directory, registry, now=msg.received_at)
    assert isinstance(accepted, Accepted), accepted
    with Store(stack.database_url()) as store:
        store.open()
        store.write([accepted], [])
    assert count_rows(registry, gw)[0] == 50
    refresh_rollups(registry, retention_days=100_000)
    before = stored(registry, patient, "hour")
    assert before
    days = (datetime.now(UTC) - datetime(2021, 1, 1, tzinfo=UTC)).days
    assert drop_old_chunks(registry, retention_days=days) >= 1
    assert count_rows(registry, gw) == (0, 0)
    assert stored(registry, patient, "hour") == before
