"""Property tests: SFLOAT/FLOAT over their whole range, decoder(encoder(x)) == x for each
characteristic. Expected values are computed here with decimal.Decimal, a different route
from the decoders' integer/Fraction arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.decoded import DecodedReading
from gateway.decoders import (
    BP_STATUS_BITS,
    PLX_DEVICE_STATUS_BITS,
    PLX_MEAS_STATUS_BITS,
    TEMPERATURE_TYPES,
)
from gateway.decoding import decode
from gateway.sig import FLOAT_SPECIALS, SFLOAT_SPECIALS, Number, Special, float_parts, sfloat_parts
from simulator.sig_encoders import (
    encode_bp,
    encode_float,
    encode_hr,
    encode_plx_continuous,
    encode_plx_spot,
    encode_sfloat,
    encode_temperature,
    encode_weight,
    float_raw,
    sfloat_raw,
)
from vitalvagt.kinds import Kind
from vitalvagt.quality import Flag

SPECIALS = list(Special)
CHARACTERISTIC = settings(max_examples=300, deadline=None)


def exact(mantissa: int, exponent: int) -> Decimal:
    return Decimal(mantissa).scaleb(exponent)


def rounded(value: Decimal, decimals: int) -> float:
    return float(value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN))


# --- SFLOAT / FLOAT --------------------------------------------------------------------------


def test_every_sfloat_pattern_round_trips() -> None:
    numbers = 0
    for raw in range(0x10000):
        parts = sfloat_parts(raw)
        if isinstance(parts, Special):
            assert sfloat_raw(parts) == raw
            continue
        numbers += 1
        assert parts.value == float(exact(parts.mantissa, parts.exponent))
        assert sfloat_raw(parts.value, parts.exponent) == raw  # back from the float itself
    assert numbers == 0x10000 - 5


@given(st.integers(-2048, 2047), st.integers(-8, 7))
def test_sfloat_encode_decode(mantissa: int, exponent: int) -> None:
    raw = ((exponent & 0xF) << 12) | (mantissa & 0xFFF)
    if raw in SFLOAT_SPECIALS:
        with pytest.raises(ValueError, match="choose another exponent"):
            encode_sfloat(exact(mantissa, exponent), exponent)
        return
    data = encode_sfloat(exact(mantissa, exponent), exponent)
    assert sfloat_parts(int.from_bytes(data, "little")) == Number(mantissa, exponent)


@given(st.integers(0, 0xFFFFFFFF))
def test_float_decode_encode(raw: int) -> None:
    parts = float_parts(raw)
    if isinstance(parts, Special):
        assert float_raw(parts) == raw
        return
    assert parts.value == float(exact(parts.mantissa, parts.exponent))
    assert encode_float(parts.value, parts.exponent) == raw.to_bytes(4, "little")


@given(st.integers(-(1 << 23), (1 << 23) - 1), st.integers(-128, 127))
def test_float_encode_decode(mantissa: int, exponent: int) -> None:
    raw = ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)
    assume(raw not in FLOAT_SPECIALS)
    data = encode_float(exact(mantissa, exponent), exponent)
    assert float_parts(int.from_bytes(data, "little")) == Number(mantissa, exponent)


@given(st.floats(-200.0, 200.0, allow_nan=False), st.integers(-1, 0))
def test_sfloat_quantises_like_a_device(value: float, exponent: int) -> None:
    mantissa = int(Decimal(repr(value)).scaleb(-exponent).to_integral_value(ROUND_HALF_EVEN))
    assume(-2048 <= mantissa <= 2047 and (exponent, mantissa) != (0, 0x7FF))
    assume(not (exponent == 0 and mantissa in (2046, 2047, -2048, -2047, -2046)))
    parts = sfloat_parts(int.from_bytes(encode_sfloat(value, exponent), "little"))
    assert parts == Number(mantissa, exponent)


# --- shared strategies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    sent: datetime | tuple[int, ...] | None
    expected: datetime | None
    raw: str | None  # extras["device_time_raw"] when the clock is not set


full_times = st.datetimes(
    min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
)


@st.composite
def stamps(draw: st.DrawFn) -> Stamp:
    kind = draw(st.sampled_from(["none", "full", "partial"]))
    if kind == "none":
        return Stamp(None, None, None)
    dt = draw(full_times).replace(microsecond=0)
    if kind == "full":
        return Stamp(dt, dt, None)
    # Year, month or day unknown: the device's clock was never set.
    unknown = draw(st.sets(st.sampled_from(["year", "month", "day"]), min_size=1))
    fields = (
        0 if "year" in unknown else dt.year,
        0 if "month" in unknown else dt.month,
        0 if "day" in unknown else min(dt.day, 28),
        dt.hour,
        dt.minute,
        dt.second,
    )
    y, mo, d, hh, mi, ss = fields
    return Stamp(fields, None, f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}")


def check_time(reading: DecodedReading, stamp: Stamp, extra_flags: set[Flag]) -> None:
    assert reading.device_time == stamp.expected
    assert reading.extras.get("device_time_raw") == stamp.raw
    if stamp.raw is not None:
        extra_flags.add(Flag.DEVICE_CLOCK_NOT_SET)


def check_flags(reading: DecodedReading, expected: set[Flag]) -> None:
    assert set(reading.flags) == expected
    assert len(reading.flags) == len(expected)
    for m in reading.measurements:
        assert m.flags == reading.flags


def mantissas(lo: Decimal, hi: Decimal, exponent: int, limit: int) -> st.SearchStrategy[int]:
    """Mantissas m with lo <= m x 10^exponent <= hi and |m| within the type's limit."""
    scale = Decimal(1).scaleb(-exponent)
    low = int((lo * scale).to_integral_value(rounding="ROUND_CEILING"))
    high = int((hi * scale).to_integral_value(rounding="ROUND_FLOOR"))
    return st.integers(max(low, -limit), min(high, limit))


