"""The six characteristic decoders on published and hand-made byte vectors.

Hand-made vectors are written out byte by byte from the specification (not produced by the
simulator's encoders), so that an encoder and decoder sharing one mistake cannot pass here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from gateway.decoded import DecodedReading
from gateway.decoders import (
    decode_blood_pressure,
    decode_heart_rate,
    decode_plx_continuous,
    decode_plx_spot_check,
    decode_temperature,
    decode_weight,
)
from gateway.decoding import decode
from gateway.errors import DecodeError
from gateway.profiles import PROFILES, Profile, decode_bp_flags56_bigendian, register_profile
from gateway.sig import Buffer
from vitalvagt.kinds import Kind
from vitalvagt.observation import BodySite
from vitalvagt.quality import Flag


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def values(reading: DecodedReading) -> dict[Kind, float]:
    return {m.kind: m.value for m in reading.measurements}


def error(decoder: Callable[[Buffer], DecodedReading], data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        decoder(data)
    return err.value


# --- published vectors (reference section 2) ----------------------------------------------

BP_VECTOR = "1E 8A00 5800 7800 0000 04 11 14 29 3B 3C00 01 2700"


def test_bp_published_vector() -> None:
    r = decode_blood_pressure(h(BP_VECTOR))
    assert r.characteristic == "2A35"
    assert [m.kind for m in r.measurements] == [
        Kind.BP_SYSTOLIC,
        Kind.BP_DIASTOLIC,
        Kind.BP_MEAN,
        Kind.PULSE,
    ]
    assert values(r) == {
        Kind.BP_SYSTOLIC: 138.0,
        Kind.BP_DIASTOLIC: 88.0,
        Kind.BP_MEAN: 120.0,
        Kind.PULSE: 60.0,
    }
    assert [m.unit for m in r.measurements] == ["mm[Hg]", "mm[Hg]", "mm[Hg]", "/min"]
    assert all(m.decimals == 0 and m.body_site is None for m in r.measurements)
    # Year 0: the device does not know the date, so there is no device time.
    assert r.device_time is None
    assert r.extras["device_time_raw"] == "0000-04-17T20:41:59"
    assert r.user_id == 1
    assert r.extras["status"] == 0x0027
    expected = {
        Flag.BODY_MOVEMENT,
        Flag.CUFF_TOO_LOOSE,
        Flag.IRREGULAR_PULSE,
        Flag.IMPROPER_POSITION,
        Flag.DEVICE_CLOCK_NOT_SET,
    }
    assert set(r.flags) == expected
    assert len(r.flags) == len(expected)
    assert all(set(m.flags) == expected for m in r.measurements)


def test_hr_published_vector_minimal() -> None:
    r = decode_heart_rate(h("00 55"))
    assert r.characteristic == "2A37"
    assert len(r.measurements) == 1
    m = r.measurements[0]
    assert (m.kind, m.value, m.unit, m.decimals, m.flags) == (Kind.PULSE, 85.0, "/min", 0, ())
    assert r.device_time is None and r.user_id is None and r.flags == ()
    assert dict(r.extras) == {"sensor_contact": "not_supported"}


def test_hr_published_vector_full() -> None:
    r = decode_heart_rate(h("1E 55 3200 2100"))
    assert values(r) == {Kind.PULSE: 85.0}
    assert r.flags == ()  # contact supported and detected
    assert dict(r.extras) == {
        "sensor_contact": "detected",
        "energy_kj": 50,
        "rr_intervals_s": (33 / 1024,),
    }


def test_temperature_published_vector() -> None:
    r = decode_temperature(h("06 B00E00FE DC07 0C 05 0B 32 1B 04"))
    assert r.characteristic == "2A1C"
    m = r.measurements[0]
    assert (m.kind, m.value, m.unit, m.decimals) == (Kind.TEMPERATURE, 37.6, "Cel", 2)
    assert m.body_site is BodySite.FINGER
    assert r.device_time == datetime(2012, 12, 5, 11, 50, 27)
    assert r.flags == () and r.user_id is None and dict(r.extras) == {}


def test_plx_continuous_published_vector() -> None:
    r = decode_plx_continuous(h("1C 5F00 5A00 2000 000000 57F0"))
    assert r.characteristic == "2A5F"
    assert values(r) == {Kind.SPO2: 95.0, Kind.PULSE: 90.0}
    assert [m.unit for m in r.measurements] == ["%", "/min"]
    assert r.flags == (Flag.MEASUREMENT_ONGOING,)
    assert all(m.flags == (Flag.MEASUREMENT_ONGOING,) for m in r.measurements)
    assert dict(r.extras) == {"measurement_status": 0x0020, "device_status": 0, "pai": 8.7}
    assert r.device_time is None


# --- hand-made vectors ---------------------------------------------------------------------


def test_bp_kpa_converted_to_mmhg() -> None:
    # 18.4 / 11.7 / 14.0 kPa (exponent -1): 0xF0B8, 0xF075, 0xF08C.
    r = decode_blood_pressure(h("01 B8F0 75F0 8CF0"))
    assert values(r) == {Kind.BP_SYSTOLIC: 138.01, Kind.BP_DIASTOLIC: 87.76, Kind.BP_MEAN: 105.01}
    assert all(m.unit == "mm[Hg]" and m.decimals == 2 for m in r.measurements)
    assert r.extras["device_unit"] == "kPa"
    # Values where a factor of 7.5006 or 7.50063 would round differently: 24.2, 8.0, 13.3 kPa.
    r = decode_blood_pressure(h("01 F2F0 50F0 85F0"))
    assert values(r) == {Kind.BP_SYSTOLIC: 181.52, Kind.BP_DIASTOLIC: 60.0, Kind.BP_MEAN: 99.76}


def test_bp_with_full_time_and_pulse_range() -> None:
    # mmHg, time 2024-01-02 03:04:05, status bits 3-4 = 1 (pulse above range).
    r = decode_blood_pressure(h("12 7800 5000 5D00 E807 01 02 03 04 05 0800"))
    assert values(r) == {Kind.BP_SYSTOLIC: 120.0, Kind.BP_DIASTOLIC: 80.0, Kind.BP_MEAN: 93.0}
    assert r.device_time == datetime(2024, 1, 2, 3, 4, 5)
    assert r.flags == (Flag.PULSE_ABOVE_RANGE,)
    below = decode_blood_pressure(h("10 7800 5000 5D00 1000"))
    assert below.flags == (Flag.PULSE_BELOW_RANGE,)
    assert below.device_time is None and "device_time_raw" not in below.extras


def test_bp_user_unknown_is_none() -> None:
    assert decode_blood_pressure(h("08 7800 5000 5D00 FF")).user_id is None
    assert decode_blood_pressure(h("08 7800 5000 5D00 07")).user_id == 7


def test_bp_nan_mean_and_pulse_are_left_out() -> None:
    r = decode_blood_pressure(h("04 7800 5000 FF07 FF07"))
    assert values(r) == {Kind.BP_SYSTOLIC: 120.0, Kind.BP_DIASTOLIC: 80.0}
    assert r.extras["mean_special"] == "NaN"
    assert r.extras["pulse_special"] == "NaN"


def test_hr_u16_and_contact_states() -> None:
    assert values(decode_heart_rate(h("01 9600"))) == {Kind.PULSE: 150.0}
    no_contact = decode_heart_rate(h("04 48"))
    assert no_contact.flags == (Flag.NO_SKIN_CONTACT,)
    assert no_contact.measurements[0].flags == (Flag.NO_SKIN_CONTACT,)
    assert no_contact.extras["sensor_contact"] == "not_detected"
    # Bit 1 without bit 2 (not supported) says nothing about contact.
    assert decode_heart_rate(h("02 48")).flags == ()
    rr = decode_heart_rate(h("10 48 0004 0002"))
    assert rr.extras["rr_intervals_s"] == (1.0, 0.5)


def test_temperature_fahrenheit_converted_to_celsius() -> None:
    # 98.6 degF (FLOAT exponent -1, mantissa 986), type 6 = mouth.
    r = decode_temperature(h("05 DA0300FF 06"))
    m = r.measurements[0]
    assert (m.value, m.unit, m.decimals, m.body_site) == (37.0, "Cel", 2, BodySite.MOUTH)
    assert r.extras["device_unit"] == "[degF]"
    # 100.0 degF = 37.777... Cel, kept to one decimal more than sent.
    assert values(decode_temperature(h("01 E80300FF"))) == {Kind.TEMPERATURE: 37.78}


@pytest.mark.parametrize(("code", "site"), [(1, BodySite.ARMPIT), (5, BodySite.GI_TRACT),
                                            (7, BodySite.RECTUM), (9, BodySite.TYMPANUM)])
def test_temperature_types(code: int, site: BodySite) -> None:
    r = decode_temperature(h("04 7001 00FF") + bytes((code,)))
    assert r.measurements[0].body_site is site
    assert r.measurements[0].value == 36.8


def test_weight_si_with_bmi_height_user_and_time() -> None:
    # 14051 x 0.005 kg = 70.255 kg; 2024-02-29 08:00:00; user 3; BMI 24.4; height 1.781 m.
    r = decode_weight(h("0E E336 E807 02 1D 08 00 00 03 F400 F506"))
    m = r.measurements[0]
    assert (m.kind, m.value, m.unit, m.decimals) == (Kind.WEIGHT, 70.255, "kg", 3)
    assert r.device_time == datetime(2024, 2, 29, 8, 0, 0)
    assert r.user_id == 3
    assert dict(r.extras) == {"bmi": 24.4, "height_m": 1.781}


def test_weight_imperial_converted_to_kg() -> None:
    # 154.32 lb (15432 x 0.01 lb), BMI 24.4, height 70.1 in (701 x 0.1 in).
    r = decode_weight(h("09 483C F400 BD02"))
    m = r.measurements[0]
    assert (m.value, m.unit, m.decimals) == (69.998, "kg", 3)
    assert r.extras == {"device_unit": "[lb_av]", "bmi": 24.4, "height_m": 1.78054}
    assert r.user_id is None and r.device_time is None


def test_plx_spot_check_with_status_device_status_and_pai() -> None:
    # SpO2 97, pulse 72, 2024-03-10 07:30:15, status validated + questionable (0x4080),
    # device status low perfusion + sensor not on user (0x000820), PAI 1.5.
    r = decode_plx_spot_check(h("0F 6100 4800 E807 03 0A 07 1E 0F 8040 200800 0FF0"))
    assert r.characteristic == "2A5E"
    assert values(r) == {Kind.SPO2: 97.0, Kind.PULSE: 72.0}
    assert r.device_time == datetime(2024, 3, 10, 7, 30, 15)
    expected = [Flag.VALIDATED, Flag.QUESTIONABLE, Flag.LOW_PERFUSION, Flag.SENSOR_NOT_ON_USER]
    assert list(r.flags) == expected
    assert all(list(m.flags) == expected for m in r.measurements)
    assert dict(r.extras) == {"measurement_status": 0x4080, "device_status": 0x000820, "pai": 1.5}


def test_plx_spot_check_clock_not_set() -> None:
    r = decode_plx_spot_check(h("11 6100 4800 E807 03 0A 07 1E 0F"))
    assert r.device_time is None
    assert r.flags == (Flag.DEVICE_CLOCK_NOT_SET,)
    assert r.extras["device_time_raw"] == "2024-03-10T07:30:15"


def test_plx_spot_check_decimal_spo2() -> None:
    r = decode_plx_spot_check(h("00 CFF3 4800"))  # 975 x 10^-1
    assert r.measurements[0].value == 97.5
    assert r.measurements[0].decimals == 1


@pytest.mark.parametrize(
    ("bit", "flag"),
    [(5, Flag.MEASUREMENT_ONGOING), (6, Flag.EARLY_ESTIMATE), (7, Flag.VALIDATED),
     (8, Flag.FULLY_QUALIFIED), (9, Flag.FROM_STORAGE), (10, Flag.DEMO_DATA),
     (11, Flag.TESTING), (12, Flag.CALIBRATING), (13, Flag.UNAVAILABLE),
     (14, Flag.QUESTIONABLE), (15, Flag.INVALID)],
)
def test_plx_measurement_status_bits(bit: int, flag: Flag) -> None:
    data = h("02 6100 4800") + (1 << bit).to_bytes(2, "little")
    assert decode_plx_spot_check(data).flags == (flag,)


@pytest.mark.parametrize(
    ("bit", "flag"),
    [(0, Flag.DISPLAY_UPDATE_ONGOING), (1, Flag.EQUIPMENT_MALFUNCTION),
     (2, Flag.SIGNAL_PROCESSING_IRREGULAR), (3, Flag.INADEQUATE_SIGNAL), (4, Flag.POOR_SIGNAL),
     (5, Flag.LOW_PERFUSION), (6, Flag.ERRATIC_SIGNAL), (7, Flag.NON_PULSATILE),
     (8, Flag.QUESTIONABLE_PULSE), (9, Flag.SIGNAL_ANALYSIS_ONGOING),
     (10, Flag.SENSOR_INTERFERENCE), (11, Flag.SENSOR_NOT_ON_USER), (12, Flag.UNKNOWN_SENSOR),
     (13, Flag.SENSOR_DISPLACED), (14, Flag.SENSOR_MALFUNCTION), (15, Flag.SENSOR_DISCONNECTED)],
)
def test_plx_device_status_bits(bit: int, flag: Flag) -> None:
    data = h("08 6100 4800") + (1 << bit).to_bytes(3, "little")
    assert decode_plx_continuous(data).flags == (flag,)


@pytest.mark.parametrize(
    ("status", "flag"),
    [(0x01, Flag.BODY_MOVEMENT), (0x02, Flag.CUFF_TOO_LOOSE), (0x04, Flag.IRREGULAR_PULSE),
     (0x08, Flag.PULSE_ABOVE_RANGE), (0x10, Flag.PULSE_BELOW_RANGE),
     (0x20, Flag.IMPROPER_POSITION)],
)
def test_bp_status_bits(status: int, flag: Flag) -> None:
    data = h("10 7800 5000 5D00") + status.to_bytes(2, "little")
    assert decode_blood_pressure(data).flags == (flag,)


def test_plx_continuous_fast_slow_in_extras() -> None:
    # normal 96/70, fast 95/72, slow NaN/68.5 (exponent -1: 0xF2AD).
    r = decode_plx_continuous(h("03 6000 4600 5F00 4800 FF07 ADF2"))
    assert values(r) == {Kind.SPO2: 96.0, Kind.PULSE: 70.0}
    assert dict(r.extras) == {
        "spo2_fast": 95.0,
        "pulse_fast": 72.0,
        "spo2_slow": None,
        "pulse_slow": 68.5,
    }
    assert decode_plx_continuous(h("10 6000 4600 FF07")).extras["pai"] is None


# --- special values where a measurement must be --------------------------------------------

SFLOAT_SPECIALS = {
    "NaN": "FF07",
    "NRes": "0008",
    "+INF": "FE07",
    "-INF": "0208",
    "reserved": "0108",
}
FLOAT_SPECIALS = {
    "NaN": "FFFF7F00",
    "NRes": "00008000",
    "+INF": "FEFF7F00",
    "-INF": "02008000",
    "reserved": "01008000",
}


@pytest.mark.parametrize("name", SFLOAT_SPECIALS)
def test_special_systolic_is_an_error(name: str) -> None:
    e = error(decode_blood_pressure, h("00" + SFLOAT_SPECIALS[name] + "5000 5D00"))
    assert (e.characteristic, e.offset) == ("2A35", 1)
    assert f"systolic is {name}" in e.reason


@pytest.mark.parametrize("name", SFLOAT_SPECIALS)
def test_special_diastolic_is_an_error(name: str) -> None:
    e = error(decode_blood_pressure, h("00 7800" + SFLOAT_SPECIALS[name] + "5D00"))
    assert (e.characteristic, e.offset) == ("2A35", 3)


@pytest.mark.parametrize("name", FLOAT_SPECIALS)
def test_special_temperature_is_an_error(name: str) -> None:
    e = error(decode_temperature, h("00" + FLOAT_SPECIALS[name]))
    assert (e.characteristic, e.offset) == ("2A1C", 1)
    assert f"temperature is {name}" in e.reason


@pytest.mark.parametrize("name", SFLOAT_SPECIALS)
def test_special_spo2_and_pulse_are_errors(name: str) -> None:
    e = error(decode_plx_spot_check, h("00" + SFLOAT_SPECIALS[name] + "4800"))
    assert (e.characteristic, e.offset) == ("2A5E", 1)
    e = error(decode_plx_continuous, h("00 6100" + SFLOAT_SPECIALS[name]))
    assert (e.characteristic, e.offset) == ("2A5F", 3)


def test_weight_unsuccessful_is_an_error() -> None:
    e = error(decode_weight, h("00 FFFF"))
    assert (e.characteristic, e.offset) == ("2A9D", 1)
    assert "unsuccessful" in e.reason


# --- errors: truncation, trailing bytes, reserved bits, impossible values -------------------


def test_truncated_bp_pulse() -> None:
    e = error(decode_blood_pressure, h("1E 8A00 5800 7800 0000 04 11 14 29 3B 3C"))
    assert (e.characteristic, e.offset) == ("2A35", 14)
    assert str(e) == (
        "2A35 Blood Pressure Measurement: byte 14: truncated, need 2 bytes for pulse, have 1"
    )


@pytest.mark.parametrize(
    ("decoder", "char"),
    [(decode_blood_pressure, "2A35"), (decode_heart_rate, "2A37"), (decode_temperature, "2A1C"),
     (decode_weight, "2A9D"), (decode_plx_spot_check, "2A5E"), (decode_plx_continuous, "2A5F")],
)
def test_empty_payload(decoder: Callable[[Buffer], DecodedReading], char: str) -> None:
    e = error(decoder, b"")
    assert (e.characteristic, e.offset) == (char, 0)
    assert "flags" in e.reason


@pytest.mark.parametrize(
    ("decoder", "data", "char", "offset"),
    [
        (decode_blood_pressure, BP_VECTOR + " 00", "2A35", 19),
        (decode_heart_rate, "00 55 00", "2A37", 2),
        (decode_temperature, "00 B00E00FE 04", "2A1C", 5),
        (decode_weight, "00 E336 00", "2A9D", 3),
        (decode_plx_spot_check, "00 6100 4800 00", "2A5E", 5),
        (decode_plx_continuous, "00 6100 4800 0000", "2A5F", 5),
    ],
)
def test_trailing_bytes_rejected(
    decoder: Callable[[Buffer], DecodedReading], data: str, char: str, offset: int
) -> None:
    e = error(decoder, h(data))
    assert (e.characteristic, e.offset) == (char, offset)
    assert "trailing" in e.reason


@pytest.mark.parametrize(
    ("decoder", "data", "char"),
    [
        (decode_blood_pressure, "20 7800 5000 5D00", "2A35"),
        (decode_blood_pressure, "80 7800 5000 5D00", "2A35"),
        (decode_heart_rate, "20 55", "2A37"),
        (decode_temperature, "08 B00E00FE", "2A1C"),
        (decode_weight, "10 E336", "2A9D"),
        (decode_plx_spot_check, "20 6100 4800", "2A5E"),
        (decode_plx_continuous, "40 6100 4800", "2A5F"),
    ],
)
def test_reserved_flag_bits_rejected(
    decoder: Callable[[Buffer], DecodedReading], data: str, char: str
) -> None:
    e = error(decoder, h(data))
    assert (e.characteristic, e.offset) == (char, 0)
    assert "reserved flag bits" in e.reason


def test_impossible_month_rejected() -> None:
    e = error(decode_temperature, h("02 B00E00FE DC07 0D 05 0B 32 1B"))
    assert (e.characteristic, e.offset) == ("2A1C", 5)
    assert "impossible month 13" in e.reason


def test_reserved_status_values_rejected() -> None:
    e = error(decode_blood_pressure, h("10 7800 5000 5D00 1800"))  # pulse range 3
    assert (e.offset, "reserved pulse rate range" in e.reason) == (7, True)
    e = error(decode_blood_pressure, h("10 7800 5000 5D00 0027"))  # swapped byte order
    assert (e.offset, "reserved measurement status bits 0x2700" in e.reason) == (7, True)
    e = error(decode_plx_spot_check, h("02 6100 4800 0100"))
    assert (e.characteristic, e.offset) == ("2A5E", 5)
    e = error(decode_plx_spot_check, h("06 6100 4800 0000 000001"))
    assert (e.characteristic, e.offset) == ("2A5E", 7)


@pytest.mark.parametrize("code", [0, 10, 255])
def test_reserved_temperature_type_rejected(code: int) -> None:
    e = error(decode_temperature, h("04 B00E00FE") + bytes((code,)))
    assert (e.characteristic, e.offset) == ("2A1C", 5)


@pytest.mark.parametrize(
    ("decoder", "data", "offset", "words"),
    [
        (decode_plx_spot_check, "00 6500 4800", 1, "SpO2 101 %"),  # 101 %
        (decode_plx_spot_check, "00 6100 0000", 3, "pulse 0 /min"),
        (decode_blood_pressure, "00 2C01 5000 5D00", 1, "systolic 300 mm[Hg]"),
        (decode_heart_rate, "00 00", 1, "heart rate 0 /min"),
        (decode_temperature, "00 E80300FF", 1, "temperature 100 Cel"),
        (decode_weight, "00 0100", 1, "weight 0.005 kg"),
        (decode_plx_continuous, "01 6100 4800 6500 4800", 5, "SpO2 fast 101 %"),
    ],
)
def test_implausible_values_rejected(
    decoder: Callable[[Buffer], DecodedReading], data: str, offset: int, words: str
) -> None:
    e = error(decoder, h(data))
    assert e.offset == offset
    assert words in e.reason and "plausible" in e.reason


def test_hr_rr_flag_without_intervals() -> None:
    e = error(decode_heart_rate, h("10 48"))
    assert (e.offset, e.reason) == (2, "truncated, need 2 bytes for RR interval, have 0")
    e = error(decode_heart_rate, h("10 48 0004 00"))
    assert e.offset == 4


# --- dispatch and profiles ----------------------------------------------------------------


@pytest.mark.parametrize("uuid", ["2A35", "0x2a35", "00002a35-0000-1000-8000-00805f9b34fb", 0x2A35])
def test_decode_dispatches_by_uuid(uuid: str | int) -> None:
    assert decode(uuid, h(BP_VECTOR)) == decode_blood_pressure(h(BP_VECTOR))


def test_decode_accepts_bytearray_and_memoryview() -> None:
    expected = decode_heart_rate(h("1E 55 3200 2100"))
    assert decode("2A37", bytearray(h("1E 55 3200 2100"))) == expected
    assert decode("2A37", memoryview(h("1E 55 3200 2100"))) == expected


def test_decode_unknown_characteristic() -> None:
    with pytest.raises(DecodeError) as err:
        decode("2A99", h("00"))
    assert (err.value.characteristic, err.value.offset) == ("2A99", None)
    assert "unsupported characteristic" in err.value.reason


QUIRK = "56 8A00 5800 7800 E807 01 02 03 04 05 003C 01 0027"


def test_quirky_monitor_needs_its_profile() -> None:
    e = error(decode_blood_pressure, h(QUIRK))
    assert (e.characteristic, e.offset) == ("2A35", 0)
    r = decode("2A35", h(QUIRK), profile="bp_flags56_bigendian")
    assert values(r) == {
        Kind.BP_SYSTOLIC: 138.0,
        Kind.BP_DIASTOLIC: 88.0,
        Kind.BP_MEAN: 120.0,
        Kind.PULSE: 60.0,
    }
    assert r.device_time == datetime(2024, 1, 2, 3, 4, 5)
    assert r.user_id == 1
    assert r.extras["status"] == 0x0027
    assert set(r.flags) == {
        Flag.BODY_MOVEMENT,
        Flag.CUFF_TOO_LOOSE,
        Flag.IRREGULAR_PULSE,
        Flag.IMPROPER_POSITION,
    }


def test_quirk_profile_passes_standard_frames_and_rejects_other_quirks() -> None:
    assert decode_bp_flags56_bigendian(h(BP_VECTOR)) == decode_blood_pressure(h(BP_VECTOR))
    e = error(decode_bp_flags56_bigendian, h("46 8A00 5800 7800"))
    assert (e.offset, "0x46" in e.reason) == (0, True)
    e = error(decode_bp_flags56_bigendian, h(QUIRK)[:-1])
    assert e.offset == 17
    # Profiles only override what they name: other characteristics decode as standard.
    assert decode("2A37", h("00 55"), profile="bp_flags56_bigendian").measurements


def test_unknown_and_unsupported_profiles() -> None:
    with pytest.raises(DecodeError, match="unknown device profile 'nope'"):
        decode("2A35", h(BP_VECTOR), profile="nope")
    with pytest.raises(DecodeError, match="not implemented"):
        decode("2A35", h(BP_VECTOR), profile="medisana_78b2")


def test_vendor_profile_hook_and_guard() -> None:
    vendor = "0000fff1-0000-1000-8000-00805f9b34fc"

    def vendor_decoder(data: Buffer) -> DecodedReading:
        if len(data) != 2:
            raise IndexError("vendor decoder bug")  # a bug the guard must translate
        return DecodedReading(vendor, ())

    undo = register_profile(Profile("test_vendor", "test", {vendor: vendor_decoder}))
    try:
        assert "test_vendor" in PROFILES
        assert decode(vendor.upper(), b"\x01\x02", profile="test_vendor").characteristic == vendor
        with pytest.raises(DecodeError, match="profile test_vendor failed: IndexError") as err:
            decode(vendor, b"\x01\x02\x03", profile="test_vendor")
        assert err.value.characteristic == vendor
        with pytest.raises(ValueError, match="already registered"):
            register_profile(Profile("test_vendor", "again", {}))
    finally:
        undo()
    assert "test_vendor" not in PROFILES
    with pytest.raises(DecodeError, match="unsupported characteristic"):
        decode(vendor, b"\x01\x02")
