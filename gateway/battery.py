"""Battery levels: the Battery Service's values checked, and when a change is worth a status.

A device with the Battery Service (0x180F) has a Battery Level characteristic (0x2A19): one
byte, the charge in percent, 0-100. The BLE manager reads it on every connection and
subscribes to it where the device notifies it (gateway/ble.py); ``battery_level`` checks the
bytes (a value over 100 is invalid and dropped, never passed on). A device without the
service is normal: it simply has no level.

``BatteryReport`` keeps the last level and its time per paired device and decides when the
gateway's retained ``online`` status (vv/v1/gw/{id}/status, its ``devices``) is published
again for them: the status the publisher sends on every connection lists them anyway, and
between connections a change is sent

- at once, but at most one status per ``first_level_s`` (10 s), for a device whose level
  the hub has not had from this process: after a start the devices connect within seconds
  of each other, and one status for them all is enough;
- at most one status per ``step_interval_s`` (5 minutes) when a level moved by ``step``
  (5) points or more from the one last sent: a battery change (10 % to 100 %) or a fast
  drain reaches the nurse within minutes, while a level that jumps about (the voltage of
  a cuff's cells sags while it pumps, and some devices notify every second) makes at most
  12 messages an hour, not one a second;
- at most one status per ``refresh_s`` (60 minutes) for anything smaller (a point or two,
  or the same level read again later): a slow drain of about 1-3 points a day is on the hub
  within the hour with its time, and no level there is more than an hour behind the tablet.

Everything here runs on the event loop (the BLE callbacks and the publisher's status are
both there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import DecodeError
from gateway.pairing import PairedDevice
from vitalvagt.wire import MAX_STATUS_DEVICES, StatusDevice

log = logging.getLogger(__name__)

BATTERY_SERVICE = "180F"
BATTERY_LEVEL = "2A19"

BATTERY_STEP = 5  # points: a change this large is sent within STEP_INTERVAL_S
FIRST_LEVEL_S = 10.0  # the devices' first levels after a start share one status
STEP_INTERVAL_S = 5 * 60.0  # at most 12 statuses an hour, whatever a device notifies
REFRESH_S = 60 * 60.0  # a smaller change is on the hub within the hour


def battery_level(data: bytes | bytearray) -> int:
    """The percent of one Battery Level value; DecodeError when it is not one byte 0-100."""
    if len(data) != 1:
        raise DecodeError(BATTERY_LEVEL, None, f"is {len(data)} bytes, not 1", "Battery Level")
    level = data[0]
    if level > 100:
        raise DecodeError(
            BATTERY_LEVEL, 0, f"{level} is not a percent (0-100); invalid", "Battery Level"
        )
    return level


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    level: int
    at: datetime  # when the gateway received it


class BatteryReport:
    """The paired devices with their last battery levels, for the gateway's status, and the
    timer that publishes the status again when a level changed (see the module doc).

    ``publish`` publishes the online status and returns False when the broker is not
    connected (the status on the next connection carries the levels); the publisher builds
    that status with ``for_status``, which records what the hub was sent.
    """

    def __init__(
        self,
        *,
        publish: Callable[[], bool] | None = None,
        step: int = BATTERY_STEP,
        first_level_s: float | None = None,
        step_interval_s: float | None = None,
        refresh_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.publish = publish
        self.step = step
        # None: the module's numbers, read when the report is made (tests shorten them).
        self.first_level_s = FIRST_LEVEL_S if first_level_s is None else first_level_s
        self.step_interval_s = STEP_INTERVAL_S if step_interval_s is None else step_interval_s
        self.refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self._clock = clock
        self._models: dict[str, str | None] = {}  # the paired devices, in pairing order
        self._levels: dict[str, BatteryLevel] = {}
        self._sent: dict[str, BatteryLevel] = {}  # in the last status built
        self._sent_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.statuses_requested = 0  # statuses published for battery levels

    def set_devices(self, devices: Iterable[PairedDevice]) -> None:
        """The pairing list: its devices, and the levels it kept (from before a restart)."""
        entries = list(devices)
        self._models = {d.address: d.model for d in entries}
        for d in entries:
            if d.address not in self._levels and d.battery_level is not None and d.battery_at:
                self._levels[d.address] = BatteryLevel(d.battery_level, d.battery_at)
        for address in set(self._levels) - set(self._models):
            del self._levels[address]

    def level(self, address: str) -> BatteryLevel | None:
        return self._levels.get(address)

    def record(self, address: str, level: int, at: datetime, *, model: str | None) -> None:
        """A valid level from a device: kept, and a status published when one is due."""
        if model is not None or address not in self._models:
            self._models[address] = model
        self._levels[address] = BatteryLevel(level, at)
        self._schedule()

    def for_status(self) -> tuple[StatusDevice, ...]:
        """The devices for the status being built, and from now on what the hub has."""
        self._sent = dict(self._levels)
        self._sent_at = self._clock()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        out = []
        for address, model in list(self._models.items())[:MAX_STATUS_DEVICES]:
            b = self._levels.get(address)
            out.append(
                StatusDevice(
                    address=address,
                    model=model,
                    battery_level=None if b is None else b.level,
                    battery_at=None if b is None else b.at,
                )
            )
        return tuple(out)

    def due_in(self) -> float | None:
        """Seconds until a status is due for the levels not yet sent; None: none is."""
        waits = []
        for address, now in self._levels.items():
            sent = self._sent.get(address)
            if sent == now:
                continue
            if sent is None:
                waits.append(self.first_level_s)
            elif abs(now.level - sent.level) >= self.step:
                waits.append(self.step_interval_s)
            else:
                waits.append(self.refresh_s)
        if not waits:
            return None
        if self._sent_at is None:
            return 0.0  # no status yet: the one on connecting carries them
        return max(0.0, self._sent_at + min(waits) - self._clock())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        delay = self.due_in()
        if delay is None:
            self.close()
            return
        if delay > 0:  # one timer, at the earliest time due
            loop = asyncio.get_running_loop()
            at = loop.time() + delay
            if self._timer is None or self._timer.when() > at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(at, self._due)
            return
        self._due()

    def _due(self) -> None:
        self._timer = None
        delay = self.due_in()
        if delay is None or self.publish is None:
            return
        if delay > 0:  # the timer fired a little early
            self._schedule()
        elif self.publish():  # else not connected: the status on connecting carries them
            self.statuses_requested += 1
            log.info("battery levels changed: gateway status published again")