# --- characteristics ---------------------------------------------------------------------------

KPA = Decimal("7.50062")
BP_STATUS_FLAGS = list(BP_STATUS_BITS.values())


@CHARACTERISTIC
@given(
    data=st.data(),
    unit_kpa=st.booleans(),
    stamp=stamps(),
    pulse=st.none() | st.integers(20, 250) | st.sampled_from(SPECIALS),
    user=st.none() | st.integers(0, 255),
    status=st.none() | st.sets(st.sampled_from(BP_STATUS_FLAGS)),
    pulse_range=st.sampled_from([None, Flag.PULSE_ABOVE_RANGE, Flag.PULSE_BELOW_RANGE]),
)
def test_bp_round_trip(
    data: st.DataObject,
    unit_kpa: bool,
    stamp: Stamp,
    pulse: int | Special | None,
    user: int | None,
    status: set[Flag] | None,
    pulse_range: Flag | None,
) -> None:
    exponent = -1 if unit_kpa else data.draw(st.sampled_from([0, -1]))
    factor = KPA if unit_kpa else Decimal(1)
    sent: dict[Kind, Decimal] = {}
    for kind, lo, hi in ((Kind.BP_SYSTOLIC, 50, 280), (Kind.BP_DIASTOLIC, 20, 180),
                         (Kind.BP_MEAN, 30, 220)):
        # Keep clear of the bounds so that the rounding after conversion stays inside.
        m = data.draw(mantissas(Decimal(lo + 1) / factor, Decimal(hi - 1) / factor, exponent, 2045))
        sent[kind] = exact(m, exponent)
    flags = None if status is None else status | ({pulse_range} if pulse_range else set())
    payload = encode_bp(
        sent[Kind.BP_SYSTOLIC], sent[Kind.BP_DIASTOLIC], sent[Kind.BP_MEAN],
        unit_kpa=unit_kpa, exponent=exponent, timestamp=stamp.sent, pulse=pulse,
        user_id=user, status=flags,
    )
    reading = decode("2A35", payload)
    decimals = -exponent + 1 if unit_kpa else -exponent
    expected = {k: rounded(v * factor, decimals) for k, v in sent.items()}
    if isinstance(pulse, int):
        expected[Kind.PULSE] = float(pulse)
    assert {m.kind: m.value for m in reading.measurements} == expected
    assert all(m.unit == ("/min" if m.kind is Kind.PULSE else "mm[Hg]")
               for m in reading.measurements)
    assert reading.user_id == (None if user == 0xFF else user)
    assert reading.extras.get("pulse_special") == (pulse.value if isinstance(pulse, Special)
                                                   else None)
    expected_flags = set(flags or ())
    check_time(reading, stamp, expected_flags)
    check_flags(reading, expected_flags)


