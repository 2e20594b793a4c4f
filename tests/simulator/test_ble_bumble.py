"""The bleak backend on bumble against the emulated health devices: a real BLE host and
controller stack (bumble's), no mocks. Only bleak's public API is used on the gateway side.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak.uuids import normalize_uuid_16
from bleak_retry_connector import establish_connection

from simulator.ble_devices import (
    CLOCK_NEVER_SET,
    BloodPressureMonitor,
    Delivery,
    EmulatedDevice,
    Fault,
    HeartRateSensor,
    PulseOximeter,
    Thermometer,
    WeightScale,
    standard_devices,
)
from simulator.ble_home import EmulatedHome
from simulator.bumble_adapter import BleakATTError, BumbleTransportError
from simulator.bumble_backend import (
    BumbleCentral,
    backend_for,
    bleak_client_class,
    open_backends,
)
from simulator.bumble_client import BumbleClientBackend
from simulator.bumble_scanner import BumbleScannerBackend

pytestmark = pytest.mark.timeout(30)

# Published vectors (docs/reference section 2) and two literal ones for the spot-check and
# the scale: the devices only move bytes, so any bytes do.
BP = bytes.fromhex("1E8A00580078000000041114293B3C00012700")
HR = bytes.fromhex("0055")
HR_FULL = bytes.fromhex("1E5532002100")
TEMP = bytes.fromhex("06B00E00FEDC070C050B321B04")
PLX_CONT = bytes.fromhex("1C5F005A0020000000000057F0")
PLX_SPOT = bytes.fromhex("005F004800")
WEIGHT = bytes.fromhex("00E43E")
CURRENT_TIME = bytes.fromhex("E9070C050B321B040000")  # 2025-12-05 11:50:27 Thursday


def uuid16(value: int) -> str:
    return normalize_uuid_16(value)


class Inbox:
    """Collects notification/indication values in arrival order."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    def __call__(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        self.values.append(bytes(data))
        self._queue.put_nowait(bytes(data))

    async def next(self, timeout_s: float = 2.0) -> bytes:
        async with asyncio.timeout(timeout_s):
            return await self._queue.get()

    async def quiet(self, for_s: float = 0.2) -> bool:
        """True when nothing more arrives for ``for_s`` seconds."""
        try:
            await self.next(for_s)
        except TimeoutError:
            return True
        return False


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait for the device side to catch up (it learns of confirmations after the central)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


