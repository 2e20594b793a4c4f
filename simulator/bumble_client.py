"""The bleak client backend on a bumble central (``BleakClient(device, backend=...)``).

Where bleak leaves behaviour open, this backend does what BlueZ does (the gateway runs on
Linux or Android): the disconnected callback fires on every disconnection, an ATT
"insufficient encryption/authentication" error triggers Just Works pairing and one retry,
and a bonded peer is encrypted right after connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

from bleak import BleakScanner
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak.uuids import normalize_uuid_str
from bumble import core, hci
from bumble.att import ATT_Error
from bumble.device import Connection, Device
from bumble.gatt_client import AttributeProxy, CharacteristicProxy

from simulator.bumble_adapter import (
    DISCONNECT_TIMEOUT_S,
    BleakATTError,
    BumbleAdapter,
    run_until_disconnected,
)
from simulator.bumble_scanner import BumbleDeviceDetails, BumbleScannerBackend

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# BlueZ asks for 517 on every LE link; asking the same keeps payload limits realistic.
ATT_MTU_REQUEST = 517
# ATT errors after which BlueZ and Android raise the link's security and retry.
_SECURITY_ERRORS = frozenset({0x05, 0x0F})


class BumbleClientBackend(BaseBleakClient):
    """bleak client backend on a bumble central (``BleakClient(device, backend=...)``)."""

    central: ClassVar[BumbleAdapter | None] = None  # bound by BumbleAdapter.bind()

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        details = getattr(address_or_ble_device, "details", None)
        self._peer: hci.Address | None = None
        if isinstance(details, BumbleDeviceDetails):
            self._central = details.central
            self._peer = details.address
        else:
            self._central = type(self).central or BumbleAdapter.default()
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
            self.address, timeout=timeout_s, backend=self._central.bind(BumbleScannerBackend)
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
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await late.disconnect()

    async def _abort_connect(self) -> None:
        """After a failed or timed-out connect, leave no half-made link behind."""
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(core.BaseBumbleError, asyncio.TimeoutError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await connection.disconnect()
        # Clean up even if the controller never confirmed the disconnection.
        self._on_disconnection(hci.HCI_ErrorCode.CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
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
