"""Battery levels in the gateway: the Battery Level's bytes checked, kept per device (also
across a restart), read and notified over bumble's stack from the emulated devices, and the
rule of when a change is worth a new status message (no flood).

The status message itself, over the real broker: tests/gateway/test_e2e.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import GatewayApp
from gateway.battery import BatteryLevel, BatteryReport, battery_level
from gateway.ble import BleManager
from gateway.errors import DecodeError
from gateway.outbox import Outbox
from gateway.pairing import PairingList
from simulator.ble_battery import EmulatedBattery
from simulator.ble_devices import PulseOximeter, Thermometer, WeightScale
from simulator.ble_home import EmulatedHome
from tests.gateway.test_app import CPH, RECEIVED, Clock, app_settings
from vitalvagt.devices import DeviceType

pytestmark = pytest.mark.timeout(30)

OXI = "D1:56:56:22:00:02"
SCALE = "D1:56:56:1D:00:04"


# --------------------------------------------------------------------------- the bytes


@given(st.binary(max_size=4))
def test_a_battery_level_is_one_byte_of_0_to_100(data: bytes) -> None:
    if len(data) == 1 and data[0] <= 100:
        assert battery_level(data) == data[0]
    else:
        with pytest.raises(DecodeError):
            battery_level(data)


# --------------------------------------------------------------------------- the manager


@pytest.fixture
def pairing(tmp_path: Path) -> AsyncIterator[PairingList]:
    with PairingList(tmp_path / "pairing.db") as pl:
        pl.add(OXI, DeviceType.OXIMETER, name="VV-OXI")
        pl.add(SCALE, DeviceType.SCALE, name="VV-WSC", user_id=1)
        yield pl


def manager(pairing: PairingList, outbox: Outbox, clock: Clock, **kw: object) -> BleManager:
    m = BleManager(gateway_id="gw-battery-test", pairing=pairing, outbox=outbox,
                   backends=(None, None), zone=CPH, clock=clock, **kw)  # type: ignore[arg-type]  # fmt: skip
    m.reload()
    return m


def test_a_valid_level_is_kept_with_its_time_and_an_invalid_one_dropped_by_name(
    tmp_path: Path, pairing: PairingList, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with Outbox(tmp_path / "outbox") as outbox, caplog.at_level(logging.WARNING):
        m = manager(pairing, outbox, clock)
        assert m.handle_battery(OXI, b"\x57") == 87
        clock.now += timedelta(minutes=1)
        assert m.handle_battery(OXI, bytes([150])) is None  # not a percent
        assert m.handle_battery(OXI, b"") is None
        assert m.handle_battery(OXI, b"\x50\x00") is None  # not one byte
        assert m.handle_battery("00:00:00:00:00:99", b"\x50") is None  # not paired
        assert m.battery(OXI) == BatteryLevel(87, RECEIVED)  # the invalid ones changed nothing
        assert m.stats()[OXI].battery_invalid == 3
        assert m.battery(SCALE) is None  # never reported one: normal
        assert outbox.stats().pending == 0  # a battery level is not a reading
    dropped = [r.getMessage() for r in caplog.records if "invalid battery level" in r.message]
    assert len(dropped) == 3 and all(OXI in line for line in dropped)
    assert "150 is not a percent (0-100)" in dropped[0]
    saved = pairing.get(OXI)
    assert saved is not None and (saved.battery_level, saved.battery_at) == (87, RECEIVED)


def test_levels_survive_a_restart_and_an_old_pairing_list_gains_their_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)  # a pairing list from before battery_at
    db.execute(
        "CREATE TABLE devices (address TEXT PRIMARY KEY, type TEXT NOT NULL, name TEXT,"
        " manufacturer TEXT, model TEXT, serial TEXT, firmware TEXT, profile TEXT,"
        " requires_bonding INTEGER NOT NULL DEFAULT 0, user_id INTEGER, paired_at TEXT NOT NULL,"
        " last_seen TEXT, battery_level INTEGER)"
    )
    db.execute("INSERT INTO devices (address, type, paired_at, battery_level)"
               " VALUES (?, 'oximeter', ?, 40)", (OXI, RECEIVED.isoformat()))  # fmt: skip
    db.commit()
    db.close()
    with PairingList(path) as pl:
        old = pl.get(OXI)
        assert old is not None and (old.battery_level, old.battery_at) == (40, None)
        pl.set_battery(OXI, 39, RECEIVED)
    with PairingList(path) as pl, Outbox(tmp_path / "outbox") as outbox:
        report = BatteryReport()
        m = manager(pl, outbox, Clock(), battery=report)
        assert m.battery(OXI) == BatteryLevel(39, RECEIVED)
        (listed,) = report.for_status()
        assert (listed.address, listed.battery_level, listed.battery_at) == (OXI, 39, RECEIVED)


# --------------------------------------------------------------------------- when to publish


def keep(report: BatteryReport, address: str, level: int, at: datetime) -> None:
    """What ``record`` keeps, without its timer (these tests have no event loop)."""
    report._models.setdefault(address, None)
    report._levels[address] = BatteryLevel(level, at)


class Ticks:
    """A monotonic clock moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_when_a_change_is_worth_a_status() -> None:
    ticks = Ticks()
    report = BatteryReport(clock=ticks)
    at = RECEIVED
    keep(report, OXI, 80, at)
    assert report.due_in() == 0.0  # no status yet: the one on connecting carries it
    report.for_status()
    assert report.due_in() is None
    keep(report, SCALE, 60, at)
    assert report.due_in() == report.first_level_s == 10.0  # a first level: soon
    report.for_status()
    keep(report, OXI, 78, at + timedelta(minutes=1))
    assert report.due_in() == report.refresh_s == 3600.0  # two points: within the hour
    keep(report, OXI, 75, at + timedelta(minutes=2))
    assert report.due_in() == report.step_interval_s == 300.0  # five points: in 5 minutes
    ticks.t += 299
    assert report.due_in() == pytest.approx(1.0)
    ticks.t += 1
    assert report.due_in() == 0.0
    report.for_status()
    keep(report, OXI, 75, at + timedelta(minutes=9))
    assert report.due_in() == 3600.0  # the same level read again: its time, within the hour


