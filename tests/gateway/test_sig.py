"""SFLOAT / FLOAT / date-time / Reader: the SIG data types under every decoder."""

from __future__ import annotations

import pickle
from datetime import datetime

import pytest

from gateway.decoders import normalize_uuid
from gateway.errors import DecodeError, GatewayError
from gateway.sig import (
    DateTimeFields,
    Number,
    Reader,
    Special,
    date_time_fields,
    float_parts,
    scaled,
    sfloat_parts,
)
from vitalvagt.errors import VitalvagtError

# HL7 PHD implementation guide, "Mder FLOATs and SFLOATs" page: (raw, value, decimals).
SFLOAT_VECTORS = [
    (0x0002, 2.0, 0),
    (0xF014, 2.0, 1),
    (0xE0C8, 2.0, 2),
    (0x1002, 20.0, 0),
    (0x2002, 200.0, 0),
    (0x00C8, 200.0, 0),
    (0x04D2, 1234.0, 0),
    (0x0B2E, -1234.0, 0),
]
FLOAT_VECTORS = [
    (0x00000002, 2.0, 0),
    (0xFF000014, 2.0, 1),
    (0xFE0000C8, 2.0, 2),
    (0x01000002, 20.0, 0),
    (0x02000002, 200.0, 0),
    (0x000000C8, 200.0, 0),
    (0x000004D2, 1234.0, 0),
    (0x00FFFB2E, -1234.0, 0),
]


@pytest.mark.parametrize(("raw", "value", "decimals"), SFLOAT_VECTORS)
def test_sfloat_published_vectors(raw: int, value: float, decimals: int) -> None:
    num = sfloat_parts(raw)
    assert isinstance(num, Number)
    assert num.value == value
    assert num.decimals == decimals


@pytest.mark.parametrize(("raw", "value", "decimals"), FLOAT_VECTORS)
def test_float_published_vectors(raw: int, value: float, decimals: int) -> None:
    num = float_parts(raw)
    assert isinstance(num, Number)
    assert num.value == value
    assert num.decimals == decimals


def test_sfloat_parts_are_signed() -> None:
    assert sfloat_parts(0xE0C8) == Number(200, -2)
    assert sfloat_parts(0x0B2E) == Number(-1234, 0)
    assert sfloat_parts(0x8001) == Number(1, -8)
    assert sfloat_parts(0x77FD) == Number(2045, 7)
    assert sfloat_parts(0x7FFD) == Number(-3, 7)
    assert float_parts(0x80000001) == Number(1, -128)
    assert float_parts(0x7F7FFFFD) == Number(8388605, 127)


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x07FF, Special.NAN),
        (0x0800, Special.NRES),
        (0x07FE, Special.POS_INF),
        (0x0802, Special.NEG_INF),
        (0x0801, Special.RESERVED),
    ],
)
def test_sfloat_specials_never_become_numbers(raw: int, special: Special) -> None:
    assert sfloat_parts(raw) is special


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x007FFFFF, Special.NAN),
        (0x00800000, Special.NRES),
        (0x007FFFFE, Special.POS_INF),
        (0x00800002, Special.NEG_INF),
        (0x00800001, Special.RESERVED),
    ],
)
def test_float_specials_never_become_numbers(raw: int, special: Special) -> None:
    assert float_parts(raw) is special


def test_special_pattern_with_another_exponent_is_a_number() -> None:
    # IEEE 11073-20601: the specials are the whole pattern with exponent 0.
    assert sfloat_parts(0xF7FF) == Number(2047, -1)
    assert sfloat_parts(0xF7FF).value == 204.7
    assert float_parts(0xFF7FFFFF) == Number(8388607, -1)


def test_scaled_has_no_float_noise() -> None:
    assert scaled(200, -2) == 2.0
    assert scaled(376, -1) == 37.6
    assert scaled(3760, -2) == 37.6
    assert scaled(87, -1) == 8.7
    assert scaled(1, -1) == 0.1  # 1 * 0.1 would be fine; 3 * 0.1 is not:
    assert scaled(3, -1) == 0.3
    assert scaled(1, -128) == 1e-128
    assert scaled(8388607, 127) == 8388607e127
    assert scaled(-2048, 7) == -20480000000.0


