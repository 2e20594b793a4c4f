"""What a decoder returns, and the building blocks every decoder shares.

``DecodedReading`` and its ``Measurement`` values are the decoders' result
(gateway/decoders.py, gateway/profiles.py); ``Field``, ``read_field`` and ``check_flags``
read a frame; the value helpers convert to the kind's canonical unit (kPa -> mm[Hg],
lb -> kg, degF -> Cel, exactly, then one rounding), check plausibility, and turn the
device clock and user slot into a reading's time and user. The byte-level primitives
(SFLOAT, FLOAT, date-time, the ``Reader``) are gateway/sig.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from types import MappingProxyType
from typing import NamedTuple

from gateway.sig import Buffer, DateTimeFields, Number, Reader, Special
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.observation import BodySite
from vitalvagt.quality import Flag

USER_UNKNOWN = 0xFF  # BP and weight user id meaning "unknown user"; decoded as None


@dataclass(frozen=True, slots=True)
class Measurement:
    """One value in the canonical unit of its kind, with the device's quality flags."""

    kind: Kind
    value: float
    unit: str
    decimals: int  # decimal places the device's resolution supports
    flags: tuple[Flag, ...] = ()
    body_site: BodySite | None = None


def _no_extras() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DecodedReading:
    """What one notification said. The parts of a BP reading share one reading id later."""

    characteristic: str  # 16-bit UUID, upper-case hex: '2A35'
    measurements: tuple[Measurement, ...]
    device_time: datetime | None = None  # naive device clock; None if absent or not set
    user_id: int | None = None  # device user slot; None if absent or 0xFF (unknown)
    flags: tuple[Flag, ...] = ()  # every flag of the reading (each measurement has them)
    extras: Mapping[str, object] = field(default_factory=_no_extras)

    def get(self, kind: Kind) -> Measurement | None:
        for m in self.measurements:
            if m.kind is kind:
                return m
        return None


Decoder = Callable[[Buffer], DecodedReading]


class Field(NamedTuple):
    """A number as read, with where it started (for errors about it)."""

    value: Number | Special
    offset: int


def read_field(r: Reader, what: str, *, big_endian: bool = False) -> Field:
    pos = r.pos
    return Field(r.sfloat(what, big_endian=big_endian), pos)


def check_flags(r: Reader, flags: int, known: int) -> None:
    reserved = flags & ~known & 0xFF
    if reserved:
        r.fail(
            f"reserved flag bits 0x{reserved:02X} set (flags 0x{flags:02X}): unknown fields "
            "may follow (a device quirk? try a profile, docs/devices.md)",
            0,
        )


# --- values, units, plausibility ---------------------------------------------------------

_KPA_TO_MMHG = Fraction(750062, 100000)
_LB_TO_KG = Fraction(45359237, 100000000)


def kpa_to_mmhg(exact: Fraction) -> Fraction:
    return exact * _KPA_TO_MMHG


def lb_to_kg(exact: Fraction) -> Fraction:
    return exact * _LB_TO_KG


def f_to_c(exact: Fraction) -> Fraction:
    return (exact - 32) * Fraction(5, 9)


Conversion = Callable[[Fraction], Fraction]


def number_of(r: Reader, f: Field, what: str) -> Number:
    if isinstance(f.value, Special):
        r.fail(f"{what} is {f.value.value} (special value): no number was measured", f.offset)
    return f.value


def measure(
    r: Reader, kind: Kind, num: Number, offset: int, what: str, conv: Conversion | None = None
) -> tuple[float, int]:
    """(value, decimals) in the kind's canonical unit; DecodeError if implausible."""
    if conv is None:
        value, decimals = num.value, num.decimals
    else:
        # Exact rational arithmetic, then one rounding: no float noise from the factor.
        decimals = num.decimals + 1
        exact = Fraction(num.mantissa) * Fraction(10) ** num.exponent
        value = float(round(conv(exact), decimals))
    spec = KIND_SPECS[kind]
    if not spec.plausible_min <= value <= spec.plausible_max:
        r.fail(
            f"{what} {value:g} {spec.unit} is outside the plausible range "
            f"{spec.plausible_min:g}-{spec.plausible_max:g} {spec.unit}",
            offset,
        )
    return value, decimals


def optional_value(
    r: Reader, f: Field, what: str, kind: Kind | None = None, conv: Conversion | None = None
) -> float | None:
    """An extras value: None for a special value; plausibility-checked if it has a kind."""
    if isinstance(f.value, Special):
        return None
    if kind is None:
        return f.value.value
    return measure(r, kind, f.value, f.offset, what, conv)[0]


def reading_of(
    r: Reader,
    parts: list[tuple[Kind, float, int]],
    qflags: list[Flag],
    *,
    device_time: datetime | None = None,
    user_id: int | None = None,
    extras: dict[str, object] | None = None,
    site: BodySite | None = None,
) -> DecodedReading:
    flags = tuple(dict.fromkeys(qflags))
    return DecodedReading(
        r.characteristic,
        tuple(Measurement(k, v, KIND_SPECS[k].unit, d, flags, site) for k, v, d in parts),
        device_time,
        user_id,
        flags,
        MappingProxyType(extras) if extras else _no_extras(),
    )


def device_time_of(
    stamp: DateTimeFields | None,
    qflags: list[Flag],
    extras: dict[str, object],
    *,
    clock_not_set: bool = False,
) -> datetime | None:
    if stamp is not None and stamp.complete and not clock_not_set:
        return stamp.to_datetime()
    if stamp is not None:
        extras["device_time_raw"] = stamp.iso()
        clock_not_set = True
    if clock_not_set:
        qflags.append(Flag.DEVICE_CLOCK_NOT_SET)
    return None


def user_slot(user: int | None) -> int | None:
    return None if user is None or user == USER_UNKNOWN else user


def add_status_flags(word: int, table: Mapping[int, Flag], out: list[Flag]) -> None:
    # Walk the set bits only: status words are mostly zero or one bit.
    while word:
        low = word & -word
        out.append(table[low])
        word ^= low
