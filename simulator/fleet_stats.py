"""What a fleet run counts: the direct homes (``FleetStats``) and those publishing through
emulated BLE devices and the real gateway (``BleFleetStats``).

Apart from both fleets so that neither imports the other for its numbers.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class BleFleetStats:
    homes: int = 0
    readings: int = 0  # cohort readings of the BLE homes
    observations: int = 0  # their cohort observations
    readings_sent: int = 0  # confirmed by the gateway (stored in its outbox)
    observations_stored: int = 0  # new observations in the gateways' outboxes
    observations_acked: int = 0  # acknowledged by the broker
    stored_by_gateway: dict[str, int] = field(default_factory=dict)  # in each home's outbox
    inexact: Counter[str] = field(default_factory=Counter)  # reason -> readings
    unsendable: int = 0  # refused by the gateway's decoder: not sent
    homes_done: int = 0


@dataclass
class FleetStats:
    homes: int = 0
    messages_published: int = 0
    messages_acked: int = 0
    readings_acked: int = 0
    sessions: int = 0
    lags_s: list[float] = field(default_factory=list)  # real seconds from due to published
    refused_homes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ble: BleFleetStats | None = None  # the homes publishing through BLE and the gateway
