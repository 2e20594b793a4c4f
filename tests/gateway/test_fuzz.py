"""Fuzz: random and mutated payloads never make a decoder raise anything but DecodeError, and
whatever decodes is physically sane. Seeded, so a failure reproduces; set VV_FUZZ_SEED to
explore other inputs."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import pytest

from gateway.decoded import DecodedReading
from gateway.decoders import DECODERS
from gateway.errors import DecodeError
from gateway.profiles import decode_bp_flags56_bigendian
from gateway.sig import SFLOAT_RAW, Buffer, Special
from simulator.sig_encoders import (
    encode_bp,
    encode_bp_flags56_bigendian,
    encode_hr,
    encode_plx_continuous,
    encode_plx_spot,
    encode_temperature,
    encode_weight,
)
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.quality import Flag

T = TypeVar("T")
RANDOM_CASES = 10_000
MUTATED_CASES = 10_000
SEED = int(os.environ.get("VV_FUZZ_SEED", "20240611"))
KNOWN_FLAGS = {"2A35": 0x1F, "2A37": 0x1F, "2A1C": 0x07, "2A9D": 0x0F, "2A5E": 0x1F, "2A5F": 0x1F}


def maybe(rng: random.Random, value: T) -> T | None:
    return value if rng.random() < 0.5 else None


def stamp(rng: random.Random) -> datetime | tuple[int, ...] | None:
    if rng.random() < 0.3:
        return None
    if rng.random() < 0.2:
        return (0, rng.randint(0, 12), rng.randint(0, 28), rng.randint(0, 23), 0, 0)
    return datetime(rng.randint(1990, 2040), rng.randint(1, 12), rng.randint(1, 28),
                    rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))


def status(rng: random.Random, bits: int) -> int | None:
    return rng.getrandbits(bits) if rng.random() < 0.5 else None


def valid_bp(rng: random.Random) -> bytes:
    return encode_bp(rng.randint(90, 200), rng.randint(40, 120), rng.randint(60, 150),
                     timestamp=stamp(rng), pulse=maybe(rng, rng.randint(40, 180)),
                     user_id=maybe(rng, rng.randint(0, 255)),
                     status=maybe(rng, rng.choice([0, 0x01, 0x08, 0x10, 0x27])))


def valid_hr(rng: random.Random) -> bytes:
    rr = [rng.randint(300, 1500) / 1024 for _ in range(rng.randint(1, 4))]
    return encode_hr(rng.randint(30, 220), u16=rng.random() < 0.3,
                     contact=rng.choice([None, True, False]),
                     energy_kj=maybe(rng, rng.randint(0, 65535)),
                     rr_intervals_s=rr if rng.random() < 0.5 else None)


def valid_temperature(rng: random.Random) -> bytes:
    fahrenheit = rng.random() < 0.3
    value = rng.randint(9700, 10400) / 100 if fahrenheit else rng.randint(3500, 4100) / 100
    return encode_temperature(value, fahrenheit=fahrenheit, timestamp=stamp(rng),
                              site=maybe(rng, rng.randint(1, 9)))


def valid_weight(rng: random.Random) -> bytes:
    imperial = rng.random() < 0.3
    value = rng.randint(9000, 30000) / 100 if imperial else rng.randint(8000, 30000) / 200
    body = rng.random() < 0.5
    return encode_weight(value, imperial=imperial, timestamp=stamp(rng),
                         user_id=maybe(rng, rng.randint(0, 255)),
                         bmi=rng.randint(150, 400) / 10 if body else None,
                         height=(rng.randint(600, 780) / 10 if imperial
                                 else rng.randint(1500, 2000) / 1000) if body else None)


def valid_plx_spot(rng: random.Random) -> bytes:
    return encode_plx_spot(rng.randint(85, 100), rng.randint(40, 180), timestamp=stamp(rng),
                           meas_status=maybe(rng, rng.getrandbits(11) << 5),
                           device_status=maybe(rng, rng.getrandbits(16)),
                           pai=maybe(rng, rng.randint(1, 200) / 10),
                           clock_not_set=rng.random() < 0.2)


def valid_plx_continuous(rng: random.Random) -> bytes:
    def pair() -> tuple[int, int] | None:
        return (rng.randint(85, 100), rng.randint(40, 180)) if rng.random() < 0.5 else None

    return encode_plx_continuous(rng.randint(85, 100), rng.randint(40, 180), fast=pair(),
                                 slow=pair(),
                                 meas_status=maybe(rng, rng.getrandbits(11) << 5),
                                 device_status=maybe(rng, rng.getrandbits(16)),
                                 pai=maybe(rng, rng.randint(1, 200) / 10))


VALID: dict[str, Callable[[random.Random], bytes]] = {
    "2A35": valid_bp,
    "2A37": valid_hr,
    "2A1C": valid_temperature,
    "2A9D": valid_weight,
    "2A5E": valid_plx_spot,
    "2A5F": valid_plx_continuous,
}

SPECIAL_PATTERNS = [SFLOAT_RAW[s].to_bytes(2, "little") for s in Special]


def mutate(rng: random.Random, data: bytes, known_flags: int) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        if op == 0 and out:  # flip one bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del out[rng.randint(0, len(out)):]
        elif op == 2:  # insert random bytes
            i = rng.randint(0, len(out))
            out[i:i] = rng.randbytes(rng.randint(1, 4))
        elif op == 3 and out:  # delete a byte
            del out[rng.randrange(len(out))]
        elif op == 4 and out:  # other optional fields announced (layout changes)
            out[0] = rng.getrandbits(8) & known_flags if rng.random() < 0.7 else rng.getrandbits(8)
        elif op == 5 and len(out) > 2:  # a special value where a number was
            i = rng.randrange(1, len(out) - 1)
            out[i:i + 2] = rng.choice(SPECIAL_PATTERNS)
        elif op == 6 and out:  # a byte set to an extreme
            out[rng.randrange(len(out))] = rng.choice([0x00, 0xFF, 0x7F, 0x80])
        else:  # trailing garbage
            out += rng.randbytes(rng.randint(1, 3))
    return bytes(out)


def random_payload(rng: random.Random, known_flags: int) -> bytes:
    data = bytearray(rng.randbytes(rng.randint(0, 28)))
    if data and rng.random() < 0.6:
        data[0] &= known_flags  # mostly valid flags, so that the body gets parsed
    return bytes(data)


def assert_sane(reading: DecodedReading, char: str) -> None:
    assert reading.characteristic == char
    assert reading.measurements
    for m in reading.measurements:
        spec = KIND_SPECS[m.kind]
        assert m.unit == spec.unit
        assert math.isfinite(m.value)
        assert spec.plausible_min <= m.value <= spec.plausible_max, m
        assert 0 <= m.decimals <= 129
        assert m.flags == reading.flags
    assert all(isinstance(f, Flag) for f in reading.flags)
    assert len(set(reading.flags)) == len(reading.flags)
    if reading.device_time is not None:
        assert 1582 <= reading.device_time.year <= 9999
    assert reading.user_id is None or 0 <= reading.user_id <= 254
    for key, value in reading.extras.items():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, float):
                assert math.isfinite(item), key
        if key in ("spo2_fast", "pulse_fast", "spo2_slow", "pulse_slow") and value is not None:
            spec = KIND_SPECS[Kind.SPO2 if key.startswith("spo2") else Kind.PULSE]
            assert isinstance(value, float)
            assert spec.plausible_min <= value <= spec.plausible_max, key


def run_one(decoder: Callable[[Buffer], DecodedReading], char: str, data: bytes) -> bool:
    try:
        reading = decoder(data)
    except DecodeError as exc:
        assert exc.characteristic == char, (data.hex(), exc)
        assert exc.offset is None or 0 <= exc.offset <= len(data), (data.hex(), exc)
        assert exc.reason
        return False
    except Exception as exc:  # the property under test: nothing else ever escapes
        pytest.fail(f"{char} {data.hex(' ')} raised {type(exc).__name__}: {exc} (seed {SEED})")
    assert_sane(reading, char)
    return True


@pytest.mark.parametrize("char", sorted(DECODERS))
def test_random_and_mutated_payloads_only_raise_decode_error(char: str) -> None:
    decoder = DECODERS[char]
    rng = random.Random(f"{SEED}-{char}")
    known = KNOWN_FLAGS[char]
    for _ in range(RANDOM_CASES):
        run_one(decoder, char, random_payload(rng, known))
    mutated_ok = 0
    valid_ok = 0
    for _ in range(MUTATED_CASES):
        valid = VALID[char](rng)
        valid_ok += run_one(decoder, char, valid)
        mutated_ok += run_one(decoder, char, mutate(rng, valid, known))
    # The generators must reach deep into the parser, or the fuzz proves little.
    assert valid_ok == MUTATED_CASES
    assert mutated_ok > MUTATED_CASES // 50


def test_quirk_profile_only_raises_decode_error() -> None:
    rng = random.Random(f"{SEED}-quirk")
    ok = 0
    for _ in range(5_000):
        valid = encode_bp_flags56_bigendian(
            rng.randint(90, 200), rng.randint(40, 120), rng.randint(60, 150),
            timestamp=datetime(2024, 1, 2, 3, 4, 5), pulse=rng.randint(40, 180),
            user_id=rng.randint(0, 255), status=rng.choice([0, 0x01, 0x27]),
        )
        assert run_one(decode_bp_flags56_bigendian, "2A35", valid)
        ok += run_one(decode_bp_flags56_bigendian, "2A35", mutate(rng, valid, 0xFF))
    assert ok > 0
