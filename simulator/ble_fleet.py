"""BLE homes of a fleet: cohort readings through emulated devices and the real gateway code.

A direct fleet home (simulator/fleet.py) publishes the cohort's wire batches itself. A BLE
home instead runs what a real home runs: its cohort devices as emulated bumble peripherals
(simulator/ble_devices.py) on the home's own radio (simulator/ble_home.py), and an unchanged
``GatewayApp`` with its own pairing list, outbox and notices in its own directory, its own
gateway id and password, reading the devices through bleak's bumble backend
(simulator/bumble_backend.py). When a cohort
reading is due on the fleet clock, the matching device sends the Bluetooth SIG bytes a real
device would send for it (simulator/sig_encoders.py); the gateway decodes, stores and
publishes it like any other.

Time. Device time stamps carry the cohort's ``measured_at`` (local time in the gateway's
zone, whole seconds). The gateway's clock is the simulated tablet's: the fleet clock, held
at the reading's cohort ``received_at`` while that reading is delivered, so the gateway's
receive time, and the measured time of a device without a clock, equal the cohort's.

Each reading's bytes are decoded again before sending (``gateway.decoding.decode``, pure):
a reading whose value, flags or time would not come out as in the cohort is still sent and
counted by reason in ``BleFleetStats.inexact``; one the decoder refuses is not sent and
counted in ``unsendable``. Not replayed: the cohort's uplink outages (``sent_at``); a BLE
home's gateway publishes as soon as it has a reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from pydantic import SecretStr

from gateway.app import GatewayApp
from gateway.decoders import BP_STATUS_BITS, PLX_DEVICE_STATUS_BITS, PLX_MEAS_STATUS_BITS
from gateway.decoding import decode
from gateway.errors import DecodeError
from gateway.pairing import PAIRING_FILE, PairingList
from gateway.publisher import BrokerConfig
from gateway.readings import device_time_to_utc
from simulator import ble_devices as emu
from simulator.ble_battery import EmulatedBattery
from simulator.ble_home import EmulatedHome
from simulator.cohort_format import DeviceRecord, Home, ObservationRow
from simulator.errors import SimulatorError
from simulator.fleet import Fleet, FleetClock
from simulator.fleet_stats import BleFleetStats, FleetStats
from simulator.sig_encoders import encode_bp, encode_plx_spot, encode_temperature, encode_weight
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import Kind
from vitalvagt.observation import TimeSource
from vitalvagt.quality import Flag
from vitalvagt.settings import Settings, local_zone

log = logging.getLogger(__name__)

PATIENT_SLOT = 1  # the patient's user slot on a scale with user ids
OTHER_SLOT = 2  # anyone else in the household
VALUE_TOLERANCE = 1e-9  # cohort values lie on the SIG grid: only float representation differs
CONNECT_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 30.0
PUBLISH_TIMEOUT_S = 60.0

# Characteristic each device type sends its readings on, and the emulated device for it.
CHARACTERISTIC = {
    DeviceType.BP: "2A35",
    DeviceType.OXIMETER: "2A5E",
    DeviceType.SCALE: "2A9D",
    DeviceType.THERMOMETER: "2A1C",
}
_DEVICE_CLASS: dict[DeviceType, type[emu.EmulatedDevice]] = {
    DeviceType.BP: emu.BloodPressureMonitor,
    DeviceType.OXIMETER: emu.PulseOximeter,
    DeviceType.SCALE: emu.WeightScale,
    DeviceType.THERMOMETER: emu.Thermometer,
}
_PAIRING_TYPE = {
    DeviceType.BP: "bp",
    DeviceType.OXIMETER: "oximeter",
    DeviceType.SCALE: "scale",
    DeviceType.THERMOMETER: "thermometer",
}
_BP_FLAGS = frozenset(BP_STATUS_BITS.values()) | {Flag.PULSE_ABOVE_RANGE, Flag.PULSE_BELOW_RANGE}
_PLX_MEAS_FLAGS = frozenset(PLX_MEAS_STATUS_BITS.values())
_PLX_DEVICE_FLAGS = frozenset(PLX_DEVICE_STATUS_BITS.values())
# Flags the gateway adds itself, expressed by what the device leaves out or sends.
_GATEWAY_FLAGS = frozenset({Flag.DEVICE_TIME_MISSING, Flag.OTHER_USER})


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class BleReading:
    """One cohort reading: the parts one device sent at one moment."""

    device: DeviceRecord
    rows: tuple[ObservationRow, ...]

    @property
    def received_at(self) -> datetime:
        return self.rows[0].received_at

    @property
    def measured_at(self) -> datetime:
        return self.rows[0].measured_at

    def value(self, kind: Kind) -> float:
        return next(r.value for r in self.rows if r.kind is kind)


def readings_of(home: Home) -> list[BleReading]:
    """The home's cohort rows grouped into device readings, in the order the gateway gets them.

    The parts of one reading share device and measured time (the stable id has both), also
    the single-part readings that have no reading id.
    """
    devices = {d.address: d for d in home.patient.devices}
    groups: dict[tuple[str, datetime], list[ObservationRow]] = {}
    for row in home.rows:
        groups.setdefault((row.device_address, row.measured_at), []).append(row)
    readings = [BleReading(devices[addr], tuple(rows)) for (addr, _), rows in groups.items()]
    readings.sort(key=lambda r: (r.received_at, r.device.address))
    return readings


@dataclass(frozen=True, slots=True)
class Encoded:
    payload: bytes
    inexact: tuple[str, ...] = ()  # why the gateway's observations will differ from the cohort
    refused: str | None = None  # the gateway's decoder refuses the bytes: not sent


def _local(moment: datetime, zone: tzinfo) -> datetime:
    """The naive wall-clock time a device clock set to ``zone`` shows, in whole seconds."""
    return moment.astimezone(zone).replace(tzinfo=None, microsecond=0)


def _payload(
    reading: BleReading, flags: frozenset[Flag], stamp: datetime | None, user_id: int | None
) -> tuple[bytes, frozenset[Flag]]:
    """The device's bytes, and the flags its characteristic has bits for."""
    value = reading.value
    kind = reading.device.type
    if kind is DeviceType.BP:
        pulse = next((r.value for r in reading.rows if r.kind is Kind.PULSE), None)
        status = flags & _BP_FLAGS or None
        payload = encode_bp(
            value(Kind.BP_SYSTOLIC), value(Kind.BP_DIASTOLIC), value(Kind.BP_MEAN),
            timestamp=stamp, pulse=pulse, user_id=user_id, status=status,
        )  # fmt: skip
        return payload, _BP_FLAGS
    if kind is DeviceType.OXIMETER:
        payload = encode_plx_spot(
            value(Kind.SPO2), value(Kind.PULSE), timestamp=stamp,
            meas_status=flags & _PLX_MEAS_FLAGS or None,
            device_status=flags & _PLX_DEVICE_FLAGS or None,
        )  # fmt: skip
        return payload, _PLX_MEAS_FLAGS | _PLX_DEVICE_FLAGS
    if kind is DeviceType.SCALE:
        return encode_weight(value(Kind.WEIGHT), timestamp=stamp, user_id=user_id), frozenset()
    # Exponent -1: the thermometer's 0.1 Cel resolution, as its firmware would send it.
    site = reading.rows[0].body_site
    payload = encode_temperature(value(Kind.TEMPERATURE), exponent=-1, timestamp=stamp, site=site)
    return payload, frozenset()


