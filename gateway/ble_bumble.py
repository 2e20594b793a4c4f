"""A bleak backend on bumble, so the gateway's unchanged bleak code runs without a kernel radio.

This machine (and CI) has no Bluetooth in the kernel, so BlueZ and bleak's Linux backend
cannot run. bumble is a complete Bluetooth host plus an emulated controller in Python; this
module puts bleak's backend interface (``BaseBleakScanner``, ``BaseBleakClient``) on a bumble
central ``Device``. The gateway keeps calling ``BleakScanner(backend=...)`` and
``BleakClient(device, backend=...)``; ``backend_for`` maps ``VV_BLE_TRANSPORT`` to classes.

The central's controller comes from a ``ControllerLink`` (the in-process radio of
``simulator.ble_devices.BumbleLink``) or from any bumble HCI transport spec, such as
``tcp-client:127.0.0.1:9000`` for a virtual controller served by another process.

Where bleak leaves behaviour open, this backend does what BlueZ does (the gateway runs on
Linux or Android): the disconnected callback fires on every disconnection, an ATT
"insufficient encryption/authentication" error triggers Just Works pairing and one retry,
and a bonded peer is encrypted right after connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuid_lib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, TypeVar

from bleak import BleakClient, BleakScanner
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import PROTOCOL_ERROR_CODES, BleakDeviceNotFoundError, BleakError
from bleak.uuids import normalize_uuid_str
from bumble import core, hci
from bumble.att import ATT_Error
from bumble.controller import Controller
from bumble.device import Advertisement, Connection, Device
from bumble.gatt_client import AttributeProxy, CharacteristicProxy
from bumble.host import Host
from bumble.keys import MemoryKeyStore
from bumble.transport import open_transport
from bumble.transport.common import Transport

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

TRANSPORT_SETTING = "VV_BLE_TRANSPORT"
DEFAULT_CENTRAL_ADDRESS = "C0:56:56:00:00:01"  # random static: top two bits set
# BlueZ asks for 517 on every LE link; asking the same keeps payload limits realistic.
ATT_MTU_REQUEST = 517
# ATT errors after which BlueZ and Android raise the link's security and retry.
_SECURITY_ERRORS = frozenset({0x05, 0x0F})
_DISCONNECT_TIMEOUT_S = 10.0
_SETTLE_S = 0.05


class BumbleTransportError(BleakError, GatewayError):
    """The bumble radio is not usable (not open, or closed under a running operation)."""


class BleakATTError(BleakError, GatewayError):
    """The peripheral answered an ATT request with an error response."""

    def __init__(self, address: str, what: str, error_code: int) -> None:
        name = PROTOCOL_ERROR_CODES.get(error_code, "Unknown")
        super().__init__(f"{address}: {what} failed: ATT error 0x{error_code:02X} ({name})")
        self.error_code = error_code


# --------------------------------------------------------------------------- central


class ControllerLink(Protocol):
    """An in-process radio that hands out emulated controllers (see simulator.ble_devices)."""

    def attach_host(self, name: str) -> tuple[Controller, Host]: ...

    def detach(self, controller: Controller) -> None: ...


async def run_until_disconnected(
    connection: Connection, awaitable: Awaitable[_T]
) -> tuple[bool, _T | None]:
    """Await ``awaitable`` unless the link drops first.

    Returns ``(True, result)`` when it finished and ``(False, None)`` when the link dropped
    (bumble cancels its pending ATT request on disconnection, which would otherwise surface
    as a ``CancelledError`` indistinguishable from cancelling the caller).
    """
    task = asyncio.ensure_future(awaitable)
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_disconnection(_reason: int) -> None:
        if not lost.done():
            lost.set_result(None)

    connection.on(connection.EVENT_DISCONNECTION, on_disconnection)
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            # A response that arrived just before the link dropped completes the task only
            # after a few scheduler hops, later than the disconnection event: let it settle.
            await asyncio.wait({task}, timeout=_SETTLE_S)
    finally:
        connection.remove_listener(connection.EVENT_DISCONNECTION, on_disconnection)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        return False, None
    return True, task.result()


@dataclass(frozen=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` for devices found by the bumble scanner."""

    address: hci.Address
    central: BumbleCentral = field(repr=False)
    advertisement: Advertisement = field(repr=False)


