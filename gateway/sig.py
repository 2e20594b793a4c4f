"""Bluetooth SIG / IEEE 11073-20601 data types: SFLOAT, FLOAT, date-time, little-endian reads.

Pure functions, no I/O. The number types keep their precision: a value is mantissa x
10^exponent, turned into the nearest double by exact integer arithmetic (so 0xE0C8 is 2.0,
not 2.0000000000000004), and its number of decimal places is kept beside it (0xE0C8 has 2,
0xF014 has 1), because the exponent says how precise the instrument is.

Special values (NaN, NRes, +INF, -INF, reserved) never become numbers: the ``*_parts``
functions return a :class:`Special` member instead, and :class:`Reader` turns one into a
:class:`~gateway.errors.DecodeError` wherever a measurement must be. Following IEEE
11073-20601 (and the HL7 PHD guide), a special value is the whole bit pattern with exponent
0 (SFLOAT 0x07FF is NaN); 0xF7FF is the number 204.7.

Public API:
    sfloat_parts(raw: int) -> Number | Special
    float_parts(raw: int) -> Number | Special
    scaled(mantissa: int, exponent: int) -> float
    date_time_fields(year, month, day, hour, minute, second) -> DateTimeFields  (ValueError)
    Reader(characteristic, data, name=""): bounds-checked little-endian cursor raising
        DecodeError: u8, u16, u24, u16_rest, sfloat, float32, date_time, remaining,
        finish, fail
    CHARACTERISTIC_NAMES: dict of 16-bit UUID (upper-case hex) -> SIG name
"""

from __future__ import annotations

import calendar
import struct
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, NoReturn

from gateway.errors import DecodeError

Buffer = bytes | bytearray | memoryview

CHARACTERISTIC_NAMES: dict[str, str] = {
    "2A35": "Blood Pressure Measurement",
    "2A37": "Heart Rate Measurement",
    "2A1C": "Temperature Measurement",
    "2A9D": "Weight Measurement",
    "2A5E": "PLX Spot-check Measurement",
    "2A5F": "PLX Continuous Measurement",
}


class Special(StrEnum):
    """IEEE 11073 special values: 'no number here', each for its own reason."""

    NAN = "NaN"  # invalid result
    NRES = "NRes"  # not representable at this resolution / range
    POS_INF = "+INF"
    NEG_INF = "-INF"
    RESERVED = "reserved"  # reserved for future use


SFLOAT_SPECIALS: dict[int, Special] = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.POS_INF,
    0x0802: Special.NEG_INF,
    0x0801: Special.RESERVED,
}
FLOAT_SPECIALS: dict[int, Special] = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.POS_INF,
    0x00800002: Special.NEG_INF,
    0x00800001: Special.RESERVED,
}
# The raw patterns of each special value, for encoders and tests.
SFLOAT_RAW: dict[Special, int] = {v: k for k, v in SFLOAT_SPECIALS.items()}
FLOAT_RAW: dict[Special, int] = {v: k for k, v in FLOAT_SPECIALS.items()}

# Powers of ten up to the largest FLOAT exponent magnitude (int8: -128..127).
_POW10: tuple[int, ...] = tuple(10**k for k in range(129))


class Number(NamedTuple):
    """A decoded SFLOAT/FLOAT: value = mantissa x 10^exponent, exactly."""

    mantissa: int
    exponent: int

    @property
    def value(self) -> float:
        return scaled(self.mantissa, self.exponent)

    @property
    def decimals(self) -> int:
        """Decimal places the instrument reported (0xE0C8 = 2.00 has 2)."""
        return -self.exponent if self.exponent < 0 else 0


def scaled(mantissa: int, exponent: int) -> float:
    """mantissa x 10^exponent as the nearest double.

    int / int is correctly rounded in CPython, so no float noise enters: 200 x 10^-2 is 2.0
    and 376 x 10^-1 is the double nearest to 37.6, exactly what float('37.6') gives.
    """
    if exponent < 0:
        return mantissa / _POW10[-exponent]
    return float(mantissa * _POW10[exponent])


def sfloat_parts(raw: int) -> Number | Special:
    """Split a 16-bit SFLOAT (4-bit signed exponent, 12-bit signed mantissa)."""
    special = SFLOAT_SPECIALS.get(raw)
    if special is not None:
        return special
    mantissa = raw & 0x0FFF
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    exponent = raw >> 12
    if exponent >= 8:
        exponent -= 16
    return Number(mantissa, exponent)


def float_parts(raw: int) -> Number | Special:
    """Split a 32-bit FLOAT (int8 exponent in the high byte, 24-bit signed mantissa)."""
    special = FLOAT_SPECIALS.get(raw)
    if special is not None:
        return special
    mantissa = raw & 0x00FFFFFF
    if mantissa >= 0x00800000:
        mantissa -= 0x01000000
    exponent = raw >> 24
    if exponent >= 128:
        exponent -= 256
    return Number(mantissa, exponent)


