"""Encoders for the Bluetooth SIG health characteristics: reading fields -> the bytes a real
device sends, for emulated devices (bumble) and tests. The inverse of gateway/decoders.py.

API (every function returns ``bytes``; bad arguments raise ValueError):

    encode_sfloat(value, exponent=0)          2 bytes, little-endian IEEE 11073 SFLOAT
    encode_float(value, exponent=0)           4 bytes, little-endian IEEE 11073 FLOAT
    sfloat_raw(value, exponent=0) -> int      the 16-bit pattern (float_raw: 32-bit)
    encode_datetime(dt)                       7-byte SIG Date Time; dt a datetime or a
                                              (year, month, day, hour, minute, second) tuple
                                              in which 0 means "unknown" (unset clock)
    encode_bp(systolic, diastolic, mean, *, unit_kpa=False, exponent=None, timestamp=None,
              pulse=None, user_id=None, status=None)                           0x2A35
    encode_bp_flags56_bigendian(systolic, diastolic, mean, *, timestamp, pulse, user_id,
              status=0)                the quirky monitor of profile bp_flags56_bigendian
    encode_hr(bpm, *, u16=None, contact=None, energy_kj=None, rr_intervals_s=None)  0x2A37
    encode_temperature(value, *, fahrenheit=False, exponent=-2, timestamp=None,
              site=None)                                                       0x2A1C
    encode_weight(value, *, imperial=False, timestamp=None, user_id=None, bmi=None,
              height=None)                                                     0x2A9D
    encode_plx_spot(spo2, pulse, *, exponent=0, timestamp=None, meas_status=None,
              device_status=None, pai=None, pai_exponent=-1, clock_not_set=False)  0x2A5E
    encode_plx_continuous(spo2, pulse, *, exponent=0, fast=None, slow=None,
              meas_status=None, device_status=None, pai=None, pai_exponent=-1)     0x2A5F

Numbers: a value is float, int, Decimal or a gateway.sig.Special (NaN, NRes, ...: sent as
that special pattern). It is quantised to 10^exponent, half to even, as device firmware
rounds to its resolution; a float is read by its shortest repr, so 37.6 with exponent -2 is
mantissa 3760. Units are the device's: mm[Hg] or kPa (unit_kpa), Cel or degF (fahrenheit), kg
and m or lb and in (imperial). An optional field is sent, with its flag bit, when not None.
Status words are an int or an iterable of vitalvagt.quality.Flag members.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from gateway.decoders import (
    BP_PULSE_RANGE_MASK,
    BP_STATUS_BITS,
    PLX_DEVICE_STATUS_BITS,
    PLX_MEAS_STATUS_BITS,
    TEMPERATURE_TYPES,
)
from gateway.sig import FLOAT_RAW, FLOAT_SPECIALS, SFLOAT_RAW, SFLOAT_SPECIALS, Special
from vitalvagt.observation import BodySite
from vitalvagt.quality import Flag

Value = float | int | Decimal | Special
Status = int | Iterable[Flag]


def _mantissa(value: float | int | Decimal, exponent: int) -> int:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a number: send Special.NAN / POS_INF / NEG_INF")
        exact = Decimal(repr(value))  # the decimal the float was written as
    elif isinstance(value, int | Decimal):
        exact = Decimal(value)
        if not exact.is_finite():
            raise ValueError(f"{value} is not a finite number")
    else:
        raise ValueError(f"not a number: {value!r}")
    return int(exact.scaleb(-exponent).to_integral_value(rounding=ROUND_HALF_EVEN))


def sfloat_raw(value: Value, exponent: int = 0) -> int:
    if isinstance(value, Special):
        return SFLOAT_RAW[value]
    if not -8 <= exponent <= 7:
        raise ValueError(f"SFLOAT exponent {exponent} outside -8..7")
    mantissa = _mantissa(value, exponent)
    if not -2048 <= mantissa <= 2047:
        raise ValueError(f"{value} at exponent {exponent} needs mantissa {mantissa}, not 12-bit")
    raw = ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)
    if raw in SFLOAT_SPECIALS:
        raise ValueError(
            f"{value} at exponent 0 is the pattern of {SFLOAT_SPECIALS[raw].value}: "
            "choose another exponent"
        )
    return raw


def float_raw(value: Value, exponent: int = 0) -> int:
    if isinstance(value, Special):
        return FLOAT_RAW[value]
    if not -128 <= exponent <= 127:
        raise ValueError(f"FLOAT exponent {exponent} outside -128..127")
    mantissa = _mantissa(value, exponent)
    if not -(1 << 23) <= mantissa < (1 << 23):
        raise ValueError(f"{value} at exponent {exponent} needs mantissa {mantissa}, not 24-bit")
    raw = ((exponent & 0xFF) << 24) | (mantissa & 0x00FFFFFF)
    if raw in FLOAT_SPECIALS:
        raise ValueError(
            f"{value} at exponent 0 is the pattern of {FLOAT_SPECIALS[raw].value}: "
            "choose another exponent"
        )
    return raw


def encode_sfloat(value: Value, exponent: int = 0) -> bytes:
    return sfloat_raw(value, exponent).to_bytes(2, "little")


def encode_float(value: Value, exponent: int = 0) -> bytes:
    return float_raw(value, exponent).to_bytes(4, "little")


def encode_datetime(dt: datetime | Sequence[int]) -> bytes:
    fields = (
        (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
        if isinstance(dt, datetime)
        else tuple(dt)
    )
    if len(fields) != 6:
        raise ValueError("a date-time is (year, month, day, hour, minute, second)")
    try:
        return struct.pack("<HBBBBB", *fields)
    except struct.error as exc:
        raise ValueError(f"date-time field out of range: {fields}") from exc


def _status(value: Status, table: Mapping[int, Flag], *, what: str) -> int:
    if isinstance(value, int):
        return value
    inverse = {flag: bit for bit, flag in table.items()}
    word = 0
    for flag in value:
        if flag not in inverse:
            raise ValueError(f"{flag} is not a {what} flag")
        word |= inverse[flag]
    return word


def _bp_status(value: Status) -> int:
    if isinstance(value, int):
        return value
    flags = set(value)
    word = 0
    if Flag.PULSE_ABOVE_RANGE in flags:
        word |= 1 << 3
    if Flag.PULSE_BELOW_RANGE in flags:
        word |= 2 << 3
    if word == BP_PULSE_RANGE_MASK:
        raise ValueError("pulse cannot be both above and below range")
    flags -= {Flag.PULSE_ABOVE_RANGE, Flag.PULSE_BELOW_RANGE}
    return word | _status(flags, BP_STATUS_BITS, what="blood pressure status")


def _u8(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} does not fit a byte")
    return bytes((value,))


def _u16(value: int, what: str, *, big_endian: bool = False) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} does not fit 16 bits")
    return value.to_bytes(2, "big" if big_endian else "little")


def encode_bp(
    systolic: Value,
    diastolic: Value,
    mean: Value,
    *,
    unit_kpa: bool = False,
    exponent: int | None = None,
    timestamp: datetime | Sequence[int] | None = None,
    pulse: Value | None = None,
    user_id: int | None = None,
    status: Status | None = None,
) -> bytes:
    """Blood Pressure Measurement; pressures at ``exponent`` (default 0 mmHg, -1 kPa)."""
    exp = (-1 if unit_kpa else 0) if exponent is None else exponent
    flags = 0x01 if unit_kpa else 0
    body = encode_sfloat(systolic, exp) + encode_sfloat(diastolic, exp) + encode_sfloat(mean, exp)
    if timestamp is not None:
        flags |= 0x02
        body += encode_datetime(timestamp)
    if pulse is not None:
        flags |= 0x04
        body += encode_sfloat(pulse, 0)
    if user_id is not None:
        flags |= 0x08
        body += _u8(user_id, "user id")
    if status is not None:
        flags |= 0x10
        body += _u16(_bp_status(status), "status")
    return bytes((flags,)) + body


def encode_bp_flags56_bigendian(
    systolic: Value,
    diastolic: Value,
    mean: Value,
    *,
    timestamp: datetime | Sequence[int],
    pulse: Value,
    user_id: int,
    status: Status = 0,
) -> bytes:
    """What the monitor of profile bp_flags56_bigendian sends (mmHg, exponent 0)."""
    return (
        b"\x56"
        + encode_sfloat(systolic)
        + encode_sfloat(diastolic)
        + encode_sfloat(mean)
        + encode_datetime(timestamp)
        + sfloat_raw(pulse).to_bytes(2, "big")
        + _u8(user_id, "user id")
        + _u16(_bp_status(status), "status", big_endian=True)
    )


def encode_hr(
    bpm: int,
    *,
    u16: bool | None = None,
    contact: bool | None = None,
    energy_kj: int | None = None,
    rr_intervals_s: Sequence[float] | None = None,
) -> bytes:
    """Heart Rate Measurement. ``u16`` None: 16-bit only when bpm > 255. ``contact`` None:
    contact detection not supported; True/False: supported and (not) detected. RR intervals
    in seconds are sent in 1/1024 s units (rounded)."""
    wide = bpm > 0xFF if u16 is None else u16
    flags = 0x01 if wide else 0
    body = _u16(bpm, "heart rate") if wide else _u8(bpm, "heart rate")
    if contact is not None:
        flags |= 0x04 | (0x02 if contact else 0)
    if energy_kj is not None:
        flags |= 0x08
        body += _u16(energy_kj, "energy")
    if rr_intervals_s is not None:
        if not rr_intervals_s:
            raise ValueError("RR intervals present means at least one")
        flags |= 0x10
        for rr in rr_intervals_s:
            body += _u16(round(rr * 1024), "RR interval")
    return bytes((flags,)) + body


def encode_temperature(
    value: Value,
    *,
    fahrenheit: bool = False,
    exponent: int = -2,
    timestamp: datetime | Sequence[int] | None = None,
    site: BodySite | int | None = None,
) -> bytes:
    """Temperature Measurement: ``value`` in Cel, or degF with ``fahrenheit``."""
    flags = 0x01 if fahrenheit else 0
    body = encode_float(value, exponent)
    if timestamp is not None:
        flags |= 0x02
        body += encode_datetime(timestamp)
    if site is not None:
        flags |= 0x04
        if isinstance(site, BodySite):
            site = next(code for code, s in TEMPERATURE_TYPES.items() if s is site)
        body += _u8(site, "temperature type")
    return bytes((flags,)) + body


def _units(value: float | int | Decimal, step: Decimal, what: str) -> int:
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not exact.is_finite():
        raise ValueError(f"{what} {value} is not a finite number")
    return int((exact / step).to_integral_value(rounding=ROUND_HALF_EVEN))


def encode_weight(
    value: float | int | Decimal | None,
    *,
    imperial: bool = False,
    timestamp: datetime | Sequence[int] | None = None,
    user_id: int | None = None,
    bmi: float | None = None,
    height: float | None = None,
) -> bytes:
    """Weight Measurement: kg (0.005 kg steps) or lb (0.01 lb) with ``imperial``; None sends
    0xFFFF, 'measurement unsuccessful'. BMI (0.1 steps) and height (m in 1 mm steps, or in
    in 0.1 in steps) go together or not at all."""
    flags = 0x01 if imperial else 0
    step = Decimal("0.01") if imperial else Decimal("0.005")
    raw = 0xFFFF if value is None else _units(value, step, "weight")
    if raw == 0xFFFF and value is not None:
        raise ValueError(f"weight {value} encodes as 0xFFFF, which means 'unsuccessful'")
    body = _u16(raw, "weight")
    if timestamp is not None:
        flags |= 0x02
        body += encode_datetime(timestamp)
    if user_id is not None:
        flags |= 0x04
        body += _u8(user_id, "user id")
    if (bmi is None) != (height is None):
        raise ValueError("BMI and height are sent together (one flag bit covers both)")
    if bmi is not None and height is not None:
        flags |= 0x08
        body += _u16(_units(bmi, Decimal("0.1"), "BMI"), "BMI")
        h_step = Decimal("0.1") if imperial else Decimal("0.001")
        body += _u16(_units(height, h_step, "height"), "height")
    return bytes((flags,)) + body


def _plx_status(meas_status: Status | None, device_status: Status | None) -> tuple[bytes, bytes]:
    meas = b""
    if meas_status is not None:
        word = _status(meas_status, PLX_MEAS_STATUS_BITS, what="PLX measurement status")
        meas = _u16(word, "measurement status")
    dev = b""
    if device_status is not None:
        word = _status(device_status, PLX_DEVICE_STATUS_BITS, what="PLX device status")
        if not 0 <= word <= 0xFFFFFF:
            raise ValueError(f"device status {word} does not fit 24 bits")
        dev = word.to_bytes(3, "little")
    return meas, dev


def encode_plx_spot(
    spo2: Value,
    pulse: Value,
    *,
    exponent: int = 0,
    timestamp: datetime | Sequence[int] | None = None,
    meas_status: Status | None = None,
    device_status: Status | None = None,
    pai: Value | None = None,
    pai_exponent: int = -1,
    clock_not_set: bool = False,
) -> bytes:
    """PLX Spot-check Measurement; SpO2 and pulse at ``exponent``."""
    flags = 0x10 if clock_not_set else 0
    body = encode_sfloat(spo2, exponent) + encode_sfloat(pulse, exponent)
    if timestamp is not None:
        flags |= 0x01
        body += encode_datetime(timestamp)
    meas, dev = _plx_status(meas_status, device_status)
    if meas:
        flags |= 0x02
    if dev:
        flags |= 0x04
    body += meas + dev
    if pai is not None:
        flags |= 0x08
        body += encode_sfloat(pai, pai_exponent)
    return bytes((flags,)) + body


def encode_plx_continuous(
    spo2: Value,
    pulse: Value,
    *,
    exponent: int = 0,
    fast: tuple[Value, Value] | None = None,
    slow: tuple[Value, Value] | None = None,
    meas_status: Status | None = None,
    device_status: Status | None = None,
    pai: Value | None = None,
    pai_exponent: int = -1,
) -> bytes:
    """PLX Continuous Measurement; ``fast`` and ``slow`` are (SpO2, pulse) pairs."""
    flags = 0
    body = encode_sfloat(spo2, exponent) + encode_sfloat(pulse, exponent)
    for bit, pair in ((0x01, fast), (0x02, slow)):
        if pair is not None:
            flags |= bit
            body += encode_sfloat(pair[0], exponent) + encode_sfloat(pair[1], exponent)
    meas, dev = _plx_status(meas_status, device_status)
    if meas:
        flags |= 0x04
    if dev:
        flags |= 0x08
    body += meas + dev
    if pai is not None:
        flags |= 0x10
        body += encode_sfloat(pai, pai_exponent)
    return bytes((flags,)) + body