class Disconnects:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.count = 0

    def __call__(self, _client: BleakClient) -> None:
        self.count += 1
        self.event.set()

    async def wait(self, timeout_s: float = 2.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self.event.wait()
        self.event.clear()


@pytest.fixture
async def home() -> AsyncIterator[EmulatedHome]:
    async with EmulatedHome(standard_devices()) as h:
        yield h


@pytest.fixture
async def central(home: EmulatedHome) -> AsyncIterator[BumbleCentral]:
    async with home.central() as c:
        yield c


@pytest.fixture
def backends(
    central: BumbleCentral,
) -> tuple[type[BumbleScannerBackend], type[BumbleClientBackend]]:
    return central.backends()


async def find(scanner: type[BumbleScannerBackend], device: EmulatedDevice) -> BLEDevice:
    found = await BleakScanner.find_device_by_address(device.address, timeout=2.0, backend=scanner)
    assert found is not None, f"{device} not found"
    return found


# --------------------------------------------------------------------------- scanning


async def test_scan_finds_the_five_devices_with_service_uuids_and_names(
    home: EmulatedHome, backends
) -> None:
    scanner, _ = backends
    seen = await BleakScanner.discover(timeout=0.4, return_adv=True, backend=scanner)
    expected = {
        BloodPressureMonitor: 0x1810,
        PulseOximeter: 0x1822,
        HeartRateSensor: 0x180D,
        WeightScale: 0x181D,
        Thermometer: 0x1809,
    }
    assert len(seen) == 5
    for kind, service in expected.items():
        device = home.get(kind)
        ble_device, adv = seen[device.address]
        assert adv.service_uuids == [uuid16(service)]
        assert adv.local_name == device.name == ble_device.name
        assert adv.rssi < 0


async def test_detection_callback_and_service_filter(home: EmulatedHome, backends) -> None:
    scanner, _ = backends
    names: set[str | None] = set()
    async with BleakScanner(
        lambda d, ad: names.add(ad.local_name), [uuid16(0x180D)], backend=scanner
    ):
        await asyncio.sleep(0.3)
    assert names == {home.get(HeartRateSensor).name}


async def test_find_by_address_returns_none_for_a_silent_device(
    home: EmulatedHome, backends
) -> None:
    scanner, _ = backends
    scale = home.get(WeightScale)
    await scale.set_advertising(False)
    assert await BleakScanner.find_device_by_address(scale.address, 0.3, backend=scanner) is None
    await scale.set_advertising(True)
    assert await BleakScanner.find_device_by_address(scale.address, 2.0, backend=scanner)


# --------------------------------------------------------------------------- GATT


@pytest.mark.parametrize(
    "kind", [BloodPressureMonitor, PulseOximeter, HeartRateSensor, WeightScale, Thermometer]
)
async def test_read_device_information_and_battery(home: EmulatedHome, backends, kind) -> None:
    scanner, client_backend = backends
    device = home.get(kind)
    async with BleakClient(await find(scanner, device), backend=client_backend) as client:
        assert client.mtu_size == 517
        read = client.read_gatt_char
        assert await read(uuid16(0x2A29)) == device.info.manufacturer.encode()
        assert await read(uuid16(0x2A24)) == device.info.model.encode()
        assert await read(uuid16(0x2A25)) == device.info.serial.encode()
        assert await read(uuid16(0x2A26)) == device.info.firmware.encode()
        assert await read(uuid16(0x2A19)) == bytes([device.battery_level])
        device.battery_level = 12
        assert await read(uuid16(0x2A19)) == b"\x0c"


async def test_write_current_time_and_reject_a_wrong_length(home: EmulatedHome, backends) -> None:
    scanner, client_backend = backends
    cuff = home.get(BloodPressureMonitor)
    async with BleakClient(await find(scanner, cuff), backend=client_backend) as client:
        assert await client.read_gatt_char(uuid16(0x2A2B)) == CLOCK_NEVER_SET
        await client.write_gatt_char(uuid16(0x2A2B), CURRENT_TIME, response=True)
        assert cuff.clock_writes == [CURRENT_TIME]
        assert await client.read_gatt_char(uuid16(0x2A2B)) == CURRENT_TIME
        with pytest.raises(BleakATTError) as failure:
            await client.write_gatt_char(uuid16(0x2A2B), CURRENT_TIME[:7], response=True)
        assert failure.value.error_code == 0x0D  # invalid attribute value length
        # Measurement characteristics are not readable, like on the real devices.
        with pytest.raises(BleakATTError) as failure:
            await client.read_gatt_char(uuid16(0x2A35))
        assert failure.value.error_code == 0x02


async def test_heart_rate_strap_has_no_current_time(home: EmulatedHome, backends) -> None:
    scanner, client_backend = backends
    strap = home.get(HeartRateSensor)
    async with BleakClient(await find(scanner, strap), backend=client_backend) as client:
        assert client.services.get_service(uuid16(0x1805)) is None
        assert await client.read_gatt_char(uuid16(0x2A38)) == b"\x01"


@pytest.mark.parametrize(
    ("kind", "char", "payload", "mode"),
    [
        (BloodPressureMonitor, 0x2A35, BP, "indicate"),
        (PulseOximeter, 0x2A5E, PLX_SPOT, "indicate"),
        (PulseOximeter, 0x2A5F, PLX_CONT, "notify"),
        (HeartRateSensor, 0x2A37, HR, "notify"),
        (HeartRateSensor, 0x2A37, HR_FULL, "notify"),
        (WeightScale, 0x2A9D, WEIGHT, "indicate"),
        (Thermometer, 0x2A1C, TEMP, "indicate"),
    ],
    ids=["bp", "plx-spot", "plx-continuous", "hr", "hr-rr", "weight", "temperature"],
)
async def test_measurement_arrives_byte_for_byte(
    home: EmulatedHome, backends, kind, char: int, payload: bytes, mode: str
) -> None:
    scanner, client_backend = backends
    device = home.get(kind)
    inbox = Inbox()
    async with BleakClient(await find(scanner, device), backend=client_backend) as client:
        characteristic = client.services.get_characteristic(uuid16(char))
        assert characteristic is not None and characteristic.properties == [mode]
        await client.start_notify(characteristic, inbox)
        assert await device.measure(payload, uuid=char) is Delivery.SENT
        assert await device.measure(payload[:1] + payload[1:], uuid=char) is Delivery.SENT
        assert [await inbox.next(), await inbox.next()] == [payload, payload]
        await client.stop_notify(characteristic)
        expected = Delivery.QUEUED if mode == "indicate" else Delivery.DROPPED
        assert await device.measure(payload, uuid=char) is expected
        assert await inbox.quiet()


async def test_five_devices_connected_at_once(home: EmulatedHome, backends) -> None:
    scanner, client_backend = backends
    payloads = {
        BloodPressureMonitor: BP,
        PulseOximeter: PLX_SPOT,
        HeartRateSensor: HR,
        WeightScale: WEIGHT,
        Thermometer: TEMP,
    }
    devices = [home.get(kind) for kind in payloads]
    ble_devices = [await find(scanner, device) for device in devices]
    clients = [BleakClient(d, backend=client_backend) for d in ble_devices]
    inboxes = [Inbox() for _ in devices]
    await asyncio.gather(*(c.connect() for c in clients))
    try:
        assert all(c.is_connected for c in clients) and all(d.connected for d in devices)
        for client, device, inbox in zip(clients, devices, inboxes, strict=True):
            await client.start_notify(uuid16(device.MEASUREMENTS[0].uuid), inbox)
        await asyncio.gather(
            *(d.measure(payloads[type(d)]) for d in devices)  # type: ignore[index]
        )
        for device, inbox in zip(devices, inboxes, strict=True):
            assert await inbox.next() == payloads[type(device)]  # type: ignore[index]
            assert await inbox.quiet(0.05)
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients))
    assert not any(d.connected for d in devices)