@CHARACTERISTIC
@given(
    bpm=st.integers(20, 250),
    u16=st.none() | st.booleans(),
    contact=st.none() | st.booleans(),
    energy=st.none() | st.integers(0, 0xFFFF),
    rr=st.none() | st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=9),
)
def test_hr_round_trip(
    bpm: int, u16: bool | None, contact: bool | None, energy: int | None, rr: list[int] | None
) -> None:
    payload = encode_hr(
        bpm, u16=u16, contact=contact, energy_kj=energy,
        rr_intervals_s=None if rr is None else [k / 1024 for k in rr],
    )
    assert len(payload) == (3 if u16 else 2) + (2 if energy is not None else 0) + 2 * len(rr or [])
    reading = decode("2A37", payload)
    assert [(m.kind, m.value) for m in reading.measurements] == [(Kind.PULSE, float(bpm))]
    assert reading.flags == ((Flag.NO_SKIN_CONTACT,) if contact is False else ())
    assert reading.extras.get("energy_kj") == energy
    assert reading.extras.get("rr_intervals_s") == (None if rr is None
                                                    else tuple(k / 1024 for k in rr))
    assert reading.extras["sensor_contact"] == {None: "not_supported", True: "detected",
                                                False: "not_detected"}[contact]


@CHARACTERISTIC
@given(
    data=st.data(),
    fahrenheit=st.booleans(),
    exponent=st.sampled_from([-1, -2, -3]),
    stamp=stamps(),
    site=st.none() | st.sampled_from(sorted(TEMPERATURE_TYPES)),
)
def test_temperature_round_trip(
    data: st.DataObject, fahrenheit: bool, exponent: int, stamp: Stamp, site: int | None
) -> None:
    if fahrenheit:  # 30-44 Cel is 86-111.2 degF
        m = data.draw(mantissas(Decimal("86.1"), Decimal("111.1"), exponent, (1 << 23) - 3))
    else:
        m = data.draw(mantissas(Decimal(30), Decimal(44), exponent, (1 << 23) - 3))
    value = exact(m, exponent)
    payload = encode_temperature(
        value, fahrenheit=fahrenheit, exponent=exponent, timestamp=stamp.sent, site=site
    )
    reading = decode("2A1C", payload)
    (got,) = reading.measurements
    if fahrenheit:
        assert got.value == rounded((value - 32) * 5 / 9, -exponent + 1)
        assert got.decimals == -exponent + 1
    else:
        assert got.value == float(value)
        assert got.decimals == -exponent
    assert got.unit == "Cel"
    assert got.body_site == (None if site is None else TEMPERATURE_TYPES[site])
    expected_flags: set[Flag] = set()
    check_time(reading, stamp, expected_flags)
    check_flags(reading, expected_flags)


LB = Decimal("0.45359237")


@CHARACTERISTIC
@given(
    data=st.data(),
    imperial=st.booleans(),
    stamp=stamps(),
    user=st.none() | st.integers(0, 255),
    body=st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
)
def test_weight_round_trip(
    data: st.DataObject,
    imperial: bool,
    stamp: Stamp,
    user: int | None,
    body: tuple[int, int] | None,
) -> None:
    if imperial:  # 0.01 lb steps within 20-300 kg
        raw = data.draw(mantissas(Decimal(20) / LB, Decimal(300) / LB, -2, 0xFFFE))
        value, expected = exact(raw, -2), rounded(exact(raw, -2) * LB, 3)
    else:  # 0.005 kg steps within 20-300 kg
        raw = data.draw(st.integers(4000, 60000))
        value = expected_d = raw * Decimal("0.005")
        expected = float(expected_d)
    bmi = height = None
    if body is not None:
        bmi = exact(body[0], -1)
        height = exact(body[1], -1 if imperial else -3)
    payload = encode_weight(
        value, imperial=imperial, timestamp=stamp.sent, user_id=user, bmi=bmi, height=height
    )
    reading = decode("2A9D", payload)
    (got,) = reading.measurements
    assert (got.kind, got.value, got.unit, got.decimals) == (Kind.WEIGHT, expected, "kg", 3)
    assert reading.user_id == (None if user == 0xFF else user)
    if body is None:
        assert "bmi" not in reading.extras and "height_m" not in reading.extras
    else:
        assert reading.extras["bmi"] == float(exact(body[0], -1))
        metres = exact(body[1], -1) * Decimal("0.0254") if imperial else exact(body[1], -3)
        assert reading.extras["height_m"] == float(metres)
    expected_flags: set[Flag] = set()
    check_time(reading, stamp, expected_flags)
    check_flags(reading, expected_flags)


