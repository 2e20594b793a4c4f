"""The advertisement watcher: one BLE scan shared by every device task, run only when needed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

log = logging.getLogger(__name__)


class AdvertisementWatcher:
    """One scan shared by every device task; it runs only while some task needs it.

    A task needs it from when it starts waiting for its device until it has connected:
    the emulated backend (selected by VV_BLE_TRANSPORT) resolves a bonded peer's address
    from advertisements while connecting, and
    BlueZ and Android connect faster to a device the scan has just seen.
    """

    def __init__(self, scanner_backend: type[BaseBleakScanner] | None) -> None:
        self._backend = scanner_backend
        self._waiters: dict[str, list[asyncio.Future[BLEDevice]]] = {}
        self._holds = 0
        self._scanner: BleakScanner | None = None
        self._lock = asyncio.Lock()

    @property
    def scanning(self) -> bool:
        return self._scanner is not None

    @contextlib.asynccontextmanager
    async def sighted(self, address: str) -> AsyncIterator[BLEDevice]:
        """The device as soon as it advertises (no time-out: a cuff may sleep for days);
        the scan keeps running until the block ends."""
        key = address.upper()
        future: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self._holds += 1
        try:
            await self._update()
            device = await future
            self._forget(key, future)
            yield device
        finally:
            self._forget(key, future)
            self._holds -= 1
            await self._update()

    def _forget(self, key: str, future: asyncio.Future[BLEDevice]) -> None:
        waiters = self._waiters.get(key, [])
        if future in waiters:
            waiters.remove(future)
        if not waiters:
            self._waiters.pop(key, None)

    def _on_detection(self, device: BLEDevice, _adv: AdvertisementData) -> None:
        for future in self._waiters.get(device.address.upper(), ()):
            if not future.done():
                future.set_result(device)

    async def _update(self) -> None:
        async with self._lock:
            if self._holds and self._scanner is None:
                scanner = BleakScanner(self._on_detection, backend=self._backend)
                await scanner.start()
                self._scanner = scanner
            elif not self._holds and self._scanner is not None:
                scanner, self._scanner = self._scanner, None
                try:
                    await scanner.stop()
                except BleakError as exc:
                    log.warning("scanner: stopping failed: %s", exc)

    async def close(self) -> None:
        for waiters in self._waiters.values():
            for future in waiters:
                future.cancel()
        self._waiters.clear()
        self._holds = 0
        await self._update()
