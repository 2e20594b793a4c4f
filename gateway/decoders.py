"""Pure decoders for the six Bluetooth SIG health characteristics the gateway reads.

Each decoder takes the bytes of one notification/indication and returns a
:class:`DecodedReading`, or raises :class:`~gateway.errors.DecodeError` naming the
characteristic, the byte offset and the reason. They raise nothing else for any bytes.

Rules (docs/devices.md says the same for operators):

- Values are converted to the canonical unit of their kind (vitalvagt.kinds.KIND_SPECS):
  kPa -> mm[Hg] (x 7.50062), lb -> kg (x 0.45359237), degF -> Cel. A converted value is
  rounded to one decimal place more than the device sent; ``Measurement.decimals`` says how
  many decimal places the value carries.
- A special value (NaN, NRes, +/-INF, reserved) where a measurement must be is an error.
  Optional parts become absent instead: a NaN mean arterial pressure or cuff pulse is left
  out (noted in extras as ``mean_special`` / ``pulse_special``), a NaN PLX fast/slow value or
  PAI becomes None in extras.
- Every value of a measurement kind (including PLX fast/slow values in extras) must lie in
  the kind's plausible range, else the frame is rejected: one broken value casts doubt on
  the frame. Other extras (BMI, height, energy, RR, PAI) are reported as sent.
- Reserved flag bits, reserved status bits, a reserved enumeration value, trailing bytes the
  flags do not explain, a truncated field and an impossible date are errors: each usually
  means a device that deviates from the specification, which a profile handles
  (gateway/profiles.py), never a looser parser.
- Device time: the naive date-time the device sent, or None when it sent none or said its
  clock is not set (year, month or day 0, or the PLX "device clock not set" bit); then
  Flag.DEVICE_CLOCK_NOT_SET is added and the raw text is kept in extras["device_time_raw"].

Public API:
    (choosing a device profile's override or the standard decoder: gateway.decoding.decode)
    normalize_uuid(uuid: str | int) -> str
    decode_blood_pressure, decode_heart_rate, decode_temperature, decode_weight,
    decode_plx_spot_check, decode_plx_continuous: (data: Buffer) -> DecodedReading
    DECODERS: characteristic ('2A35') -> decoder
    Building blocks for profiles: blood_pressure_reading here; Field, read_field,
        check_flags and the reading model (DecodedReading, Measurement) in gateway/decoded.py
    Status bit tables (bit mask -> Flag): BP_STATUS_BITS, PLX_MEAS_STATUS_BITS,
        PLX_DEVICE_STATUS_BITS; the BP pulse range is the 2-bit field BP_PULSE_RANGE_MASK
"""

from __future__ import annotations

import uuid as _uuid

from gateway.decoded import (
    DecodedReading,
    Decoder,
    Field,
    add_status_flags,
    check_flags,
    device_time_of,
    f_to_c,
    kpa_to_mmhg,
    lb_to_kg,
    measure,
    number_of,
    optional_value,
    read_field,
    reading_of,
    user_slot,
)
from gateway.errors import DecodeError
from gateway.sig import Buffer, DateTimeFields, Number, Reader, Special
from vitalvagt.kinds import Kind
from vitalvagt.observation import BodySite
from vitalvagt.quality import Flag

# --- Blood Pressure Measurement 0x2A35 -----------------------------------------------------

BP_KPA, BP_TIME, BP_PULSE, BP_USER, BP_STATUS = 0x01, 0x02, 0x04, 0x08, 0x10
BP_FLAGS_KNOWN = 0x1F
BP_STATUS_BITS: dict[int, Flag] = {
    0x0001: Flag.BODY_MOVEMENT,
    0x0002: Flag.CUFF_TOO_LOOSE,
    0x0004: Flag.IRREGULAR_PULSE,
    0x0020: Flag.IMPROPER_POSITION,
}
BP_PULSE_RANGE_MASK = 0x0018  # bits 3-4: 0 within, 1 above, 2 below, 3 reserved
_BP_STATUS_KNOWN = 0x003F


