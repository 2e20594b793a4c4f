"""Connecting to a BLE device, and the bleak backends the ``VV_BLE_TRANSPORT`` setting selects.

``native`` is bleak's own platform backend (BlueZ on a Linux tablet, Android). Any other
value names a backend plugin: an entry point in the group ``vitalvagt.ble_backends`` whose
name is the part before the first colon (``<name>`` or ``<name>:<options>``, for instance an
emulated backend for tests and demos). The entry point is a callable that takes the whole
setting and returns an async context manager yielding ``(scanner backend, client backend)``
for ``BleakScanner(backend=...)`` and ``BleakClient(..., backend=...)``. Plugins are loaded
only when the setting names one, so a tablet has none of their dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from bleak import BleakClient
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_16
from bleak_retry_connector import BLEAK_SAFETY_TIMEOUT, establish_connection

from gateway.errors import GatewayError, GatewaySettingError

log = logging.getLogger(__name__)

Backends = tuple[type[BaseBleakScanner] | None, type[BaseBleakClient] | None]
BackendOpener = Callable[[str], AbstractAsyncContextManager[Backends]]

TRANSPORT_SETTING = "VV_BLE_TRANSPORT"
BACKEND_GROUP = "vitalvagt.ble_backends"  # entry points: name -> BackendOpener
NATIVE = "native"

DEVICE_INFORMATION = {
    "manufacturer": normalize_uuid_16(0x2A29),
    "model": normalize_uuid_16(0x2A24),
    "serial": normalize_uuid_16(0x2A25),
    "firmware": normalize_uuid_16(0x2A26),
}
CONNECT_ATTEMPTS = 2
DISCONNECT_TIMEOUT_S = 10.0
INFO_TEXT_MAX = 128  # DeviceRef's limit for model and serial


async def read_device_information(client: BleakClient) -> dict[str, str | None]:
    """Manufacturer, model, serial and firmware from Device Information (None if absent)."""
    info: dict[str, str | None] = {}
    for name, char_uuid in DEVICE_INFORMATION.items():
        info[name] = None
        if client.services.get_characteristic(char_uuid) is None:
            continue
        try:
            raw = await client.read_gatt_char(char_uuid)
        except BleakError as exc:
            log.warning("%s: device information %s unreadable: %s", client.address, name, exc)
            continue
        text = bytes(raw).split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()
        info[name] = text[:INFO_TEXT_MAX] or None
    return info


async def connect(
    ble_device: BLEDevice,
    client_backend: type[BaseBleakClient] | None,
    *,
    name: str | None = None,
    pair: bool = False,
    disconnected_callback: Callable[[BleakClient], None] | None = None,
    attempts: int = CONNECT_ATTEMPTS,
) -> BleakClient:
    """A new connected client (bleak-retry-connector), bonding first when ``pair``."""
    kwargs: dict[str, Any] = {}
    if client_backend is not None:
        kwargs["backend"] = client_backend
    if pair:
        kwargs["pair"] = True
    # establish_connection has its own per-attempt time-outs; this one only guards against
    # a wait that never ends.
    async with asyncio.timeout(attempts * BLEAK_SAFETY_TIMEOUT + 30):
        return await establish_connection(
            BleakClient,
            ble_device,
            name or ble_device.address,
            disconnected_callback=disconnected_callback,
            max_attempts=attempts,
            **kwargs,
        )


async def disconnect(client: BleakClient) -> None:
    """Disconnect if connected, within a time-out, never raising (the link may be gone)."""
    if client.is_connected:
        with contextlib.suppress(BleakError, GatewayError, TimeoutError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await client.disconnect()


def backend_plugins() -> dict[str, EntryPoint]:
    """The installed backend plugins by name (entry point group ``vitalvagt.ble_backends``)."""
    return {ep.name.lower(): ep for ep in entry_points(group=BACKEND_GROUP)}


@contextlib.asynccontextmanager
async def ble_backends(transport: str) -> AsyncIterator[Backends]:
    """bleak backends for ``VV_BLE_TRANSPORT``: ``native`` is bleak's own (BlueZ, Android);
    ``<name>[:<options>]`` is the backend plugin of that name, open for the block.

    An unknown value is a ``GatewayError`` naming the setting and the known choices.
    """
    value = transport.strip()
    if value.lower() == NATIVE:
        yield None, None
        return
    name = value.split(":", 1)[0].strip().lower()
    plugins = backend_plugins()
    plugin = plugins.get(name) if name != NATIVE else None
    if plugin is None:
        known = [f"'{NATIVE}'"] + [f"'{n}' or '{n}:<options>'" for n in sorted(plugins)]
        raise GatewaySettingError(
            f"{TRANSPORT_SETTING}={transport!r} is not a known BLE transport; choose one of: "
            f"{', '.join(known)} ('{NATIVE}' is the tablet's own Bluetooth through bleak)"
        )
    try:
        opener: BackendOpener = plugin.load()
    except ImportError as exc:
        raise GatewayError(
            f"{TRANSPORT_SETTING}={transport!r}: the {name!r} BLE backend ({plugin.value}) "
            f"cannot be loaded: {exc}; is the package that provides it installed?"
        ) from exc
    async with opener(value) as backends:
        yield backends
