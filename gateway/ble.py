"""The BLE manager: keeps every paired device connected and turns its values into readings.

One supervised task per paired device (``BleManager``):

1. wait until the device advertises (one shared ``BleakScanner``, running only while some
   device is waited for or being connected to: ``AdvertisementWatcher``);
2. connect with bleak-retry-connector's ``establish_connection`` (bleak's 20 s connect
   time-out, a few attempts, all inside an outer safety time-out), pairing first when the
   device needs a bond;
3. read Device Information once (kept in the pairing list), the Battery Level when the
   device has the Battery Service (read, and its notifications where it notifies them;
   gateway/battery.py checks and reports them), set the device clock through Current Time
   0x2A2B when present, then subscribe to every measurement characteristic the gateway can
   decode (indications and notifications);
4. on each value: decode with the device's profile, build the observations, write them to
   the outbox (durably, inside the callback, so that the indication is confirmed only after
   the fsync where the backend confirms on return, as the emulated one does) and wake the
   publisher;
5. wait for the link to drop, then back to 1. Failures back off with ``vitalvagt.retry.Backoff``.

Nothing a device sends stops the gateway: an undecodable value is logged with the device
address, counted and kept (``PairingList.undecodable``); any other failure in handling a
value is logged and counted too.

Duplicates: an indication whose confirmation was lost comes again after the reconnection.
Its observations have the same stable id (same device, kind and device time), so the outbox
ignores them (INSERT OR IGNORE on the id), and a recent-id memory keeps them from being
published twice when the first copy already left the outbox. A re-sent reading WITHOUT
device time would get a new receive time and so a new id: the first value on a new link that
repeats the last indicated value of the previous link within ``REDELIVERY_WINDOW`` reuses the
earlier receive time.

Only bleak's public API is used (``BleakScanner``/``BleakClient`` with ``backend=``), so the
same code runs on BlueZ, Android and an emulated backend selected by ``VV_BLE_TRANSPORT``
(gateway/ble_connect.py). Around the manager: gateway/readings.py turns decoded values into
observations, gateway/ble_connect.py connects and picks the backends, and
gateway/ble_watcher.py shares one scan between the device tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from typing import Self

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.service import BleakGATTServiceCollection
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_16

from gateway.battery import (
    BATTERY_LEVEL,
    BATTERY_SERVICE,
    BatteryLevel,
    BatteryReport,
    battery_level,
)
from gateway.ble_connect import (
    CONNECT_ATTEMPTS,
    Backends,
    connect,
    disconnect,
    read_device_information,
)
from gateway.ble_watcher import AdvertisementWatcher
from gateway.decoded import DecodedReading
from gateway.decoders import DECODERS, normalize_uuid
from gateway.decoding import decode
from gateway.errors import DecodeError, GatewayError
from gateway.outbox import Outbox
from gateway.pairing import PairedDevice, PairingList, normalize_address
from gateway.profiles import PROFILES
from gateway.readings import current_time_value, to_observations
from vitalvagt.logs import Throttle
from vitalvagt.observation import DeviceRef, Observation
from vitalvagt.quality import Flag
from vitalvagt.retry import BLE_DEVICE, Backoff

log = logging.getLogger(__name__)

CURRENT_TIME = normalize_uuid_16(0x2A2B)
REDELIVERY_WINDOW = timedelta(seconds=60)
RECENT_IDS = 4096
SETUP_TIMEOUT_S = 60.0  # reading info, setting the clock and subscribing, on a slow link
SEEN_WRITE_INTERVAL = timedelta(minutes=1)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- manager


@dataclass
class DeviceStats:
    """Counters per device, for logs, tests and metrics."""

    connections: int = 0
    connect_failures: int = 0
    readings: int = 0  # readings newly stored in the outbox
    observations: int = 0
    duplicates: int = 0  # readings received again and ignored
    decode_errors: int = 0
    errors: int = 0  # other failures while handling a value
    clock_writes: int = 0
    battery_invalid: int = 0  # Battery Level values dropped (over 100, wrong length)
    last_error: str | None = None


@dataclass
class _LastValue:
    data: bytes
    measured_at: datetime
    link: int


@dataclass
class _Device:
    entry: PairedDevice
    stats: DeviceStats = field(default_factory=DeviceStats)
    task: asyncio.Task[None] | None = None
    link: int = 0  # connection number, to tell a redelivery on a new link
    connected: bool = False
    last_indicated: dict[str, _LastValue] = field(default_factory=dict)
    seen_saved_at: datetime | None = None  # last time "last seen" was written
    battery: BatteryLevel | None = None  # the last valid Battery Level
    battery_saved_at: datetime | None = None  # last time it was written to the pairing list


class BleManager:
    """Async context manager: ``async with BleManager(...) as ble`` keeps the devices read."""

    def __init__(
        self,
        *,
        gateway_id: str,
        pairing: PairingList,
        outbox: Outbox,
        backends: Backends,
        zone: tzinfo,
        on_stored: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = _utc_now,
        backoff: Callable[[], Backoff] = BLE_DEVICE.backoff,
        connect_attempts: int = CONNECT_ATTEMPTS,
        battery: BatteryReport | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self._pairing = pairing
        self._outbox = outbox
        self._scanner_backend, self._client_backend = backends
        self._zone = zone
        self._on_stored = on_stored
        self._clock = clock
        self._new_backoff = backoff
        self._connect_attempts = connect_attempts
        self._devices: dict[str, _Device] = {}
        self._retired: set[asyncio.Task[None]] = set()  # cancelled, maybe still disconnecting
        self._recent: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._watcher: AdvertisementWatcher | None = None
        self._battery = battery
        self._battery_throttle = Throttle(per_interval=3, interval_s=3600)
        self.decode_errors = 0

    # --- life cycle -----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._watcher = AdvertisementWatcher(self._scanner_backend)
        self.reload()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = [d.task for d in self._devices.values() if d.task is not None]
        tasks += self._retired
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for device in self._devices.values():
            device.task = None
        self._retired.clear()
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None

    def reload(self) -> None:
        """Read the pairing list again: start new devices, stop removed ones, apply changes."""
        entries = {d.address: d for d in self._pairing.devices()}
        for address in list(self._devices):
            if address not in entries:
                device = self._devices.pop(address)
                if device.task is not None:
                    device.task.cancel()
                    self._retired.add(device.task)
                    device.task.add_done_callback(self._retired.discard)
                log.info("%s: removed from the pairing list, no longer read", address)
        for address, entry in entries.items():
            device = self._devices.get(address)
            if device is None:
                device = self._devices[address] = _Device(entry)
                if entry.battery_level is not None and entry.battery_at is not None:
                    device.battery = BatteryLevel(entry.battery_level, entry.battery_at)
            else:
                device.entry = entry  # profile, user id and bonding apply from now on
            if self._watcher is not None and (device.task is None or device.task.done()):
                device.task = asyncio.create_task(self._supervise(device), name=f"ble-{address}")
        if self._battery is not None:
            self._battery.set_devices(entries.values())

    # --- state ----------------------------------------------------------------------------
    def stats(self) -> dict[str, DeviceStats]:
        return {address: d.stats for address, d in self._devices.items()}

    def connected(self, address: str) -> bool:
        device = self._devices.get(normalize_address(address))
        return device is not None and device.connected

    def battery(self, address: str) -> BatteryLevel | None:
        """The device's last valid battery level and when it was received, if known."""
        device = self._devices.get(normalize_address(address))
        return None if device is None else device.battery

    # --- per-device supervision -------------------------------------------------------------
    async def _supervise(self, device: _Device) -> None:
        """Connect, read, reconnect: forever. Logs and carries on after every failure."""
        backoff = self._new_backoff()
        address = device.entry.address
        assert self._watcher is not None
        while True:
            try:
                client, lost = await self._connect_when_seen(device)
                await self._session(device, client, lost, backoff)
                continue  # the device went away after a good session: wait for it again
            except Exception as exc:
                device.stats.connect_failures += 1
                device.stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff.next_delay()
                log.warning(
                    "%s: connection failed (%s); retrying in %.1f s (attempt %d)",
                    address,
                    device.stats.last_error,
                    delay,
                    backoff.attempts,
                )
            await asyncio.sleep(delay)

    async def _connect_when_seen(self, device: _Device) -> tuple[BleakClient, asyncio.Event]:
        """A connected client once the device advertises, and the event of its link loss."""
        assert self._watcher is not None
        loop = asyncio.get_running_loop()
        lost = asyncio.Event()

        def on_disconnect(_client: BleakClient) -> None:
            # Some platforms call back from their own thread.
            loop.call_soon_threadsafe(lost.set)

        client: BleakClient | None = None
        try:
            async with self._watcher.sighted(device.entry.address) as ble_device:
                client = await connect(
                    ble_device,
                    self._client_backend,
                    name=device.entry.name,
                    pair=device.entry.requires_bonding,
                    disconnected_callback=on_disconnect,
                    attempts=self._connect_attempts,
                )
        except BaseException:
            if client is not None:  # cancelled while the scan was being stopped
                await disconnect(client)
            raise
        return client, lost

    async def _session(
        self, device: _Device, client: BleakClient, lost: asyncio.Event, backoff: Backoff
    ) -> None:
        entry = device.entry
        device.link += 1
        device.stats.connections += 1
        try:
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                subscribed = await self._setup(device, client)
            device.connected = True
            backoff.reset()
            log.info(
                "%s: connected (link %d), reading %s",
                entry.address,
                device.link,
                ", ".join(subscribed),
            )
            await lost.wait()
            log.info("%s: disconnected; waiting for it to advertise again", entry.address)
        finally:
            device.connected = False
            with contextlib.suppress(sqlite3.Error):
                self._pairing.seen(entry.address, self._clock())
            await disconnect(client)

    async def _setup(self, device: _Device, client: BleakClient) -> list[str]:
        address = device.entry.address
        services = client.services
        if not device.entry.info_read:
            info = await read_device_information(client)
            self._pairing.set_info(address, **info)
            device.entry = replace(device.entry, **info)
        now = self._clock()
        self._pairing.seen(address, now)
        device.entry = replace(device.entry, last_seen=now)
        await self._read_battery(device, client)
        if services.get_characteristic(CURRENT_TIME) is not None:
            try:
                value = current_time_value(self._clock(), self._zone)
                await client.write_gatt_char(CURRENT_TIME, value, response=True)
                device.stats.clock_writes += 1
            except BleakError as exc:
                # Readings still carry the device's own time, checked in to_observations.
                log.warning("%s: could not set the device clock: %s", address, exc)
        wanted = set(DECODERS)
        if device.entry.profile is not None:
            profile = PROFILES.get(device.entry.profile)
            if profile is not None:
                wanted |= set(profile.decoders)
        subscribed = []
        for service in services:
            for char in service.characteristics:
                key = normalize_uuid(char.uuid)
                if key not in wanted or not {"notify", "indicate"} & set(char.properties):
                    continue
                indicated = "indicate" in char.properties
                await client.start_notify(
                    char, partial(self._on_notify, device, key, device.link, indicated)
                )
                subscribed.append(key)
        if not subscribed:
            raise GatewayError(
                f"{address}: offers none of the measurement characteristics the gateway reads "
                f"({', '.join(sorted(wanted))}); check the device type and profile"
            )
        return subscribed

    async def _read_battery(self, device: _Device, client: BleakClient) -> None:
        """The Battery Level of the Battery Service, when the device has it: read now, and
        notified from now on where the device notifies it. Never fails the session."""
        char = _battery_characteristic(client.services)
        if char is None:
            return  # no Battery Service: normal, the device simply has no level
        address = device.entry.address
        try:
            if "read" in char.properties:
                self.handle_battery(address, await client.read_gatt_char(char))
            if "notify" in char.properties:
                await client.start_notify(char, partial(self._on_battery, device))
        except (BleakError, TimeoutError) as exc:
            log.warning("%s: battery level unreadable: %s", address, exc)

    def _on_battery(
        self, device: _Device, _sender: BleakGATTCharacteristic, data: bytearray
    ) -> None:
        self.handle_battery(device.entry.address, data)

    def handle_battery(self, address: str, data: bytes | bytearray) -> int | None:
        """One Battery Level value (read or notified): checked, kept, reported; returns the
        level, or None when it was dropped. Never raises for anything a device sends."""
        address = normalize_address(address)
        device = self._devices.get(address)
        if device is None:
            return None
        at = self._clock()
        try:
            level = battery_level(data)
        except DecodeError as exc:
            device.stats.battery_invalid += 1
            show, held = self._battery_throttle.allow(address)
            if show:  # a device may send one every second: a few lines an hour
                log.warning("%s: invalid battery level dropped (bytes %s): %s (%d more not"
                            " logged)", address, bytes(data).hex() or "none", exc.reason,
                            held)  # fmt: skip
            return None
        previous, device.battery = device.battery, BatteryLevel(level, at)
        changed = previous is None or previous.level != level
        if changed:
            log.info("%s: battery %d %%", address, level)
        # Written on a change, else at most once a minute (some devices notify every second).
        saved = device.battery_saved_at
        if changed or saved is None or at - saved >= SEEN_WRITE_INTERVAL:
            device.battery_saved_at = at
            try:
                self._pairing.set_battery(address, level, at)
            except sqlite3.Error as exc:
                log.warning("%s: could not record the battery level: %s", address, exc)
        if self._battery is not None:
            try:
                self._battery.record(address, level, at, model=device.entry.model)
            except Exception:
                log.exception("%s: could not report the battery level", address)
        return level

    def _on_notify(
        self,
        device: _Device,
        key: str,
        link: int,
        indicated: bool,
        _sender: BleakGATTCharacteristic,
        data: bytearray,
    ) -> None:
        self.handle_value(device.entry.address, key, data, link=link, indicated=indicated)

    # --- values ---------------------------------------------------------------------------
    def handle_value(
        self,
        address: str,
        characteristic: str,
        data: bytes | bytearray,
        *,
        link: int = 0,
        indicated: bool = True,
    ) -> int:
        """Decode one value and store its observations; returns how many were new.

        Never raises for anything a device sends: failures are logged and counted.
        """
        address = normalize_address(address)
        device = self._devices.get(address)
        if device is None:
            log.warning("%s: value from a device not in the pairing list, ignored", address)
            return 0
        received_at = self._clock()
        raw = bytes(data)
        entry = device.entry
        try:
            reading = decode(characteristic, raw, entry.profile)
        except DecodeError as exc:
            device.stats.decode_errors += 1
            self.decode_errors += 1
            log.warning(
                "%s: cannot decode a %s value of %d bytes (%s); kept for "
                "`vitalvagt gateway devices --undecodable`",
                address,
                characteristic,
                len(raw),
                exc,
            )
            try:
                self._pairing.record_undecodable(
                    address, characteristic, raw, str(exc), received_at
                )
            except sqlite3.Error as db_exc:
                log.error("%s: could not keep the undecodable value: %s", address, db_exc)
            return 0
        try:
            fallback = None
            if indicated and reading.device_time is None:
                fallback = self._redelivered_at(device, characteristic, raw, link, received_at)
            observations = to_observations(
                reading,
                gateway_id=self.gateway_id,
                device=DeviceRef(address=address, model=entry.model, serial=entry.serial),
                zone=self._zone,
                received_at=received_at,
                user_id=entry.user_id,
                fallback_time=fallback,
            )
            return self._store(device, reading, observations)
        except Exception as exc:
            device.stats.errors += 1
            device.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: failed to store a %s reading", address, characteristic)
            return 0

    def _redelivered_at(
        self, device: _Device, characteristic: str, raw: bytes, link: int, received_at: datetime
    ) -> datetime | None:
        """The earlier receive time if this value repeats the last one of the previous link."""
        last = device.last_indicated.get(characteristic)
        if (
            last is not None
            and last.data == raw
            and last.link != link
            and received_at - last.measured_at <= REDELIVERY_WINDOW
        ):
            # Now seen on this link: an equal value later on it is a new measurement.
            last.link = link
            return last.measured_at
        device.last_indicated[characteristic] = _LastValue(raw, received_at, link)
        return None

    def _store(
        self, device: _Device, reading: DecodedReading, observations: list[Observation]
    ) -> int:
        address = device.entry.address
        fresh = [o for o in observations if o.id not in self._recent]
        added = self._outbox.add(fresh) if fresh else 0  # durable before anything else
        for obs in fresh:
            self._recent[obs.id] = None
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        if not added:
            device.stats.duplicates += 1
            log.info(
                "%s: %s reading received again (redelivered after a link drop); ignored",
                address,
                reading.characteristic,
            )
            return 0
        device.stats.readings += 1
        device.stats.observations += added
        self._on_stored()
        first = observations[0]
        self._mark_seen(device, first.received_at)
        if Flag.DEVICE_CLOCK_CORRECTED in first.flags:
            log.warning(
                "%s: device clock says %s, far from the gateway's; receive time used",
                address,
                reading.device_time,
            )
        log.info(
            "%s: stored %s reading %s (%d observations, time from %s)",
            address,
            reading.characteristic,
            first.reading_id,
            added,
            first.time_source.value,
        )
        return added

    def _mark_seen(self, device: _Device, at: datetime) -> None:
        # At most once a minute: a heart-rate strap notifies every second.
        if device.seen_saved_at is None or at - device.seen_saved_at >= SEEN_WRITE_INTERVAL:
            device.seen_saved_at = at
            try:
                self._pairing.seen(device.entry.address, at)
            except sqlite3.Error as exc:
                log.warning("%s: could not record last seen: %s", device.entry.address, exc)


def _battery_characteristic(services: BleakGATTServiceCollection) -> BleakGATTCharacteristic | None:
    """Battery Level (0x2A19) of the first Battery Service (0x180F), if the device has one."""
    for service in services:
        if normalize_uuid(service.uuid) == BATTERY_SERVICE:
            for char in service.characteristics:
                if normalize_uuid(char.uuid) == BATTERY_LEVEL:
                    return char
    return None
