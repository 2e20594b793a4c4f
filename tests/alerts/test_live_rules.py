"""The full rule set through the live engine gives the alerts the offline replay gives
(issue 11: the same code live and offline). A COPD patient, 40 days of readings arriving a
day at a time, stable and then an exacerbation; the database and the engine are real."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from alerts.engine import drain
from alerts.replay import replay_patient
from alerts.ruleset import FULL
from alerts.series import PatientContext, Series
from tests.ingest.conftest import add_home
from vitalvagt.kinds import Kind
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack

DAYS = 40


def _course(start: datetime) -> list[tuple[datetime, Kind, float, list[str]]]:
    """Morning and evening SpO2, pulse and temperature; the last 6 days an exacerbation
    (SpO2 down 6 points, pulse up 25, a fever); one reading flagged unreliable."""
    rng = np.random.default_rng(7)
    out = []
    for day in range(DAYS):
        worse = max(0.0, (day - (DAYS - 6)) / 6)
        for hour in (8, 19):
            at = start + timedelta(days=day, hours=hour)
            spo2 = round(94 - 6 * worse + rng.normal(0, 1.0))
            pulse = round(74 + 25 * worse + rng.normal(0, 3.0))
            temp = round(36.8 + 1.4 * worse + rng.normal(0, 0.15), 1)
            flags = ["low_perfusion"] if (day, hour) == (12, 8) else []
            out += [(at, Kind.SPO2, spo2, flags), (at, Kind.PULSE, pulse, flags),
                    (at + timedelta(minutes=2), Kind.TEMPERATURE, temp, [])]  # fmt: skip
    return out


def test_the_live_engine_opens_and_clears_what_the_offline_replay_does(
    stack: Stack, registry: psycopg.Connection
) -> None:
    gw, _, p = add_home(registry, stack, "live-full")  # a COPD patient
    drain(registry)
    start = (datetime.now(UTC) - timedelta(days=DAYS + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    course = _course(start)
    for day in range(DAYS):
        lo, hi = start + timedelta(days=day), start + timedelta(days=day + 1)
        todays = [r for r in course if lo <= r[0] < hi]
        ids = [uuid.uuid4() for _ in todays]
        for obs_id, (at, kind, value, flags) in zip(ids, todays, strict=True):
            registry.execute(
                "INSERT INTO observations (id, measured_at, received_at, ingested_at,"
                " patient_id, gateway_id, device_address, kind, value, unit, flags)"
                " VALUES (%s, %s, %s, %s, %s, %s, 'AA', %s, %s, 'x', %s)",
                (obs_id, at, at, at + timedelta(hours=1), p, gw, kind.value, value, flags),
            )
        registry.execute(
            "INSERT INTO alert_work (patient_id, observation_ids, measured_from, measured_to)"
            " VALUES (%s, %s, %s, %s)",
            (p, ids, min(r[0] for r in todays), max(r[0] for r in todays)),
        )
        drain(registry)  # the day's readings arrive and are evaluated

    live = registry.execute(
        "SELECT rule, state::text = 'resolved', trigger_count FROM alerts WHERE patient_id = %s"
        " ORDER BY id",
        (p,),
    ).fetchall()
    series = Series.build(
        [int(r[0].timestamp()) for r in course], [r[1] for r in course],
        [r[2] for r in course], [not r[3] for r in course],
    )  # fmt: skip
    offline = replay_patient(series, PatientContext(group="copd"), FULL, "day")
    # The same alerts, each folding in the same findings. The replay marks an alert cleared
    # only when its rule fires again after the clear time (it counts alerts); the live engine
    # clears as soon as a reading shows the condition gone, so it may clear more.
    assert [(r, n) for r, _, n in live] == [(a.rule, 1 + a.updates) for a in offline]
    for (_, cleared, _), a in zip(live, offline, strict=True):
        assert cleared or a.cleared_at is None
    rules = {a.rule for a in offline}
    assert rules & {"trend:copd", "trend:spo2", "trend:pulse", "tobs", "news2"}, (
        f"the exacerbation should have been found: {rules}"
    )
    assert "quality:spo2" in rules