def encode_reading(reading: BleReading, zone: tzinfo) -> Encoded:
    """The SIG bytes the device sends for a cohort reading, checked by decoding them again."""
    uuid = CHARACTERISTIC[reading.device.type]
    flags = frozenset(f for r in reading.rows for f in r.flags)
    device_clock = reading.rows[0].time_source is TimeSource.DEVICE
    stamp = _local(reading.measured_at, zone) if device_clock else None
    inexact: list[str] = []
    user_id = None
    if reading.device.user_ids:
        user_id = OTHER_SLOT if Flag.OTHER_USER in flags else PATIENT_SLOT
    elif Flag.OTHER_USER in flags:
        inexact.append("other_user on a device without user ids")
    try:
        payload, expressible = _payload(reading, flags, stamp, user_id)
    except ValueError as exc:  # e.g. a value beyond what the SIG number format holds
        return Encoded(b"", tuple(inexact), refused=str(exc))
    inexact += [f"{f} has no bit in {uuid}" for f in sorted(flags - expressible - _GATEWAY_FLAGS)]
    try:
        decoded = decode(uuid, payload)
    except DecodeError as exc:
        return Encoded(payload, tuple(inexact), refused=str(exc))
    for row in reading.rows:
        m = decoded.get(row.kind)
        if m is None or abs(m.value - row.value) > VALUE_TOLERANCE:
            inexact.append(f"{row.kind} value not exact in {uuid}")
    if set(decoded.flags) != flags & expressible:
        inexact.append(f"status flags changed in {uuid}")
    if device_clock and (
        decoded.device_time is None
        or device_time_to_utc(decoded.device_time, zone) != reading.measured_at
    ):
        # E.g. the repeated hour of the autumn DST change, or a time with sub-seconds.
        inexact.append("measured_at not expressible as local device time")
    return Encoded(payload, tuple(dict.fromkeys(inexact)))


