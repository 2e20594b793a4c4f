"""The emulated devices' Battery Service: a level that drains over simulated time and notifies.

``EmulatedBattery`` is the Battery Service (0x180F) of one emulated device
(simulator/ble_devices.py): its Battery Level (0x2A19, one byte, percent) can be read and,
unless ``notify=False``, notifies. The level drains by ``drain_per_day`` points a day of the
simulated time (``sim_time``: the real clock unless a fleet's clock is given; 3 points a day,
a month from full to empty, like a cuff's cells used twice a day) and is notified to a
subscribed central whenever it changed by a whole point (checked every ``check_s`` real
seconds) or is set (``level = 100``: a battery change). ``notify(raw)`` sends any bytes
instead, for tests of invalid levels; a level set above 100 (a fault) does not drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from datetime import UTC, datetime

from bumble import core, gatt
from bumble.att import Attribute
from bumble.device import Connection, Device


def _real_now() -> datetime:
    return datetime.now(UTC)


class EmulatedBattery:
    """One device's Battery Service; ``open``/``close`` with the device."""

    def __init__(
        self,
        level: int = 87,
        *,
        notify: bool = True,
        drain_per_day: float = 3.0,
        check_s: float = 1.0,
        sim_time: Callable[[], datetime] | None = None,
    ) -> None:
        self.notifies = notify
        self.drain_per_day = drain_per_day
        self.check_s = check_s
        self._sim_time = sim_time or _real_now
        self._set = (self._checked(level), self._sim_time())  # the level set, and when
        self.sent: list[bytes] = []  # notifications handed to the radio
        self._sent_level: int | None = None
        self._characteristic: gatt.Characteristic[bytes] | None = None
        self._device: Device | None = None
        self._connection: Callable[[], Connection | None] = lambda: None
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def level(self) -> int:
        """The level now: the one set, less the drain over the simulated time since then."""
        level, since = self._set
        if level > 100:
            return level
        days = (self._sim_time() - since).total_seconds() / 86_400
        return max(0, min(level, math.ceil(level - self.drain_per_day * days)))

    @level.setter
    def level(self, level: int) -> None:
        self._set = (self._checked(level), self._sim_time())
        if self._device is not None and self.notifies:
            self._start(self.notify())

    def service(self) -> gatt.Service:
        prop = gatt.Characteristic.Properties
        self._characteristic = gatt.Characteristic(
            core.UUID.from_16_bits(0x2A19),
            prop.READ | prop.NOTIFY if self.notifies else prop.READ,
            Attribute.READABLE,
            gatt.CharacteristicValue(read=lambda _connection: bytes([self.level])),
        )
        return gatt.Service(core.UUID.from_16_bits(0x180F), [self._characteristic])

    def open(self, device: Device, connection: Callable[[], Connection | None]) -> None:
        """The device is on: notify changes to whoever ``connection()`` names."""
        self._device, self._connection = device, connection
        if self.notifies:
            self._start(self._watch())

    async def close(self) -> None:
        self._device = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def notify(self, raw: bytes | None = None) -> bool:
        """Notify the level (or ``raw`` bytes instead) to a subscribed central; False when
        none listens."""
        device, characteristic, connection = self._device, self._characteristic, self._connection()
        if device is None or characteristic is None or connection is None:
            return False
        if not device.gatt_server.read_cccd(connection, characteristic)[0] & 0x01:
            return False
        level = self.level
        payload = bytes([level]) if raw is None else bytes(raw)
        with contextlib.suppress(core.BaseBumbleError):
            await device.notify_subscriber(connection, characteristic, payload)
            self.sent.append(payload)
            if raw is None:
                self._sent_level = level
            return True
        return False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            if self.level != self._sent_level:
                await self.notify()

    def _start(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _checked(level: int) -> int:
        if not 0 <= level <= 0xFF:
            raise ValueError(f"a Battery Level is one byte, not {level}")
        return level
