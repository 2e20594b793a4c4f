"""The observation: one measured value, as every component sees it.

A blood-pressure reading becomes three or four observations (systolic, diastolic, mean,
pulse) that share one ``reading_id``. The ``id`` is derived from (gateway, device, kind,
measured-at) so that a reading sent twice is stored once (docs/wire-format.md gives the
recipe for third-party gateways).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from vitalvagt.kinds import Kind
from vitalvagt.quality import Flag

# Fixed namespace for stable ids; changing it would break de-duplication across versions.
OBSERVATION_NAMESPACE = uuid.UUID("6f1c2a52-3d0e-5b8e-9a57-7c1d0f6b2e41")

GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,62}$"
GatewayId = Annotated[
    str,
    Field(
        pattern=GATEWAY_ID_PATTERN,
        description="Gateway id: 3-63 lower-case letters, digits and '-'; also its MQTT user.",
    ),
]


class TimeSource(StrEnum):
    DEVICE = "device"  # the device's own clock (converted to UTC by the gateway)
    GATEWAY = "gateway"  # the device sent no usable time; the gateway's receive time


class BodySite(StrEnum):
    """Where a temperature was taken (Temperature Type, 0x2A1D); TOBS corrects for it."""

    ARMPIT = "armpit"
    BODY = "body"
    EAR = "ear"
    FINGER = "finger"
    GI_TRACT = "gi_tract"
    MOUTH = "mouth"
    RECTUM = "rectum"
    TOE = "toe"
    TYMPANUM = "tympanum"


class DeviceRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field(
        min_length=1, max_length=64, description="Bluetooth address or vendor device id"
    )
    model: str | None = Field(default=None, max_length=128)
    serial: str | None = Field(default=None, max_length=128)


_ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def require_iso_text(v: object) -> object:
    """A time on the wire is ISO 8601 text; pydantic alone would also read "1764000000" (or
    "0101901234", a CPR number) as seconds since 1970."""
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise PydanticCustomError("datetime_type", "must be an ISO 8601 date-time text")
    if not _ISO_DATE_TIME.match(v):
        raise PydanticCustomError("datetime_parsing", "is not an ISO 8601 date-time")
    return v


def utc_in_range(v: datetime) -> datetime:
    """A time in UTC, as a validation error where it has none (0001-01-01T00:00+01:00)."""
    try:
        return v.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("date_out_of_range", "is outside the range of dates") from None


def to_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("time has no time zone")
    return moment.astimezone(UTC)


_NS_BYTES = OBSERVATION_NAMESPACE.bytes


def stable_id_int(
    gateway_id: str, device_address: str, kind: Kind | str, measured_at: datetime
) -> int:
    """The stable id (RFC 4122 UUIDv5) as ``UUID.int``, computed without uuid's overhead
    because ingest verifies every reading's id on its hot path: compare with ``obs.id.int``."""
    d = measured_at if measured_at.tzinfo is UTC else to_utc(measured_at)
    # isoformat of a UTC time ends in "+00:00"; the recipe wants "Z" and always microseconds.
    text = (
        f"{gateway_id}|{device_address.upper()}|{Kind(kind).value}|"
        f"{d.isoformat(timespec='microseconds')[:-6]}Z"
    )
    return _uuid5_int(_NS_BYTES, text)


_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_5 = (0x5000 << 64) | (0x8000 << 48)  # version 5, RFC 4122 variant


def _uuid5_int(namespace: bytes, name: str) -> int:
    digest = hashlib.sha1(namespace + name.encode()).digest()
    return (int.from_bytes(digest[:16], "big") & _VERSION_MASK) | _VERSION_5


def uuid5_bytes(namespace: bytes, name: str) -> bytes:
    """``uuid.uuid5(namespace, name).bytes`` without building UUID objects (3x faster)."""
    return _uuid5_int(namespace, name).to_bytes(16, "big")


def stable_id(
    gateway_id: str, device_address: str, kind: Kind | str, measured_at: datetime
) -> uuid.UUID:
    """The observation id: UUIDv5 of ``gateway|DEVICE|kind|YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return uuid.UUID(int=stable_id_int(gateway_id, device_address, kind, measured_at))


class Observation(BaseModel):
    """One measured value. Unit and plausible range are checked by the wire codec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID = Field(description="Stable id: UUIDv5, see docs/wire-format.md")
    kind: Kind
    # Strict: a number, never a string such as "95" (a gateway that sends text has a bug
    # that may also have mangled the value).
    value: float = Field(allow_inf_nan=False, strict=True)
    unit: str = Field(max_length=16, description="Canonical UCUM unit of the kind")
    # ISO 8601 text with a zone only (``require_iso_text``): a bare number is ambiguous.
    measured_at: AwareDatetime = Field(description="When it was measured (UTC)")
    received_at: AwareDatetime = Field(description="When the gateway received it (UTC)")
    time_source: TimeSource = TimeSource.DEVICE
    device: DeviceRef
    flags: tuple[Flag, ...] = Field(default=(), max_length=len(Flag))
    reading_id: uuid.UUID | None = Field(
        default=None, description="Shared by the parts of one reading (e.g. a blood pressure)"
    )
    body_site: BodySite | None = None

    _iso_text = field_validator("measured_at", "received_at", mode="before")(require_iso_text)
    _utc = field_validator("measured_at", "received_at")(utc_in_range)

    @classmethod
    def create(
        cls,
        *,
        gateway_id: str,
        kind: Kind,
        value: float,
        unit: str,
        measured_at: datetime,
        received_at: datetime,
        device: DeviceRef,
        flags: tuple[Flag, ...] = (),
        time_source: TimeSource = TimeSource.DEVICE,
        reading_id: uuid.UUID | None = None,
        body_site: BodySite | None = None,
    ) -> Observation:
        """Build an observation with its stable id computed (the gateway's way in)."""
        return cls(
            id=stable_id(gateway_id, device.address, kind, measured_at),
            kind=kind,
            value=value,
            unit=unit,
            measured_at=measured_at,
            received_at=received_at,
            time_source=time_source,
            device=device,
            flags=tuple(sorted(set(flags))),
            reading_id=reading_id,
            body_site=body_site,
        )