# --------------------------------------------------------------------------- link faults


async def test_device_drop_is_seen_and_reconnect_continues(home: EmulatedHome, backends) -> None:
    scanner, client_backend = backends
    thermometer = home.get(Thermometer)
    found = await find(scanner, thermometer)
    disconnects = Disconnects()
    client = BleakClient(found, disconnected_callback=disconnects, backend=client_backend)
    await client.connect()
    await thermometer.disconnect()
    await disconnects.wait()
    assert not client.is_connected
    with pytest.raises(BleakError):
        await client.read_gatt_char(uuid16(0x2A19))
    # A new client per connection, as bleak recommends; the device advertises again.
    inbox = Inbox()
    async with BleakClient(found, backend=client_backend) as again:
        await again.start_notify(uuid16(0x2A1C), inbox)
        await thermometer.measure(TEMP)
        assert await inbox.next() == TEMP


async def test_drop_before_indication_delivers_once_after_reconnect(
    home: EmulatedHome, backends
) -> None:
    scanner, client_backend = backends
    cuff = home.get(BloodPressureMonitor)
    found = await find(scanner, cuff)
    disconnects, inbox = Disconnects(), Inbox()
    client = BleakClient(found, disconnected_callback=disconnects, backend=client_backend)
    await client.connect()
    await client.start_notify(uuid16(0x2A35), inbox)
    cuff.arm_fault(Fault.DROP_BEFORE_SEND)
    assert await cuff.measure(BP) is Delivery.QUEUED
    await disconnects.wait()
    assert not client.is_connected and inbox.values == []
    async with BleakClient(found, backend=client_backend) as again:
        await again.start_notify(uuid16(0x2A35), inbox)
        assert await inbox.next() == BP
        assert await inbox.quiet()
    await until(lambda: cuff.queued == [])
    assert cuff.sent == [BP]