def decode_blood_pressure(data: Buffer) -> DecodedReading:
    """0x2A35: systolic, diastolic, mean (+ pulse), in mm[Hg] and /min."""
    r = Reader("2A35", data)
    flags = r.u8("flags")
    check_flags(r, flags, BP_FLAGS_KNOWN)
    systolic = read_field(r, "systolic")
    diastolic = read_field(r, "diastolic")
    mean = read_field(r, "mean arterial pressure")
    stamp = r.date_time() if flags & BP_TIME else None
    pulse = read_field(r, "pulse") if flags & BP_PULSE else None
    user = r.u8("user id") if flags & BP_USER else None
    status = (r.u16("measurement status"), r.pos - 2) if flags & BP_STATUS else None
    r.finish()
    return blood_pressure_reading(
        r,
        kpa=bool(flags & BP_KPA),
        systolic=systolic,
        diastolic=diastolic,
        mean=mean,
        stamp=stamp,
        pulse=pulse,
        user=user,
        status=status,
    )


def blood_pressure_reading(
    r: Reader,
    *,
    kpa: bool,
    systolic: Field,
    diastolic: Field,
    mean: Field,
    stamp: DateTimeFields | None,
    pulse: Field | None,
    user: int | None,
    status: tuple[int, int] | None,
) -> DecodedReading:
    """Turn BP fields, however a device laid them out, into a reading (profiles reuse it).

    ``status`` is (word, offset of the word).
    """
    conv = kpa_to_mmhg if kpa else None
    extras: dict[str, object] = {"device_unit": "kPa"} if kpa else {}
    parts: list[tuple[Kind, float, int]] = []
    for kind, f, what in (
        (Kind.BP_SYSTOLIC, systolic, "systolic"),
        (Kind.BP_DIASTOLIC, diastolic, "diastolic"),
    ):
        parts.append((kind, *measure(r, kind, number_of(r, f, what), f.offset, what, conv)))
    if isinstance(mean.value, Special):
        extras["mean_special"] = mean.value.value  # many cuffs never compute it
    else:
        value = measure(r, Kind.BP_MEAN, mean.value, mean.offset, "mean arterial pressure", conv)
        parts.append((Kind.BP_MEAN, *value))
    if pulse is not None:
        if isinstance(pulse.value, Special):
            extras["pulse_special"] = pulse.value.value
        else:
            parts.append((Kind.PULSE, *measure(r, Kind.PULSE, pulse.value, pulse.offset, "pulse")))
    qflags: list[Flag] = []
    if status is not None:
        word, offset = status
        extras["status"] = word
        reserved = word & ~_BP_STATUS_KNOWN
        if reserved:
            r.fail(
                f"reserved measurement status bits 0x{reserved:04X} set (status 0x{word:04X}; "
                "byte order swapped? see profiles)",
                offset,
            )
        add_status_flags(word & ~BP_PULSE_RANGE_MASK, BP_STATUS_BITS, qflags)
        pulse_range = (word & BP_PULSE_RANGE_MASK) >> 3
        if pulse_range == 1:
            qflags.append(Flag.PULSE_ABOVE_RANGE)
        elif pulse_range == 2:
            qflags.append(Flag.PULSE_BELOW_RANGE)
        elif pulse_range == 3:
            r.fail(f"reserved pulse rate range value 3 (status 0x{word:04X})", offset)
    device_time = device_time_of(stamp, qflags, extras)
    return reading_of(
        r, parts, qflags, device_time=device_time, user_id=user_slot(user), extras=extras
    )


# --- Heart Rate Measurement 0x2A37 ---------------------------------------------------------

HR_U16, HR_CONTACT, HR_CONTACT_SUPPORTED, HR_ENERGY, HR_RR = 0x01, 0x02, 0x04, 0x08, 0x10
HR_FLAGS_KNOWN = 0x1F


def decode_heart_rate(data: Buffer) -> DecodedReading:
    """0x2A37: heart rate in /min; energy (kJ) and RR intervals (s) in extras."""
    r = Reader("2A37", data)
    flags = r.u8("flags")
    check_flags(r, flags, HR_FLAGS_KNOWN)
    offset = r.pos
    bpm = r.u16("heart rate (u16)") if flags & HR_U16 else r.u8("heart rate")
    qflags: list[Flag] = []
    extras: dict[str, object] = {}
    if flags & HR_CONTACT_SUPPORTED:
        detected = bool(flags & HR_CONTACT)
        extras["sensor_contact"] = "detected" if detected else "not_detected"
        if not detected:
            qflags.append(Flag.NO_SKIN_CONTACT)
    else:
        # Bit 1 alone carries no meaning when contact detection is not supported.
        extras["sensor_contact"] = "not_supported"
    if flags & HR_ENERGY:
        extras["energy_kj"] = r.u16("energy expended")
    if flags & HR_RR:
        # 1/1024 s units: dividing by a power of two is exact in binary floating point.
        extras["rr_intervals_s"] = tuple(v / 1024 for v in r.u16_rest("RR interval"))
    r.finish()
    value = measure(r, Kind.PULSE, Number(bpm, 0), offset, "heart rate")
    return reading_of(r, [(Kind.PULSE, *value)], qflags, extras=extras)


