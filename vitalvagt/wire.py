"""MQTT wire format v1: topics and the versioned JSON payloads (docs/wire-format.md).

Topics carry the gateway id and never personal data:

    vv/v1/gw/{gateway_id}/obs      gateway -> hub   observation batches, QoS 1
    vv/v1/gw/{gateway_id}/status   gateway -> hub   retained; the last will says offline
    vv/v1/gw/{gateway_id}/cmd      hub -> gateway   commands (measure again, config changed)
    vv/v1/gw/{gateway_id}/receipt  hub -> gateway   receipts: which batches the hub committed

``decode_batch`` (``decode_status`` for status messages) is the one gate every message
passes: it names the field and the reason of the first thing wrong, with a machine-readable
``code`` that ingest stores in dead letters.
A reason is made of the hub's own words only (field names from the schema, rules, limits):
never the sender's text, which may hold a name or a CPR number typed into the wrong field,
a NUL that no database text can hold, or megabytes of garbage.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, NoReturn

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from vitalvagt.errors import VitalvagtError
from vitalvagt.kinds import KIND_SPECS
from vitalvagt.observation import (
    GatewayId,
    Observation,
    require_iso_text,
    stable_id_int,
    utc_in_range,
)

WIRE_VERSION = 1
TOPIC_ROOT = "vv/v1/gw"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_OBSERVATIONS = 1000
# Device clocks drift; a reading more than this ahead of the hub's clock is refused.
MAX_FUTURE = timedelta(minutes=10)
# A reading measured longer ago than this is refused (``too_old``): it is no basis for care
# any more, it would fall outside ingest's retention (at least this long) and be deleted
# without a trace, and most often it comes from a device whose clock was reset (1970, 2000).
MAX_AGE = timedelta(days=365)
BATCH_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
# Receipts name at most this many batches each (about 100 bytes each): a commit covering
# more of one gateway's batches sends several receipts.
MAX_RECEIPT_BATCHES = 1000
# Devices a status lists at most (a home has about five).
MAX_STATUS_DEVICES = 64

_TOPIC_RE = re.compile(r"^vv/v1/gw/([a-z0-9][a-z0-9-]{2,62})/(obs|status|cmd|receipt)$")
# The batch id of a message that failed validation, so that its receipt can still name it.
_BATCH_ID_RE = re.compile(rb'"batch_id"\s*:\s*"([A-Za-z0-9._:-]{1,64})"')


class Channel(StrEnum):
    OBS = "obs"
    STATUS = "status"
    CMD = "cmd"
    RECEIPT = "receipt"


def topic(gateway_id: str, channel: Channel | str) -> str:
    return f"{TOPIC_ROOT}/{gateway_id}/{Channel(channel).value}"


def obs_topic(gateway_id: str) -> str:
    return topic(gateway_id, Channel.OBS)


def status_topic(gateway_id: str) -> str:
    return topic(gateway_id, Channel.STATUS)


def cmd_topic(gateway_id: str) -> str:
    return topic(gateway_id, Channel.CMD)


def receipt_topic(gateway_id: str) -> str:
    return topic(gateway_id, Channel.RECEIPT)


class WireErrorCode(StrEnum):
    OVERSIZE = "oversize"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_FLAG = "unknown_flag"
    INVALID_FIELD = "invalid_field"
    WRONG_UNIT = "wrong_unit"
    IMPLAUSIBLE_VALUE = "implausible_value"
    FUTURE_TIME = "future_time"
    TOO_OLD = "too_old"
    ID_MISMATCH = "id_mismatch"
    GATEWAY_MISMATCH = "gateway_mismatch"
    BAD_TOPIC = "bad_topic"


class WireError(VitalvagtError):
    """A payload or topic that does not follow the wire format."""

    def __init__(self, code: WireErrorCode, field: str, reason: str) -> None:
        self.code = code
        self.field = field
        self.reason = reason
        super().__init__(f"{code.value}: {field}: {reason}")


class ObservationBatch(BaseModel):
    """Payload on ``vv/v1/gw/{gateway_id}/obs``: one or many observations of one gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Vitalvagt observation batch v1")

    v: Literal[1] = Field(description="Wire format version")
    gateway_id: GatewayId
    sent_at: AwareDatetime = Field(description="When the gateway sent this message")
    observations: tuple[Observation, ...] = Field(min_length=1, max_length=MAX_OBSERVATIONS)
    batch_id: str | None = Field(
        default=None,
        pattern=BATCH_ID_PATTERN,
        description="Optional: the gateway's name for this message. When present, the hub "
        "answers on .../receipt once the batch is committed (or kept as a dead letter), so "
        "the gateway deletes readings only when the hub has them (docs/wire-format.md).",
    )

    _iso_text = field_validator("sent_at", mode="before")(require_iso_text)
    _sent_utc = field_validator("sent_at")(utc_in_range)

    @field_validator("v", mode="before")
    @classmethod
    def _version_is_an_integer(cls, v: object) -> object:
        if type(v) is not int:  # Literal[1] alone lets true and 1.0 through
            raise PydanticCustomError("version_type", "must be the integer 1")
        return v