MEAS_FLAGS = list(PLX_MEAS_STATUS_BITS.values())
DEVICE_FLAGS = list(PLX_DEVICE_STATUS_BITS.values())


@st.composite
def oximetry(draw: st.DrawFn, exponent: int) -> tuple[Decimal, Decimal]:
    spo2 = draw(mantissas(Decimal(50), Decimal(100), exponent, 2045))
    pulse = draw(mantissas(Decimal(20), Decimal(250), exponent, 2045))
    return exact(spo2, exponent), exact(pulse, exponent)


pai_values = (
    st.none() | st.sampled_from(SPECIALS) | st.integers(0, 2045).map(lambda m: exact(m, -1))
)


@CHARACTERISTIC
@given(
    data=st.data(),
    exponent=st.sampled_from([0, -1]),
    stamp=stamps(),
    meas=st.none() | st.sets(st.sampled_from(MEAS_FLAGS)),
    device=st.none() | st.sets(st.sampled_from(DEVICE_FLAGS)),
    pai=pai_values,
    clock_not_set=st.booleans(),
)
def test_plx_spot_round_trip(
    data: st.DataObject,
    exponent: int,
    stamp: Stamp,
    meas: set[Flag] | None,
    device: set[Flag] | None,
    pai: Decimal | Special | None,
    clock_not_set: bool,
) -> None:
    spo2, pulse = data.draw(oximetry(exponent))
    payload = encode_plx_spot(
        spo2, pulse, exponent=exponent, timestamp=stamp.sent, meas_status=meas,
        device_status=device, pai=pai, clock_not_set=clock_not_set,
    )
    reading = decode("2A5E", payload)
    assert [(m.kind, m.value, m.decimals) for m in reading.measurements] == [
        (Kind.SPO2, float(spo2), -exponent),
        (Kind.PULSE, float(pulse), -exponent),
    ]
    expected_flags = set(meas or ()) | set(device or ())
    if clock_not_set:
        assert reading.device_time is None
        expected_flags.add(Flag.DEVICE_CLOCK_NOT_SET)
    else:
        check_time(reading, stamp, expected_flags)
    check_flags(reading, expected_flags)
    if pai is None:
        assert "pai" not in reading.extras
    else:
        assert reading.extras["pai"] == (None if isinstance(pai, Special) else float(pai))


@CHARACTERISTIC
@given(
    data=st.data(),
    exponent=st.sampled_from([0, -1]),
    fast=st.booleans(),
    slow=st.booleans(),
    special_fast=st.none() | st.sampled_from(SPECIALS),
    meas=st.none() | st.sets(st.sampled_from(MEAS_FLAGS)),
    device=st.none() | st.sets(st.sampled_from(DEVICE_FLAGS)),
    pai=pai_values,
)
def test_plx_continuous_round_trip(
    data: st.DataObject,
    exponent: int,
    fast: bool,
    slow: bool,
    special_fast: Special | None,
    meas: set[Flag] | None,
    device: set[Flag] | None,
    pai: Decimal | Special | None,
) -> None:
    spo2, pulse = data.draw(oximetry(exponent))
    fast_pair = data.draw(oximetry(exponent)) if fast else None
    if fast_pair is not None and special_fast is not None:
        fast_pair = (special_fast, fast_pair[1])  # a fast SpO2 not available yet
    slow_pair = data.draw(oximetry(exponent)) if slow else None
    payload = encode_plx_continuous(
        spo2, pulse, exponent=exponent, fast=fast_pair, slow=slow_pair, meas_status=meas,
        device_status=device, pai=pai,
    )
    reading = decode("2A5F", payload)
    assert [(m.kind, m.value) for m in reading.measurements] == [
        (Kind.SPO2, float(spo2)),
        (Kind.PULSE, float(pulse)),
    ]
    for name, pair in (("fast", fast_pair), ("slow", slow_pair)):
        if pair is None:
            assert f"spo2_{name}" not in reading.extras
            continue
        want = [None if isinstance(v, Special) else float(v) for v in pair]
        assert [reading.extras[f"spo2_{name}"], reading.extras[f"pulse_{name}"]] == want
    check_flags(reading, set(meas or ()) | set(device or ()))
    assert reading.device_time is None
