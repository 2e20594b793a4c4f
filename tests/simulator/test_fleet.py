"""A fleet of 1,000 homes over the real broker: what arrives equals the cohort."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from simulator.cohort import CohortSpec, GroupChoice, iter_observation_rows, write_cohort
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
    watcher = connect(stack.settings.mqtt_port, "vv-sim", stack.secrets()["vv-sim"],
                      subscribe="vv/v1/gw/+/obs")
    try:
        stats = run_fleet(
            database_url=stack.database_url(), host="127.0.0.1",
            port=stack.settings.mqtt_tls_port, tls_ca=stack.paths.ca_cert,
            cohort_dir=str(cohort), speed=1e9, on_provisioned=stack.sync_broker_users,
        )  # fmt: skip
        assert stats.homes == 1000
        assert stats.readings_acked == len(expected)
        got: dict[tuple[str, str], tuple] = {}
        for gw, o in received_observations(watcher, lambda: len(got) >= len(expected)):
            got[(gw, str(o.id))] = (o.kind.value, o.value, o.measured_at)
    finally:
        watcher.close()
    assert got == expected