class ReceiptOutcome(StrEnum):
    STORED = "stored"  # committed to the database (readings counts new and already stored)
    DEAD_LETTER = "dead_letter"  # refused, kept with its reason; sending it again won't help


class ReceiptItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str = Field(pattern=BATCH_ID_PATTERN)
    outcome: ReceiptOutcome
    readings: int = Field(default=0, ge=0, description="Readings stored (new or already held)")
    code: str | None = Field(default=None, description="For dead_letter: the dead-letter code")


class Receipt(BaseModel):
    """Payload on ``.../receipt`` from the hub to one gateway, after the commit."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Vitalvagt receipt v1")

    v: Literal[1] = 1
    gateway_id: GatewayId
    at: AwareDatetime = Field(description="When the hub committed these batches")
    batches: tuple[ReceiptItem, ...] = Field(min_length=1, max_length=MAX_RECEIPT_BATCHES)


def batch_id_of(raw: bytes) -> str | None:
    """The ``batch_id`` of a message, found without parsing it (for a refused message)."""
    m = _BATCH_ID_RE.search(raw)
    return m.group(1).decode() if m else None


class GatewayState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class StatusDevice(BaseModel):
    """One paired device in a gateway status: its address and its last battery level."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        # The level and its time come together (checked by _with_its_level below).
        json_schema_extra={
            "dependentRequired": {"battery_level": ["battery_at"], "battery_at": ["battery_level"]}
        },
    )

    address: str = Field(
        min_length=1, max_length=64, description="Bluetooth address or vendor device id"
    )
    model: str | None = Field(default=None, max_length=128)
    # Strict: an integer percent (Battery Level 0x2A19), never "50", 50.5 or true.
    battery_level: int | None = Field(
        default=None,
        ge=0,
        le=100,
        strict=True,
        description="Percent, 0-100, as the device last reported it; absent when the device "
        "has no Battery Service or has not reported a valid level",
    )
    battery_at: AwareDatetime | None = Field(
        default=None,
        validate_default=True,
        description="When the gateway received that level; required with battery_level",
    )

    @field_validator("battery_at", mode="before")
    @classmethod
    def _iso_text(cls, v: object) -> object:
        return None if v is None else require_iso_text(v)

    @field_validator("battery_at")
    @classmethod
    def _with_its_level(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        # (A battery_level that failed is not in info.data: its own error comes first.)
        level = info.data.get("battery_level")
        if v is None and level is not None:
            raise PydanticCustomError("missing", "is required with battery_level")
        if v is not None and level is None and "battery_level" in info.data:
            raise PydanticCustomError("battery_at_alone", "is given without battery_level")
        return None if v is None else utc_in_range(v)


class GatewayStatus(BaseModel):
    """Retained payload on ``.../status``; the broker publishes the offline one as last will."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Vitalvagt gateway status v1")

    v: Literal[1] = 1
    gateway_id: GatewayId
    state: GatewayState
    at: AwareDatetime
    outbox_pending: int | None = Field(default=None, ge=0)
    # Readings the outbox lost: dropped oldest-first when full, or damaged on its storage
    # (docs/gateway.md). Totals since the outbox was created.
    outbox_dropped: int | None = Field(default=None, ge=0)
    outbox_damaged: int | None = Field(default=None, ge=0)
    software: str | None = None
    # Optional (added to v1 without a new version: a payload without it is as before). The
    # gateway's paired devices with their last battery levels, in online statuses.
    devices: tuple[StatusDevice, ...] | None = Field(
        default=None,
        max_length=MAX_STATUS_DEVICES,
        description="Optional: the paired devices and their last battery levels",
    )


class CommandName(StrEnum):
    MEASURE_AGAIN = "measure_again"  # show the patient a request to measure again
    CONFIG_CHANGED = "config_changed"  # fetch configuration (devices, schedule) again


class Command(BaseModel):
    """Payload on ``.../cmd`` from the hub to one gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Vitalvagt gateway command v1")

    v: Literal[1] = 1
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    command: CommandName
    issued_at: AwareDatetime
    kind: str | None = Field(default=None, description="For measure_again: which measurement")
    message: str | None = Field(default=None, max_length=500, description="Text for the patient")


def parse_topic(value: str) -> tuple[str, Channel]:
    """Split a topic into (gateway id, channel); a topic outside the format raises WireError."""
    m = _TOPIC_RE.match(value)
    if not m:
        raise WireError(
            WireErrorCode.BAD_TOPIC, "topic", f"{value!r} is not vv/v1/gw/<gateway_id>/<channel>"
        )
    return m.group(1), Channel(m.group(2))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "payload"


# Pydantic's messages may quote the input ("invalid character: found `x`"): a reason uses
# these phrases instead, keyed by pydantic's error type.
_PHRASES = {
    "missing": "is required",
    "string_type": "must be a string",
    "string_too_long": "is longer than {max_length} characters",
    "string_too_short": "is shorter than {min_length} characters",
    "string_pattern_mismatch": "does not match its pattern (see the JSON Schema)",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be an integer",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "battery_at_alone": "is given without battery_level",
    "literal_error": "must be 1",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "is not a UUID",
    "datetime_type": "must be an ISO 8601 date-time text with a time zone",
    "datetime_parsing": "is not an ISO 8601 date-time",
    "datetime_from_date_parsing": "is not an ISO 8601 date-time",
    "timezone_aware": "needs a time zone (UTC preferred)",
    "tuple_type": "must be an array",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "enum": "is not one of the allowed values (see the JSON Schema)",
    "date_out_of_range": "is outside the range of dates",
}


_TOO_DEEP = "is nested too deeply (wire format v1 needs 4 levels of arrays and objects)"


def _translate(exc: ValidationError) -> WireError:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc, typ = tuple(err["loc"]), err["type"]
    if typ == "extra_forbidden":
        # The last part of the path is the sender's key: not repeated (it may be anything).
        field = _path(loc[:-1]) if len(loc) > 1 else "payload"
        return WireError(
            WireErrorCode.UNKNOWN_FIELD, field, "has a field that is not part of wire format v1"
        )
    # Drop pydantic's tagged-union/function markers from the path; keep field names.
    field = _path(tuple(p for p in loc if not (isinstance(p, str) and "[" in p)))
    last = loc[-1] if loc else ""
    if typ == "missing":
        return WireError(WireErrorCode.MISSING_FIELD, field, "is required")
    if typ == "json_invalid":
        # Python's json read it, the hub's parser did not: its own limits, in its own words
        # (jiter's messages are fixed texts with a position).
        detail = str((err.get("ctx") or {}).get("error", ""))
        if "recursion limit" in detail:
            return WireError(WireErrorCode.INVALID_FIELD, "payload", _TOO_DEEP)
        return WireError(WireErrorCode.NOT_JSON, "payload", f"is not valid JSON: {detail}")
    if typ == "enum" and last == "kind":
        known = ", ".join(k.value for k in KIND_SPECS)
        return WireError(WireErrorCode.UNKNOWN_KIND, field, f"is not one of {known}")
    if typ == "enum" and "flags" in loc:
        return WireError(WireErrorCode.UNKNOWN_FLAG, field, "is not a known quality flag")
    # The context holds only the schema's own limits (min_length, max_length): safe to show.
    limits = {k: v for k, v in (err.get("ctx") or {}).items() if isinstance(v, int)}
    try:
        phrase = _PHRASES[typ].format(**limits)
    except (KeyError, IndexError):
        phrase = f"is invalid ({typ})"
    return WireError(WireErrorCode.INVALID_FIELD, field, phrase)


def decode_batch(
    raw: bytes | str,
    *,
    topic_gateway_id: str | None = None,
    now: datetime | None = None,
    max_future: timedelta = MAX_FUTURE,
    verify_ids: bool = True,
) -> ObservationBatch:
    """Decode and validate one observation message. Raises WireError naming field and reason."""
    size = len(raw)
    if size > MAX_PAYLOAD_BYTES:
        raise WireError(
            WireErrorCode.OVERSIZE, "payload", f"{size} bytes is over the {MAX_PAYLOAD_BYTES} limit"
        )
    try:
        # Fast path: a valid message is parsed and validated in one go by pydantic-core.
        batch = ObservationBatch.model_validate_json(raw)
    except ValidationError as exc:
        _diagnose(raw, exc)
    if (b"\\u0000" if isinstance(raw, bytes) else "\\u0000") in raw:
        _refuse_nul(batch)  # valid JSON, but no database text can hold it
    check_batch(
        batch,
        topic_gateway_id=topic_gateway_id,
        now=now,
        max_future=max_future,
        verify_ids=verify_ids,
    )
    return batch


def decode_status(raw: bytes | str, *, topic_gateway_id: str | None = None) -> GatewayStatus:
    """Decode and validate one gateway status message (``.../status``, also a last will), with
    the same gate and errors as ``decode_batch``. Raises WireError naming field and reason."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise WireError(WireErrorCode.OVERSIZE, "payload",
                        f"{len(raw)} bytes is over the {MAX_PAYLOAD_BYTES} limit")  # fmt: skip
    try:
        status = GatewayStatus.model_validate_json(raw)
    except ValidationError as exc:
        _diagnose(raw, exc)
    if topic_gateway_id is not None and status.gateway_id != topic_gateway_id:
        raise WireError(WireErrorCode.GATEWAY_MISMATCH, "gateway_id",
                        f"does not match the topic's gateway {topic_gateway_id!r}")  # fmt: skip
    texts, addresses = [("software", status.software)], set()
    for i, d in enumerate(status.devices or ()):
        texts += [(f"devices[{i}].address", d.address), (f"devices[{i}].model", d.model)]
        if d.address.upper() in addresses:
            raise WireError(WireErrorCode.INVALID_FIELD, f"devices[{i}].address",
                            "names a device listed before it (compared in upper case)")  # fmt: skip
        addresses.add(d.address.upper())
    for name, value in texts:
        if value is not None and "\x00" in value:
            raise WireError(
                WireErrorCode.INVALID_FIELD,
                name,
                "contains a NUL character, which no database text can hold",
            )
    return status


def _refuse_nul(batch: ObservationBatch) -> None:
    """Name the text field that holds a NUL character (``\\u0000``), if one does."""
    for i, obs in enumerate(batch.observations):
        for name, value in (
            ("unit", obs.unit),
            ("device.address", obs.device.address),
            ("device.model", obs.device.model),
            ("device.serial", obs.device.serial),
        ):
            if value is not None and "\x00" in value:
                raise WireError(
                    WireErrorCode.INVALID_FIELD,
                    f"observations[{i}].{name}",
                    "contains a NUL character, which no database text can hold; remove it",
                )


def _diagnose(raw: bytes | str, exc: ValidationError) -> NoReturn:
    """Slow path for a message that failed validation: name the first problem."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as err:
        raise WireError(
            WireErrorCode.NOT_JSON, "payload", f"is not JSON: {err.msg} (byte {err.pos})"
        ) from None
    except UnicodeDecodeError as err:
        raise WireError(
            WireErrorCode.NOT_JSON, "payload", f"is not JSON: not UTF-8 at byte {err.start}"
        ) from None
    except RecursionError:
        raise WireError(
            WireErrorCode.INVALID_FIELD,
            "payload",
            _TOO_DEEP,
        ) from None
    except ValueError:  # e.g. an integer of more than 4,300 digits
        raise WireError(
            WireErrorCode.NOT_JSON, "payload", "has a number too long to read"
        ) from None
    if not isinstance(doc, dict):
        raise WireError(
            WireErrorCode.NOT_AN_OBJECT,
            "payload",
            f"must be a JSON object, not {type(doc).__name__}",
        )
    if "v" not in doc:
        raise WireError(WireErrorCode.MISSING_FIELD, "v", "is required (the wire format version)")
    if type(doc["v"]) is not int or doc["v"] != WIRE_VERSION:
        shown = f"version {doc['v']}" if type(doc["v"]) is int and abs(doc["v"]) < 10**6 else "it"
        raise WireError(
            WireErrorCode.UNSUPPORTED_VERSION,
            "v",
            f"{shown} is not supported; this hub speaks version {WIRE_VERSION}",
        )
    # The JSON-mode error (strict types as on the fast path), in the hub's own words.
    raise _translate(exc) from None


def check_batch(
    batch: ObservationBatch,
    *,
    topic_gateway_id: str | None = None,
    now: datetime | None = None,
    max_future: timedelta = MAX_FUTURE,
    verify_ids: bool = True,
) -> None:
    """The checks that span fields: unit, plausible range, time, stable id, topic."""
    if topic_gateway_id is not None and batch.gateway_id != topic_gateway_id:
        raise WireError(
            WireErrorCode.GATEWAY_MISMATCH,
            "gateway_id",
            f"does not match the topic's gateway {topic_gateway_id!r}",
        )
    now = now or datetime.now(UTC)
    limit, oldest = now + max_future, now - MAX_AGE
    for i, obs in enumerate(batch.observations):
        where = f"observations[{i}]"
        s = KIND_SPECS[obs.kind]
        if obs.unit != s.unit:
            raise WireError(
                WireErrorCode.WRONG_UNIT,
                f"{where}.unit",
                f"is not the unit of {obs.kind.value}; send {s.unit!r}",
            )
        if not s.plausible_min <= obs.value <= s.plausible_max:
            raise WireError(
                WireErrorCode.IMPLAUSIBLE_VALUE,
                f"{where}.value",
                f"{obs.value:g} {s.unit} is outside the plausible range "
                f"{s.plausible_min:g}-{s.plausible_max:g} for {obs.kind.value}",
            )
        for name, at in (("measured_at", obs.measured_at), ("received_at", obs.received_at)):
            if at > limit:
                raise WireError(
                    WireErrorCode.FUTURE_TIME,
                    f"{where}.{name}",
                    f"{at.isoformat()} is more than {max_future} ahead of the hub's clock",
                )
            if at < oldest:
                raise WireError(
                    WireErrorCode.TOO_OLD,
                    f"{where}.{name}",
                    f"{at.isoformat()} is more than {MAX_AGE.days} days before the hub's"
                    " clock (a clock that was reset?); set the device's and the tablet's clock",
                )
        if verify_ids:
            expected = stable_id_int(
                batch.gateway_id, obs.device.address, obs.kind, obs.measured_at
            )
            if obs.id.int != expected:
                raise WireError(
                    WireErrorCode.ID_MISMATCH,
                    f"{where}.id",
                    f"is not the stable id of this reading (expected {uuid.UUID(int=expected)})",
                )


def make_batch(
    gateway_id: str,
    observations: list[Observation] | tuple[Observation, ...],
    *,
    sent_at: datetime | None = None,
    batch_id: str | None = None,
) -> ObservationBatch:
    return ObservationBatch(
        v=WIRE_VERSION,
        gateway_id=gateway_id,
        sent_at=sent_at or datetime.now(UTC),
        observations=tuple(observations),
        batch_id=batch_id,
    )


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """The published JSON Schemas, one per payload (docs/schema/*.json are generated from this)."""
    out = {}
    for name, model in (
        ("observation-batch.v1", ObservationBatch),
        ("gateway-status.v1", GatewayStatus),
        ("gateway-command.v1", Command),
        ("receipt.v1", Receipt),
    ):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://vitalvagt.dk/schema/{name}.json"
        out[name] = schema
    return out