# --- Temperature Measurement 0x2A1C --------------------------------------------------------

TEMP_FAHRENHEIT, TEMP_TIME, TEMP_TYPE = 0x01, 0x02, 0x04
TEMP_FLAGS_KNOWN = 0x07
TEMPERATURE_TYPES: dict[int, BodySite] = {
    1: BodySite.ARMPIT,
    2: BodySite.BODY,
    3: BodySite.EAR,
    4: BodySite.FINGER,
    5: BodySite.GI_TRACT,
    6: BodySite.MOUTH,
    7: BodySite.RECTUM,
    8: BodySite.TOE,
    9: BodySite.TYMPANUM,
}


def decode_temperature(data: Buffer) -> DecodedReading:
    """0x2A1C: body temperature in Cel with its body site when the device sends one."""
    r = Reader("2A1C", data)
    flags = r.u8("flags")
    check_flags(r, flags, TEMP_FLAGS_KNOWN)
    offset = r.pos
    num = number_of(r, Field(r.float32("temperature"), offset), "temperature")
    stamp = r.date_time() if flags & TEMP_TIME else None
    site = None
    if flags & TEMP_TYPE:
        code = r.u8("temperature type")
        site = TEMPERATURE_TYPES.get(code)
        if site is None:
            r.fail(f"reserved temperature type {code} (1-9 are defined)", r.pos - 1)
    r.finish()
    fahrenheit = bool(flags & TEMP_FAHRENHEIT)
    value = measure(
        r, Kind.TEMPERATURE, num, offset, "temperature", f_to_c if fahrenheit else None
    )
    qflags: list[Flag] = []
    extras: dict[str, object] = {"device_unit": "[degF]"} if fahrenheit else {}
    device_time = device_time_of(stamp, qflags, extras)
    return reading_of(
        r, [(Kind.TEMPERATURE, *value)], qflags, device_time=device_time, extras=extras, site=site
    )


# --- Weight Measurement 0x2A9D -------------------------------------------------------------

WEIGHT_IMPERIAL, WEIGHT_TIME, WEIGHT_USER, WEIGHT_BMI_HEIGHT = 0x01, 0x02, 0x04, 0x08
WEIGHT_FLAGS_KNOWN = 0x0F
WEIGHT_UNSUCCESSFUL = 0xFFFF


def decode_weight(data: Buffer) -> DecodedReading:
    """0x2A9D: body weight in kg; BMI and height (m) in extras."""
    r = Reader("2A9D", data)
    flags = r.u8("flags")
    check_flags(r, flags, WEIGHT_FLAGS_KNOWN)
    imperial = bool(flags & WEIGHT_IMPERIAL)
    offset = r.pos
    raw = r.u16("weight")
    if raw == WEIGHT_UNSUCCESSFUL:
        r.fail("weight is 0xFFFF: the scale reports the measurement unsuccessful", offset)
    stamp = r.date_time() if flags & WEIGHT_TIME else None
    user = r.u8("user id") if flags & WEIGHT_USER else None
    extras: dict[str, object] = {"device_unit": "[lb_av]"} if imperial else {}
    if flags & WEIGHT_BMI_HEIGHT:
        extras["bmi"] = r.u16("BMI") / 10
        height = r.u16("height")
        # 0.1 in = 0.00254 m exactly; SI resolution is 1 mm.
        extras["height_m"] = height * 254 / 100000 if imperial else height / 1000
    r.finish()
    if imperial:
        value = measure(r, Kind.WEIGHT, Number(raw, -2), offset, "weight", lb_to_kg)
    else:
        value = measure(r, Kind.WEIGHT, Number(raw * 5, -3), offset, "weight")  # 0.005 kg
    qflags: list[Flag] = []
    device_time = device_time_of(stamp, qflags, extras)
    return reading_of(
        r, [(Kind.WEIGHT, *value)], qflags, device_time=device_time, user_id=user_slot(user),
        extras=extras,
    )


