"""The one way a characteristic's bytes become a reading: the device's profile, if it has one
that overrides this characteristic (gateway/profiles.py), else the standard decoder
(gateway/decoders.py).

Its own module because profiles build on the standard decoders: with the choice inside
decoders.py, the two modules imported each other.
"""

from __future__ import annotations

from gateway.decoded import DecodedReading
from gateway.decoders import DECODERS, normalize_uuid
from gateway.errors import DecodeError
from gateway.profiles import profile_decoder
from gateway.sig import CHARACTERISTIC_NAMES, Buffer


def decode(uuid: str | int, data: Buffer, profile: str | None = None) -> DecodedReading:
    """Decode one payload of the characteristic ``uuid``, with a device profile's override
    for that characteristic when ``profile`` names one (gateway/profiles.py)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    key = normalize_uuid(uuid)
    if profile is not None:
        override = profile_decoder(profile, key)
        if override is not None:
            return override(data)
    decoder = DECODERS.get(key)
    if decoder is None:
        supported = ", ".join(f"{k} {v}" for k, v in CHARACTERISTIC_NAMES.items())
        raise DecodeError(key, None, f"unsupported characteristic; supported: {supported}")
    return decoder(data)
