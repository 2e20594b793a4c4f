"""The emulated devices' Battery Service over bumble's stack, seen through bleak's public API:
a level that drains over the simulated time and notifies, a battery change, a device without
the service and one whose level does not notify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from bleak import BleakClient
from bleak.uuids import normalize_uuid_16

from simulator.ble_battery import EmulatedBattery
from simulator.ble_devices import PulseOximeter, Thermometer, WeightScale
from simulator.ble_home import EmulatedHome
from tests.simulator.test_ble_bumble import Inbox, find

pytestmark = pytest.mark.timeout(30)

BATTERY_SERVICE, BATTERY_LEVEL = normalize_uuid_16(0x180F), normalize_uuid_16(0x2A19)


class SimTime:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_level_drains_over_the_simulated_time_not_below_zero() -> None:
    sim = SimTime()
    battery = EmulatedBattery(90, drain_per_day=3.0, sim_time=sim)
    assert battery.level == 90
    sim.now += timedelta(hours=7)  # 0.875 points: still 90 on the device's whole percent
    assert battery.level == 90
    sim.now += timedelta(hours=1)
    assert battery.level == 89
    sim.now += timedelta(days=10)
    assert battery.level == 59
    sim.now += timedelta(days=365)
    assert battery.level == 0
    battery.level = 100  # a battery change
    assert battery.level == 100
    battery.level = 150  # an invalid level, for tests: kept as set
    sim.now += timedelta(days=3)
    assert battery.level == 150
    with pytest.raises(ValueError, match="one byte"):
        battery.level = 256


@pytest.fixture
async def sim() -> SimTime:
    return SimTime()


@pytest.fixture
async def home(sim: SimTime) -> AsyncIterator[EmulatedHome]:
    devices = [
        PulseOximeter(battery=EmulatedBattery(80, check_s=0.05, sim_time=sim)),
        WeightScale(battery=False),
        Thermometer(battery=EmulatedBattery(45, notify=False)),
    ]
    async with EmulatedHome(devices) as h:
        yield h


async def test_the_battery_level_reads_and_notifies_as_it_drains(
    home: EmulatedHome, sim: SimTime
) -> None:
    oxi = home.get(PulseOximeter)
    assert oxi.battery is not None
    async with home.central() as central:
        scanner, client_backend = central.backends()
        async with BleakClient(await find(scanner, oxi), backend=client_backend) as client:
            char = client.services.get_service(BATTERY_SERVICE).get_characteristic(BATTERY_LEVEL)
            assert char is not None and set(char.properties) >= {"read", "notify"}
            assert await client.read_gatt_char(char) == bytes([80])
            inbox = Inbox()
            await client.start_notify(char, inbox)
            assert await inbox.next() == bytes([80])  # the level, once subscribed
            sim.now += timedelta(days=1)
            assert await inbox.next() == bytes([77])  # drained: notified
            assert await inbox.quiet(0.3)  # unchanged: nothing more
            oxi.battery_level = 100
            assert await inbox.next() == bytes([100])
            assert await oxi.battery.notify(b"\x96")  # any bytes, for tests
            assert await inbox.next() == b"\x96"
            assert await client.read_gatt_char(char) == bytes([100])
            assert oxi.battery.sent[-2:] == [bytes([100]), b"\x96"]


async def test_a_device_without_the_service_and_one_that_does_not_notify(
    home: EmulatedHome,
) -> None:
    scale, thermo = home.get(WeightScale), home.get(Thermometer)
    assert scale.battery is None and scale.battery_level == 0
    with pytest.raises(RuntimeError, match="no Battery Service"):
        scale.battery_level = 50
    async with home.central() as central:
        scanner, client_backend = central.backends()
        async with BleakClient(await find(scanner, scale), backend=client_backend) as client:
            assert client.services.get_service(BATTERY_SERVICE) is None
        async with BleakClient(await find(scanner, thermo), backend=client_backend) as client:
            char = client.services.get_service(BATTERY_SERVICE).get_characteristic(BATTERY_LEVEL)
            assert char is not None and set(char.properties) == {"read"}
            assert await client.read_gatt_char(char) == bytes([45])
            assert thermo.battery is not None and not await thermo.battery.notify()