# --- PLX Spot-check 0x2A5E and Continuous 0x2A5F -------------------------------------------

PLX_MEAS_STATUS_BITS: dict[int, Flag] = {
    1 << 5: Flag.MEASUREMENT_ONGOING,
    1 << 6: Flag.EARLY_ESTIMATE,
    1 << 7: Flag.VALIDATED,
    1 << 8: Flag.FULLY_QUALIFIED,
    1 << 9: Flag.FROM_STORAGE,
    1 << 10: Flag.DEMO_DATA,
    1 << 11: Flag.TESTING,
    1 << 12: Flag.CALIBRATING,
    1 << 13: Flag.UNAVAILABLE,
    1 << 14: Flag.QUESTIONABLE,
    1 << 15: Flag.INVALID,
}
_PLX_MEAS_STATUS_KNOWN = 0xFFE0
PLX_DEVICE_STATUS_BITS: dict[int, Flag] = {
    1 << 0: Flag.DISPLAY_UPDATE_ONGOING,
    1 << 1: Flag.EQUIPMENT_MALFUNCTION,
    1 << 2: Flag.SIGNAL_PROCESSING_IRREGULAR,
    1 << 3: Flag.INADEQUATE_SIGNAL,
    1 << 4: Flag.POOR_SIGNAL,
    1 << 5: Flag.LOW_PERFUSION,
    1 << 6: Flag.ERRATIC_SIGNAL,
    1 << 7: Flag.NON_PULSATILE,
    1 << 8: Flag.QUESTIONABLE_PULSE,
    1 << 9: Flag.SIGNAL_ANALYSIS_ONGOING,
    1 << 10: Flag.SENSOR_INTERFERENCE,
    1 << 11: Flag.SENSOR_NOT_ON_USER,
    1 << 12: Flag.UNKNOWN_SENSOR,
    1 << 13: Flag.SENSOR_DISPLACED,
    1 << 14: Flag.SENSOR_MALFUNCTION,
    1 << 15: Flag.SENSOR_DISCONNECTED,
}
_PLX_DEVICE_STATUS_KNOWN = 0x00FFFF


def _plx_status(
    r: Reader,
    flags_on: tuple[bool, bool],
    qflags: list[Flag],
    extras: dict[str, object],
) -> None:
    """Read the optional measurement status (u16) and device/sensor status (u24)."""
    if flags_on[0]:
        offset = r.pos
        word = r.u16("measurement status")
        if word & ~_PLX_MEAS_STATUS_KNOWN:
            r.fail(f"reserved measurement status bits set (status 0x{word:04X})", offset)
        extras["measurement_status"] = word
        add_status_flags(word, PLX_MEAS_STATUS_BITS, qflags)
    if flags_on[1]:
        offset = r.pos
        word = r.u24("device and sensor status")
        if word & ~_PLX_DEVICE_STATUS_KNOWN:
            r.fail(f"reserved device and sensor status bits set (status 0x{word:06X})", offset)
        extras["device_status"] = word
        add_status_flags(word, PLX_DEVICE_STATUS_BITS, qflags)


def _plx_parts(r: Reader, spo2: Field, pulse: Field) -> list[tuple[Kind, float, int]]:
    return [
        (Kind.SPO2, *measure(r, Kind.SPO2, number_of(r, spo2, "SpO2"), spo2.offset, "SpO2")),
        (Kind.PULSE, *measure(r, Kind.PULSE, number_of(r, pulse, "pulse"), pulse.offset, "pulse")),
    ]


PLX_SPOT_TIME, PLX_SPOT_MEAS_STATUS, PLX_SPOT_DEVICE_STATUS = 0x01, 0x02, 0x04
PLX_SPOT_PAI, PLX_SPOT_CLOCK_NOT_SET = 0x08, 0x10
PLX_SPOT_FLAGS_KNOWN = 0x1F


