"""A fleet with BLE homes over the real stack: emulated devices -> bumble -> the real gateway
(bleak, outbox, publisher) -> mosquitto, beside direct homes; what arrives equals the cohort.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.pairing import PAIRING_FILE, PairingList
from ingest.service import IngestService
from simulator.ble_fleet import VALUE_TOLERANCE, encode_reading, readings_of
from simulator.cohort import CohortSpec, write_cohort
from simulator.cohort_format import GroupChoice, ObservationRow, iter_homes, iter_observation_rows
from simulator.fleet_run import run_fleet
from tests.conftest import stack_env
from tests.mqtt import connect, received_observations
from vitalvagt.observation import Observation
from vitalvagt.quality import Flag
from vitalvagt.stack import Stack

# Seed chosen so that the two BLE homes have every device model (both scales' and
# thermometers' kinds: user ids, no clock) and readings flagged other_user,
# device_time_missing, erratic_signal and questionable; the test checks that they do. Past
# days, and recent: the hub refuses readings from more than a year ago (too_old).
START = date.today() - timedelta(days=7)
SPEC = CohortSpec(3, 3, 1849, START, GroupChoice.MIXED)
BLE_HOMES = 2
SPEED = 3 * 86400 / 8  # three days in about eight seconds
MODELS = {
    "VV-Sim PX1 fingertip oximeter", "VV-Sim BP2 upper-arm monitor", "VV-Sim WS1 scale (users)",
    "VV-Sim TH1 ear thermometer", "VV-Sim TH2 ear thermometer (no clock)",
}  # fmt: skip
ZONE = ZoneInfo("Europe/Copenhagen")  # the cohort's and the gateways' zone
FLAGS = {Flag.OTHER_USER, Flag.DEVICE_TIME_MISSING, Flag.ERRATIC_SIGNAL, Flag.QUESTIONABLE}

Key = tuple[str, str, str, str]  # gateway, device address, kind, measured_at


def key(gateway_id: str, address: str, kind: str, measured_at: object) -> Key:
    return gateway_id, address, kind, str(measured_at)


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ble_homes_publish_exactly_the_cohort_through_the_gateway(
    stack: Stack, tmp_path: Path, ingest: IngestService
) -> None:
    cohort = write_cohort(tmp_path / "cohort", SPEC).path
    homes = list(iter_homes(cohort))
    ble_gateways = {h.gateway_id for h in homes[:BLE_HOMES]}
    rows = list(iter_observation_rows(cohort))
    ble_rows = {key(r.gateway_id, r.device_address, r.kind.value, r.measured_at): r
                for r in rows if r.gateway_id in ble_gateways}  # fmt: skip
    direct = {(r.gateway_id, str(r.id)): (r.kind.value, r.value, r.measured_at)
              for r in rows if r.gateway_id not in ble_gateways}  # fmt: skip
    # The cohort exercises what the BLE path must carry.
    assert {r.device_model for r in ble_rows.values()} == MODELS
    assert FLAGS <= {f for r in ble_rows.values() for f in r.flags}
    assert len(ble_rows) > 40 and len(direct) > 10
    # Every reading is expressible exactly (checked without any radio first).
    for home in homes[:BLE_HOMES]:
        for reading in readings_of(home):
            encoded = encode_reading(reading, ZONE)
            assert (encoded.inexact, encoded.refused) == ((), None), reading

    watcher = connect(stack.settings.mqtt_port, "vv-sim", stack.secrets()["vv-sim"],
                      subscribe="vv/v1/gw/+/obs")  # fmt: skip
    got: dict[Key, Observation] = {}
    got_direct: dict[tuple[str, str], tuple] = {}
    try:
        stats = run_fleet(
            database_url=stack.database_url(), host="127.0.0.1",
            port=stack.settings.mqtt_tls_port, tls_ca=stack.paths.ca_cert,
            cohort_dir=str(cohort), speed=SPEED,
            on_provisioned=lambda: watcher.sync_broker_users(stack),
            ble_homes=BLE_HOMES, settings=stack.settings, ble_dir=tmp_path / "gateways",
        )  # fmt: skip

        def enough() -> bool:
            return len(got) >= len(ble_rows) and len(got_direct) >= len(direct)

        for gw, o in received_observations(watcher, enough):
            if gw in ble_gateways:
                got[key(gw, o.device.address, o.kind.value, o.measured_at)] = o
            else:
                got_direct[(gw, str(o.id))] = (o.kind.value, o.value, o.measured_at)
    finally:
        watcher.close()

    # Direct homes: unchanged path, exactly the cohort.
    assert stats.homes == len(homes) - BLE_HOMES
    assert stats.readings_acked == len(direct)
    assert got_direct == direct
    # BLE homes: every reading measured by a device, stored by its home's gateway, acknowledged.
    ble = stats.ble
    assert ble is not None and ble.homes == BLE_HOMES
    assert ble.readings_sent == ble.readings == sum(len(readings_of(h)) for h in homes[:2])
    assert ble.observations_stored == ble.observations_acked == len(ble_rows)
    assert (dict(ble.inexact), ble.unsendable) == ({}, 0)
    for home in homes[:BLE_HOMES]:  # each gateway its own directory, outbox and pairing list
        assert ble.stored_by_gateway[home.gateway_id] == len(home.rows)
        with PairingList(tmp_path / "gateways" / home.gateway_id / PAIRING_FILE) as pairing:
            paired = {d.address for d in pairing.devices()}
        assert paired == {d.address for d in home.patient.devices}
    assert set(got) == set(ble_rows)
    for k, row in ble_rows.items():
        check(row, got[k])
    # One reading id per device reading, shared by its parts (BP: 4, oximeter: 2).
    parts: dict[object, set[Key]] = defaultdict(set)
    for k, o in got.items():
        parts[o.reading_id].add(k)
    cohort_parts: dict[object, set[Key]] = defaultdict(set)
    for k, r in ble_rows.items():
        cohort_parts[r.reading_id or r.id].add(k)
    assert sorted(map(sorted, parts.values())) == sorted(map(sorted, cohort_parts.values()))


def check(row: ObservationRow, o: Observation) -> None:
    """One observation as the gateway published it against its cohort row.

    Values: every cohort value is a multiple of its device's resolution (1 %, 1 /min,
    1 mmHg, 0.05 or 0.1 kg, 0.1 Cel), which is a whole number of SIG steps (SFLOAT at exponent
    0, weight in 0.005 kg, temperature FLOAT at exponent -1), so the bytes carry it exactly;
    the tolerance only allows for binary floating point.
    """
    assert abs(o.value - row.value) <= VALUE_TOLERANCE, (row, o)
    assert (o.kind, o.unit, o.measured_at, o.time_source, set(o.flags), o.body_site) == (
        row.kind, row.unit, row.measured_at, row.time_source, set(row.flags), row.body_site
    ), row  # fmt: skip
    # Same gateway, device and measured time: the hub's stable id is the cohort's.
    assert o.id == row.id
    # The tablet's clock stood at the cohort's receive time while the reading came in.
    assert o.received_at == row.received_at
    # Through the gateway: the device model and serial come from Device Information.
    assert o.device.model == row.device_model and o.device.serial is not None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vitalvagt.cli", "simulate", "fleet", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=None if env is None else {**os.environ, **env})  # fmt: skip


@pytest.mark.parametrize("k", ["4", "-1"])
def test_cli_refuses_more_ble_homes_than_homes_or_fewer_than_none(k: str) -> None:
    done = _cli("--homes", "3", "--ble-homes", k)
    assert done.returncode == 2
    assert f"--ble-homes {k} must be between 0 and the fleet's 3 homes" in done.stderr


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cli_reports_the_ble_homes_separately(stack: Stack, ingest: IngestService) -> None:
    env = stack_env(stack)
    done = _cli("--homes", "2", "--ble-homes", "1", "--days", "1", "--seed", "3",
                "--start", START.isoformat(), "--speed", "1e9", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    direct = re.search(r"fleet done: 1 direct homes, (\d+) readings", done.stdout)
    ble = re.search(r"BLE homes done: 1 homes, (\d+) of (\d+) readings .* (\d+) of (\d+) "
                    r"observations acknowledged by the broker; 0 not sendable; not exact over "
                    r"BLE: none", done.stdout)  # fmt: skip
    assert direct and ble, done.stdout
    assert int(direct[1]) > 0 and ble[1] == ble[2] and ble[3] == ble[4] and int(ble[3]) > 0


def test_readings_not_exact_over_ble_are_counted_by_reason(tmp_path: Path) -> None:
    home = next(iter_homes(write_cohort(tmp_path / "c", SPEC).path))
    by_type = {r.device.type.value: r for r in readings_of(home)}
    oxi, thermo = by_type["oximeter"], by_type["thermometer"]
    assert encode_reading(oxi, ZONE).inexact == ()
    # A flag the PLX characteristic has no bit for, and a value off the device's 0.1 Cel grid.
    no_bit = replace(oxi, rows=tuple(replace(r, flags=(Flag.CUFF_TOO_LOOSE,)) for r in oxi.rows))
    assert encode_reading(no_bit, ZONE).inexact == ("cuff_too_loose has no bit in 2A5E",)
    off_grid = replace(thermo, rows=(replace(thermo.rows[0], value=36.95),))
    assert encode_reading(off_grid, ZONE).inexact == ("temperature value not exact in 2A1C",)
    # A value the decoder refuses as implausible is not sent at all.
    refused = encode_reading(replace(thermo, rows=(replace(thermo.rows[0], value=45.0),)), ZONE)
    assert refused.refused is not None and "plausible" in refused.refused