async def test_drop_during_indication_repeats_the_reading(home: EmulatedHome, backends) -> None:
    scanner, client_backend = backends
    scale = home.get(WeightScale)
    found = await find(scanner, scale)
    disconnects, inbox = Disconnects(), Inbox()
    client = BleakClient(found, disconnected_callback=disconnects, backend=client_backend)
    await client.connect()
    await client.start_notify(uuid16(0x2A9D), inbox)
    scale.arm_fault(Fault.DROP_DURING_SEND)
    assert await scale.measure(WEIGHT) is Delivery.QUEUED
    await disconnects.wait()
    # The value reached the gateway but its confirmation never reached the scale ...
    assert inbox.values == [WEIGHT] and scale.queued == [WEIGHT]
    async with BleakClient(found, backend=client_backend) as again:
        await again.start_notify(uuid16(0x2A9D), inbox)
        # ... so it comes again: at-least-once, the gateway deduplicates by stable id.
        assert await inbox.next() == WEIGHT
    await until(lambda: scale.queued == [])
    assert inbox.values == [WEIGHT, WEIGHT]


async def test_readings_taken_offline_arrive_in_order_after_connect(
    home: EmulatedHome, backends
) -> None:
    scanner, client_backend = backends
    cuff = home.get(BloodPressureMonitor)
    readings = [BP, BP[:-1] + b"\x00", BP[:-1] + b"\x01"]
    for reading in readings:
        assert await cuff.measure(reading) is Delivery.QUEUED
    inbox = Inbox()
    async with BleakClient(await find(scanner, cuff), backend=client_backend) as client:
        await client.start_notify(uuid16(0x2A35), inbox)
        assert [await inbox.next() for _ in readings] == readings
        await until(lambda: cuff.queued == [])


async def test_random_bytes_fault_delivers_exactly_what_was_sent(
    home: EmulatedHome, backends
) -> None:
    scanner, client_backend = backends
    oximeter = home.get(PulseOximeter)
    inbox = Inbox()
    async with BleakClient(await find(scanner, oximeter), backend=client_backend) as client:
        await client.start_notify(uuid16(0x2A5F), inbox)
        oximeter.arm_fault(Fault.RANDOM_BYTES)
        assert await oximeter.measure_continuous(PLX_CONT) is Delivery.SENT
        garbage = await inbox.next()
        assert garbage == oximeter.sent[-1] and garbage != PLX_CONT
        await oximeter.measure_continuous(PLX_CONT)
        assert await inbox.next() == PLX_CONT


async def test_out_of_range_is_a_link_loss_and_the_device_comes_back(
    home: EmulatedHome, backends
) -> None:
    scanner, client_backend = backends
    strap = home.get(HeartRateSensor)
    found = await find(scanner, strap)
    disconnects = Disconnects()
    client = BleakClient(found, disconnected_callback=disconnects, backend=client_backend)
    await client.connect()
    await strap.go_out_of_range()
    await disconnects.wait()
    assert not client.is_connected
    with pytest.raises(TimeoutError):
        await BleakClient(found, backend=client_backend, timeout=0.3).connect()
    await strap.come_back()
    async with BleakClient(found, backend=client_backend) as again:
        assert again.is_connected


async def test_unknown_address_is_device_not_found(central: BumbleCentral, backends) -> None:
    _, client_backend = backends
    client = BleakClient("D1:00:00:00:00:99", backend=client_backend, timeout=0.3)
    with pytest.raises(BleakDeviceNotFoundError):
        await client.connect()