class BumbleCentral:
    """The gateway's BLE adapter: one bumble ``Device`` in the central role.

    Built on a ``ControllerLink`` (in-process) or on a bumble HCI transport spec such as
    ``tcp-client:127.0.0.1:9000``. Open it (``async with``) before using its backends; the
    most recently opened central is also the process default used by unbound backends.
    """

    _default: ClassVar[BumbleCentral | None] = None

    def __init__(
        self,
        *,
        link: ControllerLink | None = None,
        hci_transport: str | None = None,
        address: str = DEFAULT_CENTRAL_ADDRESS,
        name: str = "vitalvagt-gateway",
        auto_pair_on_insufficient_security: bool = True,
    ) -> None:
        if (link is None) == (hci_transport is None):
            raise ValueError("BumbleCentral needs exactly one of link= or hci_transport=")
        self._link = link
        self._hci_transport = hci_transport
        self._address = hci.Address(address)
        self._name = name
        self.auto_pair_on_insufficient_security = auto_pair_on_insufficient_security
        self._device: Device | None = None
        self._controller: Controller | None = None
        self._transport: Transport | None = None
        self._scan_users = 0
        self._scan_lock = asyncio.Lock()
        # bumble (and real controllers) allow one pending LE connection at a time.
        self.connect_lock = asyncio.Lock()
        self._ad_listeners: set[Callable[[Advertisement], None]] = set()
        self._backends: tuple[type[BumbleScannerBackend], type[BumbleClientBackend]] | None = None

    @property
    def description(self) -> str:
        return self._hci_transport or "local-link"

    @property
    def device(self) -> Device:
        if self._device is None:
            raise BumbleTransportError(f"bumble central ({self.description}) is not open")
        return self._device

    @property
    def is_open(self) -> bool:
        return self._device is not None

    @classmethod
    def default(cls) -> BumbleCentral:
        if cls._default is None:
            raise BumbleTransportError(
                "no bumble central is open: open a BumbleCentral (async with) before "
                f"using the bumble backend ({TRANSPORT_SETTING}=bumble)"
            )
        return cls._default

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._device is not None:
            return
        if self._link is not None:
            self._controller, host = self._link.attach_host(self._name)
        else:
            assert self._hci_transport is not None
            try:
                self._transport = await open_transport(self._hci_transport)
            except (OSError, core.BaseBumbleError) as exc:
                raise BumbleTransportError(
                    f"bumble central: cannot open HCI transport {self._hci_transport!r}: {exc}; "
                    "is the virtual controller running?"
                ) from exc
            host = Host(self._transport.source, self._transport.sink)
        device = Device(name=self._name, address=self._address, host=host)
        # Bonds live as long as this central; a restart forgets them, like a fresh adapter.
        device.keystore = MemoryKeyStore()
        device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await device.power_on()
        self._device = device
        BumbleCentral._default = self
        logger.info("%s: bumble central open as %s", self.description, self._address)

    async def close(self) -> None:
        device = self._device
        if device is None:
            return
        for connection in list(device.connections.values()):
            with contextlib.suppress(core.BaseBumbleError, asyncio.TimeoutError):
                async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                    await connection.disconnect()
        if device.is_scanning:
            with contextlib.suppress(core.BaseBumbleError):
                await device.stop_scanning()
        await device.power_off()
        self._device = None
        self._scan_users = 0
        if self._controller is not None and self._link is not None:
            self._link.detach(self._controller)
            self._controller = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        if BumbleCentral._default is self:
            BumbleCentral._default = None
        logger.info("%s: bumble central closed", self.description)

    def backends(self) -> tuple[type[BumbleScannerBackend], type[BumbleClientBackend]]:
        """Backend classes bound to this central (bleak instantiates them itself)."""
        if self._backends is None:
            bound = {"central": self, "__module__": __name__}
            scanner = type("BoundBumbleScannerBackend", (BumbleScannerBackend,), bound)
            client = type("BoundBumbleClientBackend", (BumbleClientBackend,), bound)
            self._backends = (scanner, client)
        return self._backends

    # Scanning is shared: several BleakScanner instances may run on one central.
    def add_advertisement_listener(
        self, listener: Callable[[Advertisement], None]
    ) -> Callable[[], None]:
        self._ad_listeners.add(listener)
        return lambda: self._ad_listeners.discard(listener)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for listener in list(self._ad_listeners):
            listener(advertisement)

    async def acquire_scan(self, *, active: bool) -> None:
        async with self._scan_lock:
            if self._scan_users == 0:
                await self.device.start_scanning(active=active, filter_duplicates=False)
            self._scan_users += 1

    async def release_scan(self) -> None:
        async with self._scan_lock:
            self._scan_users = max(self._scan_users - 1, 0)
            if self._scan_users == 0 and self._device is not None and self._device.is_scanning:
                await self._device.stop_scanning()

    async def has_bond(self, address: hci.Address) -> bool:
        keystore = self.device.keystore
        return keystore is not None and await keystore.get(str(address)) is not None

    async def forget_bond(self, address: hci.Address) -> None:
        keystore = self.device.keystore
        if keystore is not None:
            with contextlib.suppress(KeyError):
                await keystore.delete(str(address))


