"""The gateway side of the bumble emulation: a bumble ``Device`` in the central role.

This machine (and CI) has no Bluetooth in the kernel, so BlueZ and bleak's Linux backend
cannot run. bumble is a complete Bluetooth host plus an emulated controller in Python; the
bleak backend on it is made of this adapter (life cycle, shared scanning, bonds), the scanner
backend (simulator/bumble_scanner.py), the client backend (simulator/bumble_client.py) and
``BumbleCentral``, which binds them to one adapter (simulator/bumble_backend.py).

The adapter's controller comes from a ``ControllerLink`` (the in-process radio
``simulator.bumble_radio.BumbleLink``) or from any bumble HCI transport spec, such as
``tcp-client:127.0.0.1:9000`` for a virtual controller served by another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ClassVar, Protocol, Self, TypeVar

from bleak.exc import PROTOCOL_ERROR_CODES, BleakError
from bumble import core, hci
from bumble.controller import Controller
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.keys import MemoryKeyStore
from bumble.transport import open_transport
from bumble.transport.common import Transport

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_B = TypeVar("_B")  # a backend class

TRANSPORT_SETTING = "VV_BLE_TRANSPORT"
DEFAULT_CENTRAL_ADDRESS = "C0:56:56:00:00:01"  # random static: top two bits set
DISCONNECT_TIMEOUT_S = 10.0
_SETTLE_S = 0.05


class BumbleTransportError(BleakError, GatewayError):
    """The bumble radio is not usable (not open, or closed under a running operation)."""


class BleakATTError(BleakError, GatewayError):
    """The peripheral answered an ATT request with an error response."""

    def __init__(self, address: str, what: str, error_code: int) -> None:
        name = PROTOCOL_ERROR_CODES.get(error_code, "Unknown")
        super().__init__(f"{address}: {what} failed: ATT error 0x{error_code:02X} ({name})")
        self.error_code = error_code


class ControllerLink(Protocol):
    """An in-process radio that hands out emulated controllers (see simulator.bumble_radio)."""

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


class BumbleAdapter:
    """The gateway's BLE adapter: one bumble ``Device`` in the central role.

    Built on a ``ControllerLink`` (in-process) or on a bumble HCI transport spec such as
    ``tcp-client:127.0.0.1:9000``. Open it (``async with``) before using its backends; the
    most recently opened central is also the process default used by unbound backends.
    """

    _default: ClassVar[BumbleAdapter | None] = None

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
            raise ValueError("a bumble central needs exactly one of link= or hci_transport=")
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
        self._bound: dict[type, type] = {}

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
    def default(cls) -> BumbleAdapter:
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
        BumbleAdapter._default = self
        logger.info("%s: bumble central open as %s", self.description, self._address)

    async def close(self) -> None:
        device = self._device
        if device is None:
            return
        for connection in list(device.connections.values()):
            with contextlib.suppress(core.BaseBumbleError, asyncio.TimeoutError):
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
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
        if BumbleAdapter._default is self:
            BumbleAdapter._default = None
        logger.info("%s: bumble central closed", self.description)

    def bind(self, backend: type[_B]) -> type[_B]:
        """``backend`` (a scanner or client backend class) bound to this central: bleak
        instantiates backend classes itself, so the central travels as a class attribute."""
        bound = self._bound.get(backend)
        if bound is None:
            attrs = {"central": self, "__module__": backend.__module__}
            bound = self._bound[backend] = type(f"Bound{backend.__name__}", (backend,), attrs)
        return bound  # type: ignore[return-value]

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