def emulated_device(
    record: DeviceRecord, *, sim_time: Callable[[], datetime] | None = None
) -> emu.EmulatedDevice:
    """The emulated peripheral of a cohort device: its address, model, clock or none, and a
    battery that drains over ``sim_time`` (the fleet's clock)."""
    cls = _DEVICE_CLASS[record.type]
    info = emu.DeviceInfo(model=record.model, serial=record.address[-8:].replace(":", ""))
    # A device without a clock has no Current Time service for the gateway to set.
    clock = None if record.has_clock else False
    battery = EmulatedBattery(sim_time=sim_time)
    return cls(address=record.address, info=info, current_time=clock, battery=battery)


def pair_home(directory: Path, records: Sequence[DeviceRecord]) -> None:
    """The home gateway's pairing list: the home's devices, the patient's slot on a scale."""
    with PairingList(directory / PAIRING_FILE) as pairing:
        for record in records:
            pairing.add(
                record.address,
                _PAIRING_TYPE[record.type],
                name=_DEVICE_CLASS[record.type].DEFAULT_NAME,
                user_id=PATIENT_SLOT if record.user_ids else None,
            )


# --------------------------------------------------------------------------- running


class TabletClock:
    """The simulated tablet's clock: the fleet clock, or the time a delivery is held at."""

    def __init__(self, fleet_clock: FleetClock) -> None:
        self._fleet = fleet_clock
        self.held: datetime | None = None

    def __call__(self) -> datetime:
        return self.held or self._fleet.now()


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise SimulatorError(f"{what} within {timeout_s:g} s") from None


class BleHome:
    """One home over BLE: emulated devices on the home's radio and the home's gateway."""

    def __init__(
        self, home: Home, password: str, *, settings: Settings, host: str, port: int,
        directory: Path, clock: FleetClock, stats: BleFleetStats,
        tls_ca: str | Path | None = None,
    ) -> None:  # fmt: skip
        self.home, self.gateway_id = home, home.gateway_id
        self.dir = directory
        self.clock, self.tablet = clock, TabletClock(clock)
        self.stats = stats
        self.settings = settings.model_copy(update={
            "gateway_id": home.gateway_id, "gateway_dir": directory, "ble_transport": "bumble",
            "mqtt_host": host, "mqtt_tls_port": port, "mqtt_password": SecretStr(password),
            "mqtt_tls_ca": Path(tls_ca) if tls_ca else None,
        })  # fmt: skip
        # The gateway listener (TLS): the home's gateway as a tablet runs it.
        self.broker = BrokerConfig(host=host, port=port, gateway_id=home.gateway_id,
                                   password=password,
                                   tls_ca=Path(tls_ca) if tls_ca else None)  # fmt: skip
        self.zone = local_zone(self.settings)
        self.readings = readings_of(home)
        self.encoded = [encode_reading(r, self.zone) for r in self.readings]
        stats.readings += len(self.readings)
        stats.observations += len(home.rows)
        for enc in self.encoded:
            stats.inexact.update(enc.inexact)
            stats.unsendable += enc.refused is not None

    async def run(self) -> None:
        gw = self.gateway_id
        # A fresh directory: a previous run's outbox must not publish into this one.
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        devices = {r.address: emulated_device(r, sim_time=self.clock.now)
                   for r in self.home.patient.devices}  # fmt: skip
        pair_home(self.dir, self.home.patient.devices)
        async with contextlib.AsyncExitStack() as stack:
            radio = await stack.enter_async_context(EmulatedHome(list(devices.values())))
            central = await stack.enter_async_context(radio.central())
            app = await stack.enter_async_context(
                GatewayApp(self.settings, broker=self.broker, backends=central.backends(),
                           clock=self.tablet)
            )  # fmt: skip
            await _until(
                lambda: all(d.subscribed() for d in devices.values()),
                CONNECT_TIMEOUT_S, f"gateway {gw}: not every device connected and subscribed",
            )  # fmt: skip
            log.info("gateway %s: %d devices connected over BLE", gw, len(devices))
            for reading, enc in zip(self.readings, self.encoded, strict=True):
                if enc.refused is not None:
                    log.warning(
                        "gateway %s: %s reading at %s not sendable: %s",
                        gw,
                        reading.device.address,
                        reading.measured_at,
                        enc.refused,
                    )
                    continue
                await self._wait_due(reading.received_at)
                await self._deliver(devices[reading.device.address], reading, enc.payload)
            await _until(lambda: app.outbox.stats().pending == 0, PUBLISH_TIMEOUT_S,
                         f"gateway {gw}: outbox not published")  # fmt: skip
            stored = sum(s.observations for s in app.ble.stats().values())
            self.stats.observations_stored += stored
            self.stats.stored_by_gateway[gw] = stored
            self.stats.observations_acked += app.publisher.acked_readings
        self.stats.homes_done += 1

    async def _wait_due(self, due: datetime) -> None:
        while (now := self.clock.now()) < due:
            # In simulated seconds / speed, but at least real time once the clock is capped.
            ahead_s = (due - now).total_seconds()
            real_s = max(ahead_s / self.clock.speed, due.timestamp() - time.time())
            await asyncio.sleep(min(max(real_s, 0.005), 1.0))

    async def _deliver(
        self, device: emu.EmulatedDevice, reading: BleReading, payload: bytes
    ) -> None:
        # Held while the indication is in flight: the gateway stamps the cohort's receive time.
        self.tablet.held = reading.received_at
        try:
            if await device.measure(payload) is not emu.Delivery.SENT:
                # Link lost mid-indication: the device sends it again on the next link.
                await _until(
                    lambda: not device.queued,
                    DELIVERY_TIMEOUT_S,
                    f"gateway {self.gateway_id}: {device.address} reading not delivered",
                )
        finally:
            self.tablet.held = None
        self.stats.readings_sent += 1


