"""Measurement schedules and the pure rule of when a scheduled measurement is overdue.

A patient's schedule says, per kind, when a measurement is due: at local times of day
(``local_times``, wall-clock time in the patient's zone, Europe/Copenhagen by default) or a
number of times per day (``times_per_day``, evenly spaced in elapsed time after the last
reading). ``grace`` is how long a measurement may be late before it counts as missed.

``overdue(schedule, last_readings, now)`` is what the missed-measurement sweep asks: given
the latest reading time of each kind, which kinds are overdue now and since when. Pure, no
I/O and no clock of its own, so the sweep and the tests pass ``now`` in.

The rule for local times: a reading counts for a due time ``D`` if it was measured after
``D - grace`` (early by up to the grace, or at any time later). The first due time not met
by the last reading is ``D = the first due time after last + grace`` (and not before the
schedule started); it is missed from ``D + grace``. Local times follow the wall clock
across a daylight-saving change: 08:00 is 07:00 UTC in winter and 06:00 UTC in summer. A
local time that does not exist that day (02:30 when clocks go forward) is due an hour later
on the wall clock (the same instant as 01:30 in the old offset), one that occurs twice
(02:30 when clocks go back) is due at its first occurrence (``fold=0``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from vitalvagt.settings import DEFAULT_LOCAL_TZ

LOCAL = ZoneInfo(DEFAULT_LOCAL_TZ)
DEFAULT_GRACE = timedelta(hours=2)
MIN_GRACE = timedelta(minutes=5)
MAX_GRACE = timedelta(hours=24)
MAX_TIMES_PER_DAY = 24


class ScheduleError(ValueError):
    """A schedule that cannot be followed (names the field and the reason)."""


@dataclass(frozen=True, slots=True)
class KindSchedule:
    """When one kind is due for one patient, from ``start`` (when the schedule was set)."""

    kind: str
    start: datetime
    local_times: tuple[time, ...] = ()
    times_per_day: int | None = None
    grace: timedelta = DEFAULT_GRACE

    def __post_init__(self) -> None:
        check(self.local_times, self.times_per_day, self.grace)
        if self.start.tzinfo is None:
            raise ScheduleError("start: needs a time zone")


def check(local_times: Iterable[time], times_per_day: int | None, grace: timedelta) -> None:
    """Raise ScheduleError naming what is wrong with these settings (the API's check too)."""
    times = list(local_times)
    if bool(times) == (times_per_day is not None):
        raise ScheduleError("local_times, times_per_day: give exactly one of the two")
    if len(times) > MAX_TIMES_PER_DAY:
        raise ScheduleError(f"local_times: at most {MAX_TIMES_PER_DAY} times a day")
    if any(t.tzinfo is not None for t in times):
        raise ScheduleError("local_times: local wall-clock times, without a time zone")
    if times != sorted(set(times)):
        raise ScheduleError("local_times: must be in order, each time once")
    if times_per_day is not None and not 1 <= times_per_day <= MAX_TIMES_PER_DAY:
        raise ScheduleError(f"times_per_day: must be 1 to {MAX_TIMES_PER_DAY}")
    if not MIN_GRACE <= grace <= MAX_GRACE:
        raise ScheduleError("grace: must be from 5 minutes to 24 hours")


@dataclass(frozen=True, slots=True)
class Overdue:
    """A kind whose measurement is missed: due at ``due_at``, missed since ``missed_at``."""

    kind: str
    due_at: datetime  # UTC
    missed_at: datetime  # due_at + grace, UTC
    last_measured_at: datetime | None


def due_times(local_times: Iterable[time], first_day: date, zone: tzinfo) -> Iterator[datetime]:
    """Every due time (UTC) from ``first_day`` (local) on, in order, without end."""
    times = sorted(local_times)
    day = first_day
    while True:
        for t in times:
            yield datetime.combine(day, t, tzinfo=zone).astimezone(UTC)
        day += timedelta(days=1)


def first_unmet(s: KindSchedule, last: datetime | None, zone: tzinfo = LOCAL) -> datetime:
    """The first due time (UTC) that the last reading does not meet, not before the start."""
    if s.times_per_day is not None:
        interval = timedelta(days=1) / s.times_per_day
        return (last if last is not None and last > s.start else s.start) + interval
    after = s.start - timedelta.resolution  # a due time at the start itself counts
    if last is not None and last + s.grace > after:
        after = last + s.grace
    # A day earlier than the bound's local date: a zone's offset never exceeds a day.
    first_day = after.astimezone(zone).date() - timedelta(days=1)
    for due in due_times(s.local_times, first_day, zone):
        if due > after:
            return due
    raise AssertionError("unreachable: due_times has no end")  # pragma: no cover


def overdue(
    schedule: Iterable[KindSchedule],
    last_readings: Mapping[str, datetime | None],
    now: datetime,
    *,
    zone: tzinfo = LOCAL,
) -> list[Overdue]:
    """The kinds of ``schedule`` whose measurement is missed at ``now`` (in schedule order):
    each with the first due time the latest reading (``last_readings[kind]``, absent or None
    when there is none) did not meet, and when it counted as missed."""
    if now.tzinfo is None:
        raise ScheduleError("now: needs a time zone")
    out = []
    for s in schedule:
        last = last_readings.get(s.kind)
        due = first_unmet(s, last, zone)
        if due + s.grace <= now:
            out.append(Overdue(s.kind, due, due + s.grace, last))
    return out
