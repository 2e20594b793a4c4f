"""Device profiles: named decoders for device models that deviate from the SIG specification.

The standard decoders (gateway/decoders.py) stay strict; a model that sends something else
gets a profile here, chosen per device by the operator (``vitalvagt gateway decode
--profile NAME`` to try one out). A profile maps characteristics to decoder overrides; the
key is the 16-bit UUID ('2A35') or, for a vendor service, the full 128-bit UUID in lower
case (gateway.decoders.normalize_uuid gives the key). Characteristics a profile does not
override decode with the standard decoder.

Public API:
    Profile(name, description, decoders)
    PROFILES: name -> Profile
    KNOWN_UNSUPPORTED: name -> why a known model has no profile yet
    register_profile(profile: Profile) -> Callable[[], None]   (returns the undo)
    profile_decoder(name: str, characteristic: str) -> Decoder | None   (DecodeError if unknown)
    decode_bp_flags56_bigendian(data: Buffer) -> DecodedReading
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.decoded import DecodedReading, Decoder, read_field
from gateway.decoders import BP_FLAGS_KNOWN, blood_pressure_reading, decode_blood_pressure
from gateway.errors import DecodeError
from gateway.sig import Buffer, Reader


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    decoders: Mapping[str, Decoder]  # characteristic key -> decoder override


# --- bp_flags56_bigendian ------------------------------------------------------------------
# A blood-pressure monitor model (reference section 2) sends flags 0x56: time stamp, pulse
# and status bits, plus bit 6, which the specification reserves. Its pulse SFLOAT and status
# word are big-endian, and a user id byte follows the pulse although flag bit 3 is clear.
# Layout: flags, systolic, diastolic, mean (SFLOAT, little-endian), date-time, pulse (SFLOAT,
# big-endian), user id (u8), status (u16, big-endian). Frames without bit 6 are standard.

BP_QUIRK_FLAGS = 0x56
_BP_QUIRK_MARKER = 0x40  # the reserved bit that identifies the quirky layout


def decode_bp_flags56_bigendian(data: Buffer) -> DecodedReading:
    r = Reader("2A35", data)
    flags = r.u8("flags")
    if flags != BP_QUIRK_FLAGS:
        if flags & ~BP_FLAGS_KNOWN & 0xFF:
            # Only the layout seen on the device is known; guessing another would invent values.
            r.fail(
                f"profile bp_flags56_bigendian knows flags 0x56 and standard frames only, "
                f"got 0x{flags:02X}",
                0,
            )
        return decode_blood_pressure(data)
    systolic = read_field(r, "systolic")
    diastolic = read_field(r, "diastolic")
    mean = read_field(r, "mean arterial pressure")
    stamp = r.date_time()
    pulse = read_field(r, "pulse (big-endian)", big_endian=True)
    user = r.u8("user id (sent without its flag bit)")
    status = (r.u16("measurement status (big-endian)", big_endian=True), r.pos - 2)
    r.finish()
    return blood_pressure_reading(
        r,
        kpa=False,
        systolic=systolic,
        diastolic=diastolic,
        mean=mean,
        stamp=stamp,
        pulse=pulse,
        user=user,
        status=status,
    )


PROFILES: dict[str, Profile] = {}

# Vendor formats seen in the field but not implemented: the name gives a clear error instead of
# "unknown profile", and docs/devices.md says what is known.
KNOWN_UNSUPPORTED: dict[str, str] = {
    "medisana_78b2": (
        "Medisana scales on vendor service 0x78B2 (weight, body composition, times counted in "
        "seconds from 2010-01-01) are known but not implemented: no published byte layout to "
        "test against. Capture frames with a BLE sniffer and add a profile (docs/devices.md)."
    ),
}


def register_profile(profile: Profile) -> Callable[[], None]:
    """Add a profile; returns the function that removes it again (tests, plug-ins)."""
    if profile.name in PROFILES:
        raise ValueError(f"profile {profile.name!r} is already registered")
    PROFILES[profile.name] = profile

    def unregister() -> None:
        if PROFILES.get(profile.name) is profile:
            del PROFILES[profile.name]

    return unregister


def _guarded(name: str, characteristic: str, decoder: Decoder) -> Decoder:
    # A profile's decoder is outside the strict core: any exception other than DecodeError
    # is a bug in it, translated here so callers only ever see DecodeError.
    def run(data: Buffer) -> DecodedReading:
        try:
            return decoder(data)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(
                characteristic, None, f"profile {name} failed: {type(exc).__name__}: {exc}"
            ) from exc

    return run


def profile_decoder(name: str, characteristic: str) -> Decoder | None:
    """The override of profile ``name`` for ``characteristic``, or None to use the standard."""
    profile = PROFILES.get(name)
    if profile is None:
        if name in KNOWN_UNSUPPORTED:
            raise DecodeError(characteristic, None, f"profile {name}: {KNOWN_UNSUPPORTED[name]}")
        known = ", ".join(sorted(PROFILES)) or "none"
        raise DecodeError(characteristic, None, f"unknown device profile {name!r} (known: {known})")
    decoder = profile.decoders.get(characteristic)
    return None if decoder is None else _guarded(name, characteristic, decoder)


register_profile(
    Profile(
        "bp_flags56_bigendian",
        "BP monitor sending flags 0x56: pulse and status big-endian, user id without its flag",
        {"2A35": decode_bp_flags56_bigendian},
    )
)