# --------------------------------------------------------------------------- advertisement


def _uuid_from_le(data: bytes) -> str:
    if len(data) in (2, 4):
        return normalize_uuid_str(data[::-1].hex())
    return str(uuid_lib.UUID(bytes=data[::-1]))


def advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    """Translate a bumble advertisement into bleak's ``AdvertisementData``."""
    local_name: str | None = None
    short_name: str | None = None
    service_uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    for ad_type, value in advertisement.data.ad_structures:
        match int(ad_type):
            case 0x02 | 0x03:
                service_uuids += [
                    _uuid_from_le(value[i : i + 2]) for i in range(0, len(value) - 1, 2)
                ]
            case 0x04 | 0x05:
                service_uuids += [
                    _uuid_from_le(value[i : i + 4]) for i in range(0, len(value) - 3, 4)
                ]
            case 0x06 | 0x07:
                service_uuids += [
                    _uuid_from_le(value[i : i + 16]) for i in range(0, len(value) - 15, 16)
                ]
            case 0x08:
                short_name = value.decode("utf-8", errors="replace")
            case 0x09:
                local_name = value.decode("utf-8", errors="replace")
            case 0x0A if len(value) == 1:
                tx_power = int.from_bytes(value, "little", signed=True)
            case 0x16 if len(value) >= 2:
                service_data[_uuid_from_le(value[:2])] = bytes(value[2:])
            case 0x20 if len(value) >= 4:
                service_data[_uuid_from_le(value[:4])] = bytes(value[4:])
            case 0x21 if len(value) >= 16:
                service_data[_uuid_from_le(value[:16])] = bytes(value[16:])
            case 0xFF if len(value) >= 2:
                manufacturer_data[int.from_bytes(value[:2], "little")] = bytes(value[2:])
    return AdvertisementData(
        local_name=local_name or short_name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=list(dict.fromkeys(service_uuids)),
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


def address_string(address: hci.Address) -> str:
    """The address as BlueZ prints it: upper case, no type suffix."""
    return address.to_string(with_type_qualifier=False)


# --------------------------------------------------------------------------- scanner


class BumbleScannerBackend(BaseBleakScanner):
    """bleak scanner backend on a bumble central (``BleakScanner(backend=...)``)."""

    central: ClassVar[BumbleCentral | None] = None  # bound by BumbleCentral.backends()

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **_kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._central = type(self).central or BumbleCentral.default()
        self._active = scanning_mode != "passive"
        self._remove_listener: Callable[[], None] | None = None

    async def start(self) -> None:
        if self._remove_listener is not None:
            return
        self.seen_devices = {}
        self._remove_listener = self._central.add_advertisement_listener(self._on_advertisement)
        try:
            await self._central.acquire_scan(active=self._active)
        except core.BaseBumbleError as exc:
            self._remove_listener()
            self._remove_listener = None
            raise BleakError(f"{self._central.description}: cannot start scanning: {exc}") from exc

    async def stop(self) -> None:
        if self._remove_listener is None:
            return
        self._remove_listener()
        self._remove_listener = None
        try:
            await self._central.release_scan()
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self._central.description}: cannot stop scanning: {exc}") from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        adv = advertisement_data(advertisement)
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        address = address_string(advertisement.address)
        details = BumbleDeviceDetails(advertisement.address, self._central, advertisement)
        device = self.create_or_update_device(address, address, adv.local_name, details, adv)
        self.call_detection_callbacks(device, adv)


# --------------------------------------------------------------------------- client