def test_date_time_fields_valid_and_unknown_parts() -> None:
    full = date_time_fields(2012, 12, 5, 11, 50, 27)
    assert full.complete
    assert full.to_datetime() == datetime(2012, 12, 5, 11, 50, 27)
    partial = date_time_fields(0, 4, 17, 20, 41, 59)
    assert not partial.complete
    assert partial.to_datetime() is None
    assert partial.iso() == "0000-04-17T20:41:59"
    assert date_time_fields(0, 2, 29, 0, 0, 0) == DateTimeFields(0, 2, 29, 0, 0, 0)
    leap = date_time_fields(2024, 2, 29, 23, 59, 59)
    assert leap.to_datetime() == datetime(2024, 2, 29, 23, 59, 59)
    assert date_time_fields(2024, 0, 0, 0, 0, 0).to_datetime() is None


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ((2024, 13, 1, 0, 0, 0), "month 13"),
        ((2024, 1, 32, 0, 0, 0), "day 32"),
        ((2023, 2, 29, 0, 0, 0), "2023-02-29"),
        ((2024, 4, 31, 0, 0, 0), "2024-04-31"),
        ((2024, 1, 1, 24, 0, 0), "24:00:00"),
        ((2024, 1, 1, 0, 60, 0), "00:60:00"),
        ((2024, 1, 1, 0, 0, 60), "00:00:60"),
        ((1000, 1, 1, 0, 0, 0), "year 1000"),
        ((0, 2, 30, 0, 0, 0), "0000-02-30"),
    ],
)
def test_impossible_date_times(fields: tuple[int, ...], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        date_time_fields(*fields)


def test_reader_reads_little_endian_and_reports_truncation() -> None:
    r = Reader("2A5F", bytes.fromhex("01 3412 563412 1234"))
    assert r.u8("flags") == 1
    assert r.u16("word") == 0x1234
    assert r.u24("status") == 0x123456
    assert r.u16("be", big_endian=True) == 0x1234
    assert r.remaining() == 0
    r.finish()
    with pytest.raises(DecodeError) as err:
        r.u8("more")
    assert err.value.offset == 8
    assert err.value.characteristic == "2A5F"
    assert err.value.reason == "truncated, need 1 byte for more, have 0"


def test_reader_truncated_message_names_field_and_offset() -> None:
    r = Reader("2A35", bytes.fromhex("1E 8A00 5800 7800 0000 04 11 14 29 3B 3C"))
    r.u8("flags")
    for _ in range(3):
        r.sfloat("pressure")
    r.date_time()
    with pytest.raises(DecodeError) as err:
        r.sfloat("pulse")
    assert str(err.value) == (
        "2A35 Blood Pressure Measurement: byte 14: truncated, need 2 bytes for pulse, have 1"
    )


def test_reader_finish_rejects_trailing_bytes() -> None:
    r = Reader("2A37", b"\x00\x55\x00\x00")
    r.u8("flags")
    r.u8("heart rate")
    with pytest.raises(DecodeError, match="2 unexplained trailing bytes") as err:
        r.finish()
    assert err.value.offset == 2


def test_reader_date_time_error_points_at_the_field() -> None:
    r = Reader("2A1C", bytes.fromhex("00 DC07 0D 05 0B 32 1B"))
    r.u8("flags")
    with pytest.raises(DecodeError, match="impossible month 13") as err:
        r.date_time()
    assert err.value.offset == 1


def test_reader_u16_rest() -> None:
    assert Reader("2A37", bytes.fromhex("2100 0004")).u16_rest("RR") == (0x21, 0x400)
    with pytest.raises(DecodeError) as err:
        Reader("2A37", bytes.fromhex("2100 00")).u16_rest("RR")
    assert err.value.offset == 2
    with pytest.raises(DecodeError, match="need 2 bytes for RR, have 0"):
        Reader("2A37", b"").u16_rest("RR")


def test_decode_error_is_a_gateway_error_and_pickles() -> None:
    err = DecodeError("2A35", 7, "truncated", "Blood Pressure Measurement")
    assert isinstance(err, GatewayError)
    assert isinstance(err, VitalvagtError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.characteristic, again.offset, again.reason) == ("2A35", 7, "truncated")
    assert str(again) == "2A35 Blood Pressure Measurement: byte 7: truncated"
    assert str(DecodeError("2A99", None, "unsupported")) == "2A99: unsupported"


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("2A35", "2A35"),
        ("2a35", "2A35"),
        ("0x2a35", "2A35"),
        (" 0X2A35 ", "2A35"),
        (0x2A35, "2A35"),
        ("00002a35-0000-1000-8000-00805f9b34fb", "2A35"),
        ("00002A5F-0000-1000-8000-00805F9B34FB", "2A5F"),
        ("00002a1c", "2A1C"),
        ("0000FFF1-0000-1000-8000-00805F9B34FC", "0000fff1-0000-1000-8000-00805f9b34fc"),
    ],
)
def test_normalize_uuid(given: str | int, key: str) -> None:
    assert normalize_uuid(given) == key


@pytest.mark.parametrize("bad", ["", "2A3", "2A355", "zz35", "0x", -1, 0x10000, "not-a-uuid"])
def test_normalize_uuid_rejects_garbage(bad: str | int) -> None:
    with pytest.raises(DecodeError) as err:
        normalize_uuid(bad)
    assert err.value.offset is None