def decode_plx_spot_check(data: Buffer) -> DecodedReading:
    """0x2A5E: SpO2 (%) and pulse (/min) with status flags; PAI in extras."""
    r = Reader("2A5E", data)
    flags = r.u8("flags")
    check_flags(r, flags, PLX_SPOT_FLAGS_KNOWN)
    spo2 = read_field(r, "SpO2")
    pulse = read_field(r, "pulse")
    stamp = r.date_time() if flags & PLX_SPOT_TIME else None
    qflags: list[Flag] = []
    extras: dict[str, object] = {}
    _plx_status(r, (bool(flags & PLX_SPOT_MEAS_STATUS), bool(flags & PLX_SPOT_DEVICE_STATUS)),
                qflags, extras)
    if flags & PLX_SPOT_PAI:
        extras["pai"] = optional_value(r, read_field(r, "pulse amplitude index"), "PAI")
    r.finish()
    parts = _plx_parts(r, spo2, pulse)
    clock_not_set = bool(flags & PLX_SPOT_CLOCK_NOT_SET)
    device_time = device_time_of(stamp, qflags, extras, clock_not_set=clock_not_set)
    return reading_of(r, parts, qflags, device_time=device_time, extras=extras)


PLX_CONT_FAST, PLX_CONT_SLOW, PLX_CONT_MEAS_STATUS = 0x01, 0x02, 0x04
PLX_CONT_DEVICE_STATUS, PLX_CONT_PAI = 0x08, 0x10
PLX_CONT_FLAGS_KNOWN = 0x1F


def decode_plx_continuous(data: Buffer) -> DecodedReading:
    """0x2A5F: SpO2 and pulse (normal averaging); fast/slow values and PAI in extras."""
    r = Reader("2A5F", data)
    flags = r.u8("flags")
    check_flags(r, flags, PLX_CONT_FLAGS_KNOWN)
    spo2 = read_field(r, "SpO2")
    pulse = read_field(r, "pulse")
    extras: dict[str, object] = {}
    for bit, name in ((PLX_CONT_FAST, "fast"), (PLX_CONT_SLOW, "slow")):
        if flags & bit:
            s = read_field(r, f"SpO2 {name}")
            p = read_field(r, f"pulse {name}")
            extras[f"spo2_{name}"] = optional_value(r, s, f"SpO2 {name}", Kind.SPO2)
            extras[f"pulse_{name}"] = optional_value(r, p, f"pulse {name}", Kind.PULSE)
    qflags: list[Flag] = []
    _plx_status(r, (bool(flags & PLX_CONT_MEAS_STATUS), bool(flags & PLX_CONT_DEVICE_STATUS)),
                qflags, extras)
    if flags & PLX_CONT_PAI:
        extras["pai"] = optional_value(r, read_field(r, "pulse amplitude index"), "PAI")
    r.finish()
    return reading_of(r, _plx_parts(r, spo2, pulse), qflags, extras=extras)


# --- dispatch ------------------------------------------------------------------------------

DECODERS: dict[str, Decoder] = {
    "2A35": decode_blood_pressure,
    "2A37": decode_heart_rate,
    "2A1C": decode_temperature,
    "2A9D": decode_weight,
    "2A5E": decode_plx_spot_check,
    "2A5F": decode_plx_continuous,
}

_SIG_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_HEX = frozenset("0123456789abcdef")


def normalize_uuid(uuid: str | int) -> str:
    """'2A35', '0x2a35', 0x2A35 or the full 128-bit SIG UUID -> '2A35'.

    A 128-bit UUID outside the SIG base (a vendor characteristic) comes back lower-case in
    full, the key under which a profile registers a vendor decoder.
    """
    if isinstance(uuid, int) and not isinstance(uuid, bool):
        if 0 <= uuid <= 0xFFFF:
            return f"{uuid:04X}"
    elif isinstance(uuid, str):
        text = uuid.strip().lower()
        text = text.removeprefix("0x")
        if len(text) == 36 and text.startswith("0000") and text.endswith(_SIG_BASE_SUFFIX):
            text = text[4:8]
        elif len(text) == 8 and text.startswith("0000"):
            text = text[4:]
        if len(text) == 4 and _HEX.issuperset(text):
            return text.upper()
        if len(text) == 36:
            try:
                return str(_uuid.UUID(text))
            except ValueError:
                pass
    raise DecodeError(
        str(uuid), None, "not a Bluetooth UUID: give 16-bit hex like 2A35 or a 128-bit UUID"
    )