class BumbleClientBackend(BaseBleakClient):
    """bleak client backend on a bumble central (``BleakClient(device, backend=...)``)."""

    central: ClassVar[BumbleCentral | None] = None  # bound by BumbleCentral.backends()

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        details = getattr(address_or_ble_device, "details", None)
        self._peer: hci.Address | None = None
        if isinstance(details, BumbleDeviceDetails):
            self._central = details.central
            self._peer = details.address
        else:
            self._central = type(self).central or BumbleCentral.default()
        self._display_name = getattr(address_or_ble_device, "name", None)
        self._service_filter: set[str] | None = kwargs.get("services")
        self._connection: Connection | None = None
        self._disconnected = asyncio.Event()
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}

    # -- properties

    @property
    def name(self) -> str:
        return self._display_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    # -- connection

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self.is_connected:
            raise BleakError(f"{self.address}: client is already connected")
        timeout_s = float(kwargs.get("timeout", self._timeout))
        if self._peer is None:
            # Like BlueZ: an address alone means scanning first, with its own time-out.
            await self._find_peer(timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                await self._connect(pair)
        except BaseException:
            await self._abort_connect()
            raise

    async def _find_peer(self, timeout_s: float) -> None:
        found = await BleakScanner.find_device_by_address(
            self.address, timeout=timeout_s, backend=self._central.backends()[0]
        )
        if found is None or not isinstance(found.details, BumbleDeviceDetails):
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found."
            )
        self._peer = found.details.address
        self._display_name = found.name

    async def _connect(self, pair: bool) -> None:
        central = self._central
        assert self._peer is not None
        device = central.device
        async with central.connect_lock:
            try:
                # No bumble time-out here: ours is outside, and on cancellation we withdraw
                # the request ourselves while still holding the lock (it may be another
                # client's request otherwise).
                connection = await device.connect(self._peer, timeout=None)
            except asyncio.CancelledError:
                await self._withdraw_connect(device)
                raise
            except core.BaseBumbleError as exc:
                raise BleakError(f"{self.address}: connection failed: {exc}") from exc
        self._attach(connection)
        logger.debug("%s: connected (handle 0x%04X)", self.address, connection.handle)
        try:
            await self._gatt("MTU exchange", connection.gatt_client.request_mtu(ATT_MTU_REQUEST))
        except BleakATTError as exc:
            logger.warning("%s: MTU exchange refused, staying at 23: %s", self.address, exc)
        if await central.has_bond(self._peer):
            await self._encrypt_bonded(connection)
        elif pair:
            await self.pair()
        await self._discover_services()

    def _attach(self, connection: Connection) -> None:
        self._connection = connection
        self._disconnected = asyncio.Event()
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)

    def _on_disconnection(self, reason: int) -> None:
        connection = self._connection
        if connection is None:
            return
        connection.remove_listener(connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._connection = None
        self.services = None
        self._subscriptions.clear()
        self._disconnected.set()
        logger.info("%s: disconnected (%s)", self.address, hci.HCI_Constant.error_name(reason))
        # Like BlueZ: the callback fires for every disconnection, asked for or not.
        if self._disconnected_callback is not None:
            try:
                self._disconnected_callback()
            except Exception:
                logger.exception("%s: disconnected callback failed", self.address)

    async def _withdraw_connect(self, device: Device) -> None:
        """Cancel our pending LE Create Connection, and drop the link if it just came up."""
        with contextlib.suppress(core.BaseBumbleError, hci.HCI_Error, asyncio.TimeoutError):
            async with asyncio.timeout(2.0):
                # Refused (Command Disallowed) when nothing is pending any more, which is fine.
                await device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
        late = next((c for c in device.connections.values() if c.peer_address == self._peer), None)
        if late is not None:
            with contextlib.suppress(core.BaseBumbleError, asyncio.TimeoutError):
                async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                    await late.disconnect()

    async def _abort_connect(self) -> None:
        """After a failed or timed-out connect, leave no half-made link behind."""
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(core.BaseBumbleError, asyncio.TimeoutError):
            async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                await connection.disconnect()
        # Clean up even if the controller never confirmed the disconnection.
        self._on_disconnection(hci.HCI_ErrorCode.CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                await connection.disconnect()
                await self._disconnected.wait()
        except core.BaseBumbleError as exc:
            # The peer may have dropped the link first; the event then already arrived.
            if self._connection is not None:
                raise BleakError(f"{self.address}: disconnect failed: {exc}") from exc

    # -- security

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        connection = self._require_connection()
        if connection.encryption and await self._central.has_bond(connection.peer_address):
            return
        try:
            ok, _ = await run_until_disconnected(connection, connection.pair())
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self.address}: pairing failed: {exc}") from exc
        if not ok:
            raise BleakError(f"{self.address}: disconnected during pairing")
        logger.info("%s: paired (Just Works) and bonded", self.address)

    async def unpair(self) -> None:
        peer = self._peer
        if peer is None:
            raise BleakDeviceNotFoundError(
                self.address, f"{self.address}: never seen, cannot unpair"
            )
        await self._central.forget_bond(peer)
        await self.disconnect()

    async def _encrypt_bonded(self, connection: Connection) -> None:
        try:
            ok, _ = await run_until_disconnected(connection, connection.encrypt())
        except core.BaseBumbleError as exc:
            # A peer that lost its bond rejects the key; BlueZ then carries on unencrypted.
            logger.warning("%s: encryption with stored bond failed: %s", self.address, exc)
            return
        if not ok:
            raise BleakError(f"{self.address}: disconnected while encrypting")

    # -- GATT

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"{self.address}: not connected")
        return self._connection

    async def _gatt(self, what: str, awaitable: Coroutine[Any, Any, _T]) -> _T:
        """Run one GATT procedure, translating bumble's errors into bleak's."""
        connection = self._connection
        if connection is None:
            awaitable.close()  # never started: close it rather than leak a warning
            raise BleakError(f"{self.address}: not connected")
        try:
            ok, result = await run_until_disconnected(connection, awaitable)
        except ATT_Error as exc:
            raise BleakATTError(self.address, what, exc.error_code) from exc
        except core.TimeoutError as exc:
            raise TimeoutError(f"{self.address}: {what} timed out") from exc
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self.address}: {what} failed: {exc}") from exc
        if not ok:
            raise BleakError(f"{self.address}: disconnected during {what}")
        return result  # type: ignore[return-value]

    async def _secure_gatt(self, what: str, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Like BlueZ: on an ATT security error, pair (Just Works) and retry once."""
        try:
            return await self._gatt(what, make())
        except BleakATTError as exc:
            if (
                exc.error_code not in _SECURITY_ERRORS
                or not self._central.auto_pair_on_insufficient_security
            ):
                raise
            logger.info("%s: %s needs a secure link, pairing", self.address, what)
        await self.pair()
        return await self._gatt(what, make())

    async def _discover_services(self) -> None:
        connection = self._require_connection()
        client = connection.gatt_client
        uuids = [core.UUID(u) for u in self._service_filter] if self._service_filter else []
        services = await self._gatt("service discovery", client.discover_services(uuids))
        collection = BleakGATTServiceCollection()
        for service in services:
            bleak_service = BleakGATTService(service, service.handle, _uuid(service.uuid))
            collection.add_service(bleak_service)
            characteristics = await self._gatt(
                "characteristic discovery", service.discover_characteristics()
            )
            for characteristic in characteristics:
                descriptors = await self._gatt(
                    "descriptor discovery", characteristic.discover_descriptors()
                )
                bleak_char = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    _uuid(characteristic.uuid),
                    sorted(gatt_char_props_to_strs(int(characteristic.properties))),
                    lambda: max(self.mtu_size - 3, 20),
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                for descriptor in descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor, descriptor.handle, _uuid(descriptor.type), bleak_char
                        )
                    )
        self.services = collection

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, **kwargs: Any
    ) -> bytearray:
        proxy: AttributeProxy[bytes] = characteristic.obj
        client = self._require_connection().gatt_client
        value = await self._secure_gatt(
            f"read of {characteristic.uuid}", lambda: client.read_value(proxy)
        )
        return bytearray(value)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, **kwargs: Any
    ) -> bytearray:
        proxy: AttributeProxy[bytes] = descriptor.obj
        client = self._require_connection().gatt_client
        value = await self._secure_gatt(
            f"read of descriptor {descriptor.handle}", lambda: client.read_value(proxy)
        )
        return bytearray(value)

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        proxy: AttributeProxy[bytes] = characteristic.obj
        client = self._require_connection().gatt_client
        payload = bytes(data)
        await self._secure_gatt(
            f"write to {characteristic.uuid}",
            lambda: client.write_value(proxy, payload, with_response=response),
        )

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        proxy: AttributeProxy[bytes] = descriptor.obj
        client = self._require_connection().gatt_client
        payload = bytes(data)
        await self._secure_gatt(
            f"write to descriptor {descriptor.handle}",
            lambda: client.write_value(proxy, payload, with_response=True),
        )

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        props = characteristic.properties
        if "notify" not in props and "indicate" not in props:
            raise BleakError(
                f"{self.address}: {characteristic.uuid} supports neither notify nor indicate"
            )
        if characteristic.handle in self._subscriptions:
            raise BleakError(
                f"{self.address}: notifications on {characteristic.uuid} already started"
            )
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        client = self._require_connection().gatt_client

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        self._subscriptions[characteristic.handle] = on_value
        try:
            # prefer_notify mirrors bleak on every platform when both are offered.
            await self._secure_gatt(
                f"subscription to {characteristic.uuid}",
                lambda: client.subscribe(proxy, on_value, prefer_notify=True),
            )
        except BaseException:
            self._subscriptions.pop(characteristic.handle, None)
            # bumble registers the subscriber before writing the CCCD; undo it.
            for table in (client.notification_subscribers, client.indication_subscribers):
                table.pop(characteristic.handle, None)
            raise

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        on_value = self._subscriptions.pop(characteristic.handle, None)
        if on_value is None:
            return
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        client = self._require_connection().gatt_client
        await self._gatt(
            f"unsubscription from {characteristic.uuid}", client.unsubscribe(proxy, on_value)
        )


def _uuid(value: core.UUID) -> str:
    return normalize_uuid_str(value.to_hex_str("-"))


# --------------------------------------------------------------------------- selection

BackendPair = tuple[type[BaseBleakScanner] | None, type[BaseBleakClient] | None]


def backend_for(transport: str, central: BumbleCentral | None = None) -> BackendPair:
    """Backend classes for a ``VV_BLE_TRANSPORT`` value.

    ``native`` gives ``(None, None)``: bleak picks its platform backend (BlueZ, Android).
    ``bumble`` gives the bumble backends, bound to ``central`` if given, otherwise to the
    open process-default central when bleak instantiates them.
    """
    kind = transport.strip().lower()
    if kind == "native":
        return None, None
    if kind == "bumble" or kind.startswith("bumble:"):
        if central is not None:
            return central.backends()
        if kind != "bumble":
            raise ValueError(
                f"{TRANSPORT_SETTING}={transport!r} names an HCI transport: open it with "
                "open_backends(), which owns the central"
            )
        return BumbleScannerBackend, BumbleClientBackend
    raise ValueError(
        f"{TRANSPORT_SETTING}={transport!r} is not understood: use 'native', 'bumble' "
        "(in-process emulation) or 'bumble:<bumble HCI transport>', e.g. "
        "'bumble:tcp-client:127.0.0.1:9000'"
    )


@contextlib.asynccontextmanager
async def open_backends(transport: str) -> AsyncIterator[BackendPair]:
    """Backends for a ``VV_BLE_TRANSPORT`` value, opening a central when the value names one.

    ``bumble:<spec>`` opens a ``BumbleCentral`` on that HCI transport for the block.
    """
    kind = transport.strip()
    if kind.lower().startswith("bumble:"):
        async with BumbleCentral(hci_transport=kind.split(":", 1)[1]) as central:
            yield central.backends()
        return
    yield backend_for(kind)


def bleak_client_class(client_backend: type[BaseBleakClient] | None) -> type[BleakClient]:
    """A ``BleakClient`` subclass that always uses ``client_backend``.

    For APIs that take a client class, such as bleak_retry_connector's
    ``establish_connection(client_class, ...)``; passing ``backend=`` to
    ``establish_connection`` works as well since it forwards extra keyword arguments.
    """
    if client_backend is None:
        return BleakClient

    class _BackendBleakClient(BleakClient):
        def __init__(
            self, address_or_ble_device: BLEDevice | str, *args: Any, **kwargs: Any
        ) -> None:
            kwargs.setdefault("backend", client_backend)
            super().__init__(address_or_ble_device, *args, **kwargs)

    _BackendBleakClient.__name__ = f"BleakClient[{client_backend.__name__}]"
    return _BackendBleakClient