async def test_connect_by_address_string_scans_first(home: EmulatedHome, backends) -> None:
    _, client_backend = backends
    oximeter = home.get(PulseOximeter)
    async with BleakClient(oximeter.address, backend=client_backend) as client:
        assert client.name == oximeter.name
        assert await client.read_gatt_char(uuid16(0x2A60)) == b"\x00\x00"


# --------------------------------------------------------------------------- bonding


async def test_bonding_device_pairs_like_bluez_and_stays_bonded() -> None:
    cuff = BloodPressureMonitor(requires_bonding=True)
    async with EmulatedHome([cuff]) as home, home.central() as central:
        scanner, client_backend = central.backends()
        found = await find(scanner, cuff)
        inbox = Inbox()
        # Like BlueZ: the insufficient-encryption error triggers Just Works pairing.
        async with BleakClient(found, backend=client_backend) as client:
            await client.start_notify(uuid16(0x2A35), inbox)
            await cuff.measure(BP)
            assert await inbox.next() == BP
        assert await central.has_bond(cuff.device.static_address)
        # On reconnect the bond encrypts the link before anything is asked.
        async with BleakClient(found, backend=client_backend) as client:
            await client.start_notify(uuid16(0x2A35), inbox)
            await cuff.measure(BP)
            assert await inbox.next() == BP
            await client.unpair()
        assert not await central.has_bond(cuff.device.static_address)


async def test_bonding_device_refuses_unencrypted_subscription() -> None:
    cuff = BloodPressureMonitor(requires_bonding=True)
    async with (
        EmulatedHome([cuff]) as home,
        home.central(auto_pair_on_insufficient_security=False) as central,
    ):
        scanner, client_backend = central.backends()
        found = await find(scanner, cuff)
        async with BleakClient(found, backend=client_backend) as client:
            with pytest.raises(BleakATTError) as failure:
                await client.start_notify(uuid16(0x2A35), Inbox())
            assert failure.value.error_code == 0x0F  # insufficient encryption
            await client.pair()
            await client.start_notify(uuid16(0x2A35), Inbox())
        async with BleakClient(found, backend=client_backend, pair=True) as client:
            await client.write_gatt_char(uuid16(0x2A2B), CURRENT_TIME, response=True)


async def test_pair_before_connect_bonds_first() -> None:
    cuff = BloodPressureMonitor(requires_bonding=True)
    async with (
        EmulatedHome([cuff]) as home,
        home.central(auto_pair_on_insufficient_security=False) as central,
    ):
        scanner, client_backend = central.backends()
        async with BleakClient(await find(scanner, cuff), backend=client_backend, pair=True) as c:
            assert await central.has_bond(cuff.device.static_address)
            await c.start_notify(uuid16(0x2A35), Inbox())


async def test_device_that_lost_its_bond_is_paired_again() -> None:
    cuff = BloodPressureMonitor(requires_bonding=True)
    async with EmulatedHome([cuff]) as home, home.central() as central:
        scanner, client_backend = central.backends()
        found = await find(scanner, cuff)
        async with BleakClient(found, backend=client_backend, pair=True):
            pass
        await cuff.close()  # a battery change: the cuff forgets the bond, the gateway does not
        await cuff.open(home.link)
        inbox = Inbox()
        async with BleakClient(found, backend=client_backend) as client:
            await client.start_notify(uuid16(0x2A35), inbox)
            await cuff.measure(BP)
            assert await inbox.next() == BP


# --------------------------------------------------------------------------- integration


async def test_service_filter_limits_discovery(home: EmulatedHome, backends) -> None:
    scanner, client_backend = backends
    cuff = home.get(BloodPressureMonitor)
    found = await find(scanner, cuff)
    async with BleakClient(found, services=["180a"], backend=client_backend) as client:
        assert [s.uuid for s in client.services] == [uuid16(0x180A)]
        assert await client.read_gatt_char(uuid16(0x2A25)) == cuff.info.serial.encode()


