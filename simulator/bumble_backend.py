"""The bleak backend on bumble as the gateway selects it: ``BumbleCentral`` and the setting.

The gateway keeps calling ``BleakScanner(backend=...)`` and ``BleakClient(device,
backend=...)``; ``backend_for`` and ``open_backends`` map ``VV_BLE_TRANSPORT`` to classes.
The gateway finds ``open_backends`` through the entry point ``bumble`` of the group
``vitalvagt.ble_backends`` (pyproject.toml), so it never names the simulator: a tablet
without the simulator installed has no such entry point, and only ``native`` is known.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bleak import BleakClient
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner

from simulator.bumble_adapter import TRANSPORT_SETTING, BumbleAdapter, BumbleTransportError
from simulator.bumble_client import BumbleClientBackend
from simulator.bumble_scanner import BumbleScannerBackend


class BumbleCentral(BumbleAdapter):
    """The gateway's BLE adapter on bumble, with the bleak backends bound to it.

    Built on a ``ControllerLink`` (in-process) or on a bumble HCI transport spec such as
    ``tcp-client:127.0.0.1:9000``. Open it (``async with``) before using its backends; the
    most recently opened central is also the process default used by unbound backends.
    """

    def backends(self) -> tuple[type[BumbleScannerBackend], type[BumbleClientBackend]]:
        """Backend classes bound to this central (bleak instantiates them itself)."""
        return self.bind(BumbleScannerBackend), self.bind(BumbleClientBackend)


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
        spec = kind.split(":", 1)[1].strip()
        if not spec:
            raise BumbleTransportError(
                f"{TRANSPORT_SETTING}={transport!r} names no HCI transport after 'bumble:', "
                "e.g. 'bumble:tcp-client:127.0.0.1:9000'"
            )
        async with BumbleCentral(hci_transport=spec) as central:
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
