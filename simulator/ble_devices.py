"""Emulated Bluetooth LE health devices on bumble, for tests and demos without a radio.

Each device is a bumble ``Device`` with its own emulated controller on a shared in-process
``BumbleLink`` (simulator/bumble_radio.py). It advertises its health service UUID and a
local name, and carries Device Information, Battery and (where the real device has one)
Current Time services. The
measurement bytes are made by the caller (``simulator.sig_encoders``); a device only moves
them: ``measure(payload)`` indicates or notifies them, and keeps indicated readings while no
central listens, the way cuffs, scales and thermometers store readings for the next link.
The Battery Service (``battery``, simulator/ble_battery.py) drains over the simulated time
and notifies; ``battery=False`` leaves it out, as on a device without one.

Faults for tests: drop the link right before or while sending, send random bytes, lose the
link without a terminate (out of range), require bonding before subscribing.

A patient's set of devices is an ``EmulatedHome`` (simulator/ble_home.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from bumble import core, gatt, hci
from bumble.att import (
    ATT_INVALID_ATTRIBUTE_LENGTH_ERROR,
    ATT_READ_NOT_PERMITTED_ERROR,
    ATT_Error,
    Attribute,
)
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.data_types import CompleteListOf16BitServiceUUIDs, CompleteLocalName, Flags
from bumble.device import Connection, Device
from bumble.keys import MemoryKeyStore
from bumble.profiles.device_information_service import DeviceInformationService

from simulator.ble_battery import EmulatedBattery
from simulator.bumble_adapter import run_until_disconnected
from simulator.bumble_radio import BumbleLink

logger = logging.getLogger(__name__)

_LEGACY_ADV_MAX = 31
# Year 2000-01-01 00:00:00, a Saturday: what a device whose clock was never set reports.
CLOCK_NEVER_SET = bytes.fromhex("d0070101000000060000")


class Fault(enum.Enum):
    """One-shot faults, each applied to the next value the device sends."""

    DROP_BEFORE_SEND = "drop the link instead of sending"
    DROP_DURING_SEND = "send, then drop the link before the confirmation"
    RANDOM_BYTES = "send random bytes instead of the reading"


class Delivery(enum.Enum):
    SENT = "sent"  # indication confirmed, or notification handed to the radio
    QUEUED = "queued"  # stored on the device until a central subscribes
    DROPPED = "dropped"  # a live notification nobody listened to


@dataclass(frozen=True)
class DeviceInfo:
    """Device Information Service strings."""

    manufacturer: str = "Vitalvagt Sim"
    model: str = "SIM-1"
    serial: str = "0001"
    firmware: str = "1.0.0"


@dataclass(frozen=True)
class MeasurementSpec:
    uuid: int
    indicate: bool  # indicate (confirmed, stored while offline) or notify (live only)


@dataclass
class _Reading:
    spec: MeasurementSpec
    payload: bytes
    delivered: bool = False


class EmulatedDevice:
    """One emulated BLE health device; subclasses name the service and characteristics.

    ``open(link)`` powers it on and starts advertising; ``measure(payload)`` sends bytes
    made by the caller. A central may connect at any time; one link at a time, like the
    real devices.
    """

    SERVICE_UUID: ClassVar[int]
    MEASUREMENTS: ClassVar[tuple[MeasurementSpec, ...]]
    FEATURE: ClassVar[tuple[int, bytes] | None] = None  # read-only feature characteristic
    HAS_CURRENT_TIME: ClassVar[bool] = True
    DEFAULT_NAME: ClassVar[str]
    ADDRESS_PREFIX: ClassVar[str]  # random static addresses: first octet 0xC0..0xFF
    _serials: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(
        self,
        *,
        name: str | None = None,
        address: str | None = None,
        info: DeviceInfo | None = None,
        battery_level: int = 87,
        battery: EmulatedBattery | bool = True,
        requires_bonding: bool = False,
        current_time: bool | None = None,
        queue_limit: int = 50,
        advertising_interval_ms: float = 50.0,
        seed: int = 0,
    ) -> None:
        number = next(EmulatedDevice._serials)
        self.name = name or self.DEFAULT_NAME
        self.address = address or f"{self.ADDRESS_PREFIX}:{number % 256:02X}"
        self.info = info or DeviceInfo(serial=f"{number:04d}")
        # True: a Battery Service at ``battery_level``; False: none.
        if battery is True:
            battery = EmulatedBattery(battery_level)
        self.battery: EmulatedBattery | None = battery or None
        self.requires_bonding = requires_bonding
        self.has_current_time = self.HAS_CURRENT_TIME if current_time is None else current_time
        self.advertising_interval_ms = advertising_interval_ms
        self.clock = CLOCK_NEVER_SET
        self.clock_writes: list[bytes] = []
        self.sent: list[bytes] = []  # delivered: confirmed indications, handed-off notifications
        self.transmitted: list[bytes] = []  # every value put on the air, confirmed or not
        self.connections = 0
        self._queue: deque[_Reading] = deque(maxlen=queue_limit)
        self._faults: deque[Fault] = deque()
        self._rng = random.Random(seed)
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._link: BumbleLink | None = None
        self._controller: Controller | None = None
        self._device: Device | None = None
        self._connection: Connection | None = None
        self._characteristics: dict[int, gatt.Characteristic[bytes]] = {}
        if len(self._advertising_data()) > _LEGACY_ADV_MAX:
            raise ValueError(f"{self.name!r}: name too long for a 31-byte advertisement")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.address})"

    # -- lifecycle

    @contextlib.asynccontextmanager
    async def opened(self, link: BumbleLink) -> AsyncIterator[Self]:
        """The device powered on ``link`` for the block (``EmulatedHome`` does this for its
        devices)."""
        await self.open(link)
        try:
            yield self
        finally:
            await self.close()

    async def open(self, link: BumbleLink) -> None:
        if self._device is not None:
            raise RuntimeError(f"{self!r} is already open")
        self._link = link
        self._controller, host = link.attach_host(self.name)
        device = Device(name=self.name, address=hci.Address(self.address), host=host)
        device.keystore = MemoryKeyStore()  # bonds last while the device is open
        device.add_services(self._build_services(device))
        device.on(device.EVENT_CONNECTION, self._on_connection)
        await device.power_on()
        self._device = device
        await self.set_advertising(True)
        if self.battery is not None:
            self.battery.open(device, lambda: self._connection)
        logger.info("%s: %s open", self.address, self.name)

    async def close(self) -> None:
        device = self._device
        if device is None:
            return
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.battery is not None:
            await self.battery.close()
        await self.disconnect(
            hci.HCI_ErrorCode.REMOTE_DEVICE_TERMINATED_CONNECTION_DUE_TO_POWER_OFF_ERROR
        )
        with contextlib.suppress(core.BaseBumbleError):
            await device.stop_advertising()
        await device.power_off()
        if self._link is not None and self._controller is not None:
            self._link.detach(self._controller)
        self._device = self._controller = self._link = None
        self._connection = None

    # -- state

    @property
    def device(self) -> Device:
        if self._device is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._device

    @property
    def battery_level(self) -> int:
        """The Battery Level now (0 without a Battery Service)."""
        return 0 if self.battery is None else self.battery.level

    @battery_level.setter
    def battery_level(self, level: int) -> None:
        if self.battery is None:
            raise RuntimeError(f"{self!r} has no Battery Service")
        self.battery.level = level  # notified at once to a subscribed central

    @property
    def connected(self) -> bool:
        return self._connection is not None

    @property
    def queued(self) -> list[bytes]:
        return [reading.payload for reading in self._queue]

    def subscribed(self, uuid: int | None = None) -> bool:
        connection = self._connection
        return connection is not None and self._is_subscribed(connection, self._spec(uuid))

    def arm_fault(self, fault: Fault, count: int = 1) -> None:
        self._faults.extend([fault] * count)

    # -- radio actions

    async def set_advertising(self, on: bool) -> None:
        """Advertise (and so be connectable), restarting after every disconnection."""
        device = self.device
        if not on:
            await device.stop_advertising()
            return
        interval = self.advertising_interval_ms
        await device.start_advertising(
            advertising_data=self._advertising_data(),
            auto_restart=True,
            advertising_interval_min=interval,
            advertising_interval_max=interval,
        )

    async def disconnect(
        self, reason: int = hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR
    ) -> None:
        """The device ends the link cleanly (the central sees the reason)."""
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(core.BaseBumbleError, asyncio.TimeoutError):
            async with asyncio.timeout(5.0):
                await connection.disconnect(reason)

    async def go_out_of_range(self) -> None:
        """Vanish: stop advertising and lose the link without a terminate (supervision time-out)."""
        await self.set_advertising(False)
        if self._link is not None and self._controller is not None:
            self._link.drop_links(self._controller)

    async def come_back(self) -> None:
        await self.set_advertising(True)

    # -- measurements

    async def measure(self, payload: bytes, *, uuid: int | None = None) -> Delivery:
        """Send one reading's bytes on the measurement characteristic ``uuid``.

        Indicated readings are stored (oldest dropped beyond ``queue_limit``) until a
        subscribed central confirms them, so a link dropped mid-indication means the reading
        comes again on the next link: at-least-once, the gateway must deduplicate.
        Notified readings are live only and dropped when nobody listens.
        """
        spec = self._spec(uuid)
        if not spec.indicate:
            connection = self._connection
            if connection is None or not self._is_subscribed(connection, spec):
                return Delivery.DROPPED
            async with self._send_lock:
                sent = await self._send(connection, spec, bytes(payload))
            return Delivery.SENT if sent else Delivery.DROPPED
        if len(self._queue) == self._queue.maxlen:
            logger.warning("%s: store full, oldest reading dropped", self.address)
        reading = _Reading(spec, bytes(payload))
        self._queue.append(reading)
        await self._flush()
        return Delivery.SENT if reading.delivered else Delivery.QUEUED

    async def _flush(self) -> None:
        async with self._send_lock:
            while self._queue:
                reading = self._queue[0]
                connection = self._connection
                # In order: a later reading never overtakes an unconfirmed earlier one.
                if connection is None or not self._is_subscribed(connection, reading.spec):
                    return
                if not await self._send(connection, reading.spec, reading.payload):
                    return
                reading.delivered = True
                self._queue.popleft()

    async def _send(self, connection: Connection, spec: MeasurementSpec, payload: bytes) -> bool:
        device = self.device
        fault = self._faults.popleft() if self._faults else None
        if fault is Fault.RANDOM_BYTES:
            payload = self._rng.randbytes(self._rng.randint(1, 20))
        if fault is Fault.DROP_BEFORE_SEND:
            logger.info("%s: fault: dropping the link before sending", self.address)
            await self.disconnect()
            return False
        characteristic = self._characteristics[spec.uuid]
        if len(payload) > connection.att_mtu - 3:
            logger.warning("%s: %d bytes exceed ATT MTU, truncated", self.address, len(payload))
        send = (device.indicate_subscriber if spec.indicate else device.notify_subscriber)(
            connection, characteristic, payload
        )
        task = asyncio.ensure_future(send)
        if fault is Fault.DROP_DURING_SEND:
            # Let the PDU reach the controller first; the confirmation then never comes back.
            await asyncio.sleep(0)
            self.transmitted.append(payload)
            logger.info("%s: fault: dropping the link while sending", self.address)
            await self.disconnect()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return False
        self.transmitted.append(payload)
        try:
            done, _ = await run_until_disconnected(connection, task)
        except TimeoutError:
            logger.warning("%s: indication not confirmed in time", self.address)
            return False
        if done:
            self.sent.append(payload)
        return done

    def _schedule_flush(self) -> None:
        task = asyncio.create_task(self._flush(), name=f"flush-{self.address}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- bumble plumbing

    def _spec(self, uuid: int | None) -> MeasurementSpec:
        if uuid is None:
            return self.MEASUREMENTS[0]
        for spec in self.MEASUREMENTS:
            if spec.uuid == uuid:
                return spec
        raise ValueError(f"{self!r} has no measurement characteristic 0x{uuid:04X}")

    def _is_subscribed(self, connection: Connection, spec: MeasurementSpec) -> bool:
        cccd = self.device.gatt_server.read_cccd(connection, self._characteristics[spec.uuid])
        return bool(cccd[0] & (0x02 if spec.indicate else 0x01))

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return
        self._connection = connection
        self.connections += 1
        logger.info("%s: central %s connected", self.address, connection.peer_address)

        def on_disconnection(reason: int) -> None:
            if self._connection is connection:
                self._connection = None
            logger.info("%s: disconnected (%s)", self.address, hci.HCI_Constant.error_name(reason))

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)

    def _on_subscription(self, _bearer: Any, notify: bool, indicate: bool) -> None:
        if notify or indicate:
            self._schedule_flush()

    def _advertising_data(self) -> bytes:
        return bytes(
            AdvertisingData(
                [
                    Flags(
                        AdvertisingData.Flags.LE_GENERAL_DISCOVERABLE_MODE
                        | AdvertisingData.Flags.BR_EDR_NOT_SUPPORTED
                    ),
                    CompleteListOf16BitServiceUUIDs([core.UUID.from_16_bits(self.SERVICE_UUID)]),
                    CompleteLocalName(self.name),
                ]
            )
        )

    def _secure(self, permissions: Attribute.Permissions) -> Attribute.Permissions:
        if self.requires_bonding:
            permissions |= Attribute.Permissions.WRITE_REQUIRES_ENCRYPTION
        return permissions

    def _build_services(self, device: Device) -> list[gatt.Service]:
        characteristics: list[gatt.Characteristic[Any]] = []
        for spec in self.MEASUREMENTS:
            prop = gatt.Characteristic.Properties
            characteristic: gatt.Characteristic[bytes] = gatt.Characteristic(
                core.UUID.from_16_bits(spec.uuid),
                prop.INDICATE if spec.indicate else prop.NOTIFY,
                Attribute.Permissions(0),
                # bumble's server does not enforce the READ property; a real device refuses.
                gatt.CharacteristicValue(read=_read_not_permitted),
            )
            # Our own CCCD so that a bonding-only device can refuse unencrypted subscribers.
            characteristic.descriptors = [
                gatt.Descriptor(
                    gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                    self._secure(Attribute.READABLE | Attribute.WRITEABLE),
                    device.gatt_server.make_descriptor_value(characteristic),
                )
            ]
            characteristic.on(characteristic.EVENT_SUBSCRIPTION, self._on_subscription)
            self._characteristics[spec.uuid] = characteristic
            characteristics.append(characteristic)
        for uuid, value in self._read_only_characteristics():
            characteristics.append(
                gatt.Characteristic(
                    core.UUID.from_16_bits(uuid),
                    gatt.Characteristic.Properties.READ,
                    Attribute.READABLE,
                    value,
                )
            )
        services: list[gatt.Service] = [
            gatt.Service(core.UUID.from_16_bits(self.SERVICE_UUID), characteristics),
            DeviceInformationService(
                manufacturer_name=self.info.manufacturer,
                model_number=self.info.model,
                serial_number=self.info.serial,
                firmware_revision=self.info.firmware,
            ),
        ]
        if self.battery is not None:
            services.append(self.battery.service())
        if self.has_current_time:
            services.append(self._current_time_service())
        return services

    def _read_only_characteristics(self) -> list[tuple[int, bytes]]:
        return [self.FEATURE] if self.FEATURE else []

    def _current_time_service(self) -> gatt.Service:
        def write_time(_connection: Connection | None, value: bytes) -> None:
            # Exact Time 256 (9 bytes) plus the adjust reason: anything else is refused.
            if len(value) != 10:
                raise ATT_Error(ATT_INVALID_ATTRIBUTE_LENGTH_ERROR)
            self.clock = bytes(value)
            self.clock_writes.append(self.clock)

        prop = gatt.Characteristic.Properties
        current_time: gatt.Characteristic[bytes] = gatt.Characteristic(
            core.UUID.from_16_bits(0x2A2B),
            prop.READ | prop.WRITE | prop.NOTIFY,
            self._secure(Attribute.READABLE | Attribute.WRITEABLE),
            gatt.CharacteristicValue(read=lambda _connection: self.clock, write=write_time),
        )
        return gatt.Service(core.UUID.from_16_bits(0x1805), [current_time])


def _read_not_permitted(_connection: Connection | None) -> bytes:
    raise ATT_Error(ATT_READ_NOT_PERMITTED_ERROR)


class BloodPressureMonitor(EmulatedDevice):
    SERVICE_UUID = 0x1810
    MEASUREMENTS = (MeasurementSpec(0x2A35, indicate=True),)
    FEATURE = (0x2A49, b"\x00\x00")
    DEFAULT_NAME = "VV-BPM"
    ADDRESS_PREFIX = "D1:56:56:10:00"


class PulseOximeter(EmulatedDevice):
    SERVICE_UUID = 0x1822
    MEASUREMENTS = (
        MeasurementSpec(0x2A5E, indicate=True),  # spot-check, stored
        MeasurementSpec(0x2A5F, indicate=False),  # continuous, live
    )
    FEATURE = (0x2A60, b"\x00\x00")
    HAS_CURRENT_TIME = False
    DEFAULT_NAME = "VV-OXI"
    ADDRESS_PREFIX = "D1:56:56:22:00"

    async def measure_continuous(self, payload: bytes) -> Delivery:
        return await self.measure(payload, uuid=0x2A5F)


class HeartRateSensor(EmulatedDevice):
    # Built from plain GATT classes: bumble's HeartRateService serialises its own dataclass
    # and cannot send arbitrary caller bytes (needed for fault injection).
    SERVICE_UUID = 0x180D
    MEASUREMENTS = (MeasurementSpec(0x2A37, indicate=False),)
    HAS_CURRENT_TIME = False
    DEFAULT_NAME = "VV-HRS"
    ADDRESS_PREFIX = "D1:56:56:0D:00"

    def _read_only_characteristics(self) -> list[tuple[int, bytes]]:
        return [(0x2A38, b"\x01")]  # body sensor location: chest


class WeightScale(EmulatedDevice):
    SERVICE_UUID = 0x181D
    MEASUREMENTS = (MeasurementSpec(0x2A9D, indicate=True),)
    FEATURE = (0x2A9E, b"\x01\x00\x00\x00")  # time stamp supported
    DEFAULT_NAME = "VV-WSC"
    ADDRESS_PREFIX = "D1:56:56:1D:00"


class Thermometer(EmulatedDevice):
    SERVICE_UUID = 0x1809
    MEASUREMENTS = (MeasurementSpec(0x2A1C, indicate=True),)
    DEFAULT_NAME = "VV-THM"
    ADDRESS_PREFIX = "D1:56:56:09:00"


def standard_devices(*, requires_bonding: bool = False, seed: int = 0) -> list[EmulatedDevice]:
    """One of each: blood pressure (optionally bonding-only), oximeter, HR, scale, thermometer."""
    return [
        BloodPressureMonitor(requires_bonding=requires_bonding, seed=seed),
        PulseOximeter(seed=seed + 1),
        HeartRateSensor(seed=seed + 2),
        WeightScale(seed=seed + 3),
        Thermometer(seed=seed + 4),
    ]