class DateTimeFields(NamedTuple):
    """The 7-byte SIG Date Time, validated; 0 in year, month or day means 'not known'."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int

    @property
    def complete(self) -> bool:
        return bool(self.year and self.month and self.day)

    def to_datetime(self) -> datetime | None:
        """The naive device time, or None when the device does not know the date."""
        if not self.complete:
            return None
        return datetime(self.year, self.month, self.day, self.hour, self.minute, self.second)

    def iso(self) -> str:
        """ISO-like text that keeps the unknown parts as zeros (for logs and extras)."""
        return (
            f"{self.year:04d}-{self.month:02d}-{self.day:02d}"
            f"T{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        )


_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def date_time_fields(
    year: int, month: int, day: int, hour: int, minute: int, second: int
) -> DateTimeFields:
    """Validate a SIG date-time; raise ValueError naming the impossible field."""
    if year != 0 and not 1582 <= year <= 9999:
        raise ValueError(f"impossible year {year} (1582-9999, or 0 for unknown)")
    if month > 12:
        raise ValueError(f"impossible month {month} (1-12, or 0 for unknown)")
    if day > 31:
        raise ValueError(f"impossible day {day} (1-31, or 0 for unknown)")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"impossible time of day {hour:02d}:{minute:02d}:{second:02d}")
    if month and day and day > _DAYS_IN_MONTH[month]:
        # With the year unknown, 29 February may still be right: only a known year says no.
        if not (month == 2 and day == 29 and (year == 0 or calendar.isleap(year))):
            raise ValueError(f"impossible date {year:04d}-{month:02d}-{day:02d}")
    return DateTimeFields(year, month, day, hour, minute, second)


_U16 = struct.Struct("<H")
_U16_BE = struct.Struct(">H")
_U32 = struct.Struct("<I")
_DATE_TIME = struct.Struct("<HBBBBB")


class Reader:
    """A cursor over one payload; every read checks bounds and fails with DecodeError.

    ``what`` names the field in the error ("truncated, need 2 bytes for pulse, have 1"), and
    the offset in the error is where that field starts.
    """

    __slots__ = ("_data", "_end", "characteristic", "name", "pos")

    def __init__(self, characteristic: str, data: Buffer, name: str = "") -> None:
        self._data = data
        self._end = len(data)
        self.pos = 0
        self.characteristic = characteristic
        self.name = name or CHARACTERISTIC_NAMES.get(characteristic, "")

    def fail(self, reason: str, offset: int | None = None) -> NoReturn:
        raise DecodeError(
            self.characteristic, self.pos if offset is None else offset, reason, self.name
        )

    def _take(self, n: int, what: str) -> int:
        pos = self.pos
        if pos + n > self._end:
            self.fail(f"truncated, need {n} byte{'s' if n > 1 else ''} for {what}, have "
                      f"{self._end - pos}")
        self.pos = pos + n
        return pos

    def remaining(self) -> int:
        return self._end - self.pos

    def finish(self) -> None:
        """Refuse bytes nobody explained: they mean the flags were misread (or a quirk)."""
        extra = self._end - self.pos
        if extra:
            self.fail(
                f"{extra} unexplained trailing byte{'s' if extra > 1 else ''} after the last "
                "field the flags announce (a device quirk? see docs/devices.md, profiles)"
            )

    def u8(self, what: str) -> int:
        return self._data[self._take(1, what)]

    def u16(self, what: str, *, big_endian: bool = False) -> int:
        pos = self._take(2, what)
        return (_U16_BE if big_endian else _U16).unpack_from(self._data, pos)[0]

    def u24(self, what: str) -> int:
        pos = self._take(3, what)
        return int.from_bytes(self._data[pos : pos + 3], "little")

    def u16_rest(self, what: str) -> tuple[int, ...]:
        """All remaining bytes as u16 values (at least one): HR's RR intervals."""
        pos, n = self.pos, self._end - self.pos
        if n < 2:
            self.fail(f"truncated, need 2 bytes for {what}, have {n}")
        if n % 2:
            self.fail(f"truncated, need 2 bytes for {what}, have 1", self._end - 1)
        self.pos = self._end
        return struct.unpack_from(f"<{n // 2}H", self._data, pos)

    def sfloat(self, what: str, *, big_endian: bool = False) -> Number | Special:
        # Inlined take + unpack + split: this is the hot path of every decoder.
        pos = self.pos
        if pos + 2 > self._end:
            self.fail(f"truncated, need 2 bytes for {what}, have {self._end - pos}")
        self.pos = pos + 2
        raw = (_U16_BE if big_endian else _U16).unpack_from(self._data, pos)[0]
        special = SFLOAT_SPECIALS.get(raw)
        if special is not None:
            return special
        mantissa = raw & 0x0FFF
        exponent = raw >> 12
        return Number(
            mantissa - 0x1000 if mantissa >= 0x0800 else mantissa,
            exponent - 16 if exponent >= 8 else exponent,
        )

    def float32(self, what: str) -> Number | Special:
        pos = self._take(4, what)
        return float_parts(_U32.unpack_from(self._data, pos)[0])

    def date_time(self, what: str = "date-time") -> DateTimeFields:
        pos = self._take(7, what)
        try:
            return date_time_fields(*_DATE_TIME.unpack_from(self._data, pos))
        except ValueError as exc:
            self.fail(f"{what}: {exc}", pos)
