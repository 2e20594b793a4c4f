"""An emulated home: a patient's emulated BLE health devices on one in-process radio.

``async with EmulatedHome(standard_devices()) as home`` powers the devices on a shared
``BumbleLink``; ``home.central()`` is a gateway central on the same radio, and
``home.link.serve_hci_tcp()`` serves the radio to a gateway in another process
(simulator/ble_home_server.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from simulator.ble_devices import EmulatedDevice, standard_devices
from simulator.bumble_backend import BumbleCentral
from simulator.bumble_radio import BumbleLink

_D = TypeVar("_D", bound=EmulatedDevice)


class EmulatedHome:
    """A patient's home: emulated devices on one ``BumbleLink``; async context manager."""

    def __init__(
        self, devices: Sequence[EmulatedDevice] | None = None, *, link: BumbleLink | None = None
    ) -> None:
        self.devices = list(devices) if devices is not None else standard_devices()
        self.link = link or BumbleLink()
        self._owns_link = link is None

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
        try:
            for device in self.devices:
                await device.open(self.link)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for device in self.devices:
            await device.close()
        if self._owns_link:
            await self.link.close()

    def central(self, **kwargs: Any) -> BumbleCentral:
        """A gateway central on this home's radio (open it with ``async with``)."""
        return BumbleCentral(link=self.link, **kwargs)

    def get(self, kind: type[_D]) -> _D:
        """The first device of that class."""
        return next(device for device in self.devices if isinstance(device, kind))