class BleFleet:
    """The BLE homes of a fleet, all on one event loop, each with its own radio and gateway."""

    def __init__(
        self, homes: Sequence[Home], passwords: dict[str, str], *, settings: Settings, host: str,
        port: int, clock: FleetClock, directory: Path, tls_ca: str | Path | None = None,
    ) -> None:  # fmt: skip
        self.clock = clock
        self.stats = BleFleetStats(homes=len(homes))
        self.homes = [
            BleHome(h, passwords[h.gateway_id], settings=settings, host=host, port=port,
                    directory=directory / h.gateway_id, clock=clock, stats=self.stats,
                    tls_ca=tls_ca)
            for h in homes
        ]  # fmt: skip

    async def run(self) -> BleFleetStats:
        try:
            async with asyncio.TaskGroup() as tasks:  # one home failing stops the others
                for home in self.homes:
                    tasks.create_task(home.run(), name=f"ble-home-{home.gateway_id}")
        except ExceptionGroup as group:
            # The first failure, as the CLI reports a SimulatorError or GatewayError plainly.
            raise group.exceptions[0] from group
        return self.stats

    async def run_beside(
        self, fleet: Fleet, *, progress: Callable[[FleetStats], None] | None = None
    ) -> FleetStats:
        """Run the direct ``fleet`` in a thread and the BLE homes here, on the same clock."""
        fleet.stats.ble = self.stats
        direct = asyncio.create_task(asyncio.to_thread(fleet.run), name="direct-fleet")
        reporter = asyncio.create_task(self._report(fleet, progress), name="fleet-progress")
        try:
            await self.run()
            stats = await direct
        except BaseException:
            fleet.stop()  # the thread ends at its next check
            with contextlib.suppress(Exception):
                await direct
            raise
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        if progress:
            progress(stats)
        return stats

    async def _report(self, fleet: Fleet, progress: Callable[[FleetStats], None] | None) -> None:
        while progress is not None:
            await asyncio.sleep(1.0)
            progress(fleet.stats)


def inexact_summary(stats: BleFleetStats) -> str:
    """'none', or each reason with its count, for the summary line."""
    if not stats.inexact:
        return "none"
    return "; ".join(f"{n} x {reason}" for reason, n in stats.inexact.most_common())
