"""From a decoded reading to observations, and the device clock: pure, no I/O.

``to_observations`` gives a reading its time (the device's clock in the home's zone, or the
gateway's receive time when the device has none or one far off) and its quality flags;
``current_time_value`` is what the gateway writes to a device's Current Time 0x2A2B.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta, tzinfo

from gateway.decoded import DecodedReading
from vitalvagt.observation import DeviceRef, Observation, TimeSource
from vitalvagt.quality import Flag
from vitalvagt.wire import MAX_FUTURE

# Current Time adjust reason: bit 1, "external reference time update" (the tablet's NTP clock).
CURRENT_TIME_ADJUST_REASON = 0x02

# A device clock further ahead than this would be refused by the hub (wire.MAX_FUTURE, with
# room for the tablet's own clock error); one further behind was never set or was reset.
CLOCK_AHEAD_LIMIT = MAX_FUTURE / 2
CLOCK_BEHIND_LIMIT = timedelta(days=366)


def current_time_value(now: datetime, zone: tzinfo) -> bytes:
    """Current Time 0x2A2B: Exact Time 256 in the devices' zone plus the adjust reason."""
    local = now.astimezone(zone)
    return struct.pack(
        "<HBBBBBBBB",
        local.year,
        local.month,
        local.day,
        local.hour,
        local.minute,
        local.second,
        local.isoweekday(),  # 1 Monday .. 7 Sunday, as the specification numbers them
        local.microsecond * 256 // 1_000_000,
        CURRENT_TIME_ADJUST_REASON,
    )


def device_time_to_utc(device_time: datetime, zone: tzinfo) -> datetime:
    """A device's naive local time in ``zone`` as UTC.

    In the autumn hour that occurs twice the first occurrence is taken (fold=0; the device
    cannot say which); a spring time that does not exist is read with the offset before the
    change, as zoneinfo does.
    """
    return device_time.replace(tzinfo=zone).astimezone(UTC)


def to_observations(
    reading: DecodedReading,
    *,
    gateway_id: str,
    device: DeviceRef,
    zone: tzinfo,
    received_at: datetime,
    user_id: int | None = None,
    reading_id: uuid.UUID | None = None,
    fallback_time: datetime | None = None,
) -> list[Observation]:
    """The observations of one decoded reading; its parts share one ``reading_id``.

    Time: the device's clock in ``zone``, converted to UTC. Without a device time the
    gateway's receive time (or ``fallback_time``, the receive time of an earlier copy) is
    used with ``TimeSource.GATEWAY`` and ``Flag.DEVICE_TIME_MISSING``; a device time too far
    ahead or behind the gateway's clock is replaced the same way with
    ``Flag.DEVICE_CLOCK_CORRECTED``. A reading from another user slot than the patient's
    (``user_id``) gets ``Flag.OTHER_USER``.
    """
    extra: list[Flag] = []
    source = TimeSource.DEVICE
    gateway_time = fallback_time or received_at
    if reading.device_time is None:
        measured_at, source = gateway_time, TimeSource.GATEWAY
        extra.append(Flag.DEVICE_TIME_MISSING)
    else:
        measured_at = device_time_to_utc(reading.device_time, zone)
        offset = measured_at - received_at
        if offset > CLOCK_AHEAD_LIMIT or -offset > CLOCK_BEHIND_LIMIT:
            measured_at, source = gateway_time, TimeSource.GATEWAY
            extra.append(Flag.DEVICE_CLOCK_CORRECTED)
    if user_id is not None and reading.user_id is not None and reading.user_id != user_id:
        extra.append(Flag.OTHER_USER)
    shared = reading_id or uuid.uuid4()
    return [
        Observation.create(
            gateway_id=gateway_id,
            kind=m.kind,
            value=m.value,
            unit=m.unit,
            measured_at=measured_at,
            received_at=received_at,
            device=device,
            flags=(*m.flags, *extra),
            time_source=source,
            reading_id=shared,
            body_site=m.body_site,
        )
        for m in reading.measurements
    ]