def test_a_level_that_notifies_every_second_makes_a_status_now_and_then_not_every_second() -> None:
    ticks = Ticks()
    report = BatteryReport(clock=ticks)
    report.for_status()  # the status on connecting
    statuses = 0
    for second in range(3 * 3600):  # three hours, a value a second
        ticks.t += 1
        # A cuff's cells sag while it pumps: the level jumps between 50 and 57.
        level = 50 if second % 2 else 57
        keep(report, OXI, level, RECEIVED + timedelta(seconds=second))
        if report.due_in() == 0.0:
            report.for_status()
            statuses += 1
    assert statuses <= 3 * 12  # at most one per five minutes
    # A fast drain (a point every 10 minutes, a continuous oximeter's) goes out each time it
    # adds up to five points, not a point at a time.
    slow = BatteryReport(clock=ticks)
    slow.for_status()
    sent = []
    for minute in range(6 * 60):
        ticks.t += 60
        keep(slow, OXI, 100 - minute // 10, RECEIVED + timedelta(minutes=minute))
        if slow.due_in() == 0.0:
            sent.append(slow.for_status()[0].battery_level)
    assert sent[0] == 100 and 7 <= len(sent) <= 9
    assert all(a - b >= 5 for a, b in itertools.pairwise(sent))


async def test_the_report_publishes_on_its_own_timer() -> None:
    published: list[tuple[int | None, ...]] = []

    def publish() -> bool:
        published.append(tuple(d.battery_level for d in report.for_status()))
        return True

    report = BatteryReport(publish=publish, first_level_s=0.05, step_interval_s=0.3,
                           refresh_s=0.6)  # fmt: skip
    report.for_status()  # the status on connecting, without levels
    now = datetime.now(UTC)
    report.record(OXI, 90, now, model="PO-60")
    report.record(SCALE, 70, now, model=None)  # both first levels: one status
    await asyncio.sleep(0.15)
    assert published == [(90, 70)]
    report.record(OXI, 89, now + timedelta(seconds=1), model="PO-60")  # small: within 0.6 s
    report.record(OXI, 80, now + timedelta(seconds=2), model="PO-60")  # large: within 0.3 s
    await asyncio.sleep(0.1)
    assert len(published) == 1
    await asyncio.sleep(0.35)
    assert published == [(90, 70), (80, 70)]
    await asyncio.sleep(0.7)
    assert len(published) == 2  # nothing new: nothing sent
    report.close()


async def test_without_a_broker_nothing_is_lost_the_next_connection_carries_it() -> None:
    report = BatteryReport(publish=lambda: False, first_level_s=0.01)
    report.for_status()
    report.record(OXI, 55, datetime.now(UTC), model=None)
    await asyncio.sleep(0.05)
    assert report.statuses_requested == 0
    assert [d.battery_level for d in report.for_status()] == [55]


# --------------------------------------------------------------------------- over bumble


@pytest.fixture
async def home() -> AsyncIterator[EmulatedHome]:
    sim = SimTime()
    oxi = PulseOximeter(battery=EmulatedBattery(90, check_s=0.05, sim_time=sim))
    oxi.sim = sim  # type: ignore[attr-defined]
    devices = [oxi, WeightScale(battery=False), Thermometer(battery=EmulatedBattery(33,
               notify=False))]  # fmt: skip
    async with EmulatedHome(devices) as h:
        yield h


class SimTime:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_gateway_reads_and_follows_the_battery_over_bumble(
    tmp_path: Path, home: EmulatedHome, caplog: pytest.LogCaptureFixture
) -> None:
    oxi, scale, thermo = home.get(PulseOximeter), home.get(WeightScale), home.get(Thermometer)
    with PairingList(tmp_path / "gw" / "pairing.db") as pl:
        pl.add(oxi.address, "oximeter")
        pl.add(scale.address, "scale", user_id=1)
        pl.add(thermo.address, "thermometer")
    settings = app_settings(tmp_path)
    async with home.central() as central, GatewayApp(settings, backends=central.backends()) as app:
        await until(lambda: all(d.subscribed() for d in home.devices))
        ble = app.ble
        await until(lambda: ble.battery(oxi.address) is not None)
        assert ble.battery(oxi.address).level == 90  # type: ignore[union-attr]
        # No Battery Service on the scale: no level, no error; the thermometer's level is
        # read once (its characteristic does not notify).
        assert ble.battery(scale.address) is None
        assert ble.battery(thermo.address).level == 33  # type: ignore[union-attr]
        assert all(s.connect_failures == 0 and s.errors == 0 for s in ble.stats().values())
        # The oximeter's level drains over the simulated time, and notifies.
        oxi.sim.now += timedelta(days=2)  # type: ignore[attr-defined]
        await until(lambda: ble.battery(oxi.address).level == 84)  # type: ignore[union-attr]
        oxi.battery_level = 100  # a battery change, notified at once
        await until(lambda: ble.battery(oxi.address).level == 100)  # type: ignore[union-attr]
        with caplog.at_level(logging.WARNING):
            assert oxi.battery is not None and await oxi.battery.notify(bytes([150]))
            await until(lambda: ble.stats()[oxi.address].battery_invalid == 1)
        assert ble.battery(oxi.address).level == 100  # type: ignore[union-attr]
        assert any(oxi.address in r.getMessage() and "invalid battery level" in r.message
                   for r in caplog.records)  # fmt: skip
        listed = {d.address: d.battery_level for d in app.battery.for_status()}
        assert listed == {oxi.address: 100, scale.address: None, thermo.address: 33}
        assert app.pairing.get(oxi.address).battery_level == 100  # type: ignore[union-attr]