async def test_establish_connection_with_backend_keyword_and_client_class(
    home: EmulatedHome, backends
) -> None:
    scanner, client_backend = backends
    cuff = home.get(BloodPressureMonitor)
    found = await find(scanner, cuff)
    client = await establish_connection(BleakClient, found, cuff.name, backend=client_backend)
    try:
        assert client.is_connected
        assert await client.read_gatt_char(uuid16(0x2A24)) == cuff.info.model.encode()
    finally:
        await client.disconnect()
    client = await establish_connection(bleak_client_class(client_backend), found, cuff.name)
    try:
        await client.write_gatt_char(uuid16(0x2A2B), CURRENT_TIME, response=True)
    finally:
        await client.disconnect()


async def test_establish_connection_waits_for_a_device_that_wakes_up(
    home: EmulatedHome, backends
) -> None:
    scanner, client_backend = backends
    scale = home.get(WeightScale)
    found = await find(scanner, scale)
    await scale.set_advertising(False)
    asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(scale.come_back()))
    client = await establish_connection(BleakClient, found, scale.name, backend=client_backend)
    try:
        assert client.is_connected and scale.connected
    finally:
        await client.disconnect()


def test_backend_for_selects_by_setting() -> None:
    assert backend_for("native") == (None, None)
    assert backend_for(" Bumble ") == (BumbleScannerBackend, BumbleClientBackend)
    assert bleak_client_class(None) is BleakClient
    with pytest.raises(ValueError, match="VV_BLE_TRANSPORT"):
        backend_for("bluez")
    with pytest.raises(ValueError, match="open_backends"):
        backend_for("bumble:tcp-client:127.0.0.1:1")


async def test_unbound_backend_uses_the_open_central(home: EmulatedHome) -> None:
    scanner, client_backend = backend_for("bumble")
    with pytest.raises(BumbleTransportError):
        BleakScanner(backend=scanner)
    async with home.central():
        cuff = home.get(BloodPressureMonitor)
        found = await BleakScanner.find_device_by_address(cuff.address, 2.0, backend=scanner)
        assert found is not None
        async with BleakClient(found, backend=client_backend) as client:
            assert client.is_connected


async def test_central_over_tcp_hci_transport(home: EmulatedHome) -> None:
    spec = await home.link.serve_hci_tcp()
    thermometer = home.get(Thermometer)
    async with open_backends(f"bumble:{spec}") as (scanner, client_backend):
        assert scanner is not None and client_backend is not None
        found = await BleakScanner.find_device_by_address(thermometer.address, 2.0, backend=scanner)
        assert found is not None
        inbox, disconnects = Inbox(), Disconnects()
        async with BleakClient(
            found, disconnected_callback=disconnects, backend=client_backend
        ) as client:
            await client.start_notify(uuid16(0x2A1C), inbox)
            await thermometer.measure(TEMP)
            assert await inbox.next() == TEMP
            # The virtual controller goes away: the links are reported lost.
            await home.link.close()
            await disconnects.wait()
            assert not client.is_connected


@pytest.mark.slow
async def test_central_against_devices_in_another_process() -> None:
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator.ble_home_server", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        assert ready.startswith("READY "), ready
        devices = [(await asyncio.to_thread(process.stdout.readline)).split()[1:] for _ in range(5)]
        async with open_backends("bumble:" + ready.split()[1]) as (scanner, client_backend):
            seen = await BleakScanner.discover(timeout=0.5, return_adv=True, backend=scanner)
            assert {name for _, name in devices} == {ad.local_name for _, ad in seen.values()}
            address = next(address for address, name in devices if name == "VV-BPM")
            async with BleakClient(seen[address][0], backend=client_backend) as client:
                assert await client.read_gatt_char(uuid16(0x2A29)) == b"Vitalvagt Sim"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)
        if process.stdout is not None:
            process.stdout.close()
