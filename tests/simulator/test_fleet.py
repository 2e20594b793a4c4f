"""A fleet of 1,000 homes over the real broker: what arrives equals the cohort."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from simulator.cohort import CohortSpec, write_cohort
from simulator.cohort_format import GroupChoice, iter_observation_rows
from simulator.fleet_run import run_fleet
from tests.mqtt import connect, received_observations
from vitalvagt.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_thousand_homes_publish_exactly_the_cohort(stack: Stack, tmp_path: Path) -> None:
    spec = CohortSpec(1000, 2, 7, date.today() - timedelta(days=4), GroupChoice.MIXED)
    cohort = write_cohort(tmp_path / "cohort", spec).path
    expected = {
        (r.gateway_id, str(r.id)): (r.kind.value, r.value, r.measured_at)
        for r in iter_observation_rows(cohort)
    }
    assert len(expected) > 5000
    watcher = connect(
        stack.settings.mqtt_port, "vv-sim", stack.secrets()["vv-sim"], subscribe="vv/v1/gw/+/obs"
    )
    try:
        stats = run_fleet(
            database_url=stack.database_url(), host="127.0.0.1",
            port=stack.settings.mqtt_tls_port, tls_ca=stack.paths.ca_cert,
            cohort_dir=str(cohort), speed=1e9,
            on_provisioned=lambda: watcher.sync_broker_users(stack),
        )  # fmt: skip
        assert stats.homes == 1000
        assert stats.readings_acked == len(expected)
        got: dict[tuple[str, str], tuple] = {}
        for gw, o in received_observations(watcher, lambda: len(got) >= len(expected)):
            got[(gw, str(o.id))] = (o.kind.value, o.value, o.measured_at)
    finally:
        watcher.close()
    assert got == expected


def test_a_continuous_stream_makes_what_the_gateway_makes_of_plx_continuous(
    tmp_path: Path,
) -> None:
    """No I/O: the stream's messages once the fleet clock is live (issue 10, the demo)."""
    from datetime import UTC, datetime

    from simulator.cohort_format import iter_homes, read_events
    from simulator.fleet import ContinuousStream, FleetClock, continuous_homes
    from vitalvagt.devices import DeviceType
    from vitalvagt.kinds import Kind
    from vitalvagt.observation import TimeSource
    from vitalvagt.quality import Flag
    from vitalvagt.wire import decode_batch

    spec = CohortSpec(6, 3, 12, date.today() - timedelta(days=1), GroupChoice.MIXED)
    cohort = write_cohort(tmp_path / "cohort", spec).path
    homes = list(iter_homes(cohort))
    (home,) = continuous_homes(homes, 1)
    assert any(d.type is DeviceType.OXIMETER for d in home.patient.devices)
    until = datetime.now(UTC) + timedelta(days=1)
    stream = ContinuousStream(home, read_events(cohort), seed=spec.seed, until=until)
    assert stream.due(FleetClock(datetime.now(UTC) - timedelta(days=1), 1.0)) == []  # replaying
    clock = FleetClock(datetime.now(UTC) + timedelta(seconds=1), 1.0)  # caught up: live
    assert clock.live and stream.due(clock) == []  # starts now: nothing measured yet
    stream._next_s -= 12  # as if it had started twelve seconds ago
    messages = stream.due(clock)
    assert len(messages) >= 2 and all(n == 5 for _, _, n in messages)
    oximeter = next(d for d in home.patient.devices if d.type is DeviceType.OXIMETER)
    times = []
    for _, payload, _ in messages:
        batch = decode_batch(payload)
        assert batch.gateway_id == home.gateway_id and len(batch.observations) == 10
        for o in batch.observations:
            assert o.kind in (Kind.SPO2, Kind.PULSE)
            assert o.time_source is TimeSource.GATEWAY and o.flags == (Flag.DEVICE_TIME_MISSING,)
            assert o.measured_at == o.received_at and o.device.address == oximeter.address
            times.append(o.measured_at)
        ids = {o.reading_id for o in batch.observations}
        assert len(ids) == 5  # SpO2 and pulse of one reading share its id
    seconds = sorted({t.timestamp() for t in times})
    assert seconds == [seconds[0] + i for i in range(len(seconds))]  # one a second, no gap


def test_a_simulated_batterys_level_is_its_own_and_drains_to_empty() -> None:
    """No I/O: what the fleet's homes report in their online status (the web view's homes)."""
    from simulator.fleet import battery_level

    a, b = "C0:00:00:00:00:01", "C0:00:00:00:00:02"
    assert 60 <= battery_level(a, 0) <= 100 and battery_level(a, 0) == battery_level(a, 0)
    assert {battery_level(f"C0:00:00:00:00:{i:02X}", 0) for i in range(40)} != {battery_level(b, 0)}
    assert battery_level(a, 10) == battery_level(a, 0) - 30
    assert battery_level(a, 1000) == 0
