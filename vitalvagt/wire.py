"""MQTT wire format v1: topics and the versioned JSON payloads (docs/wire-format.md).

Topics carry the gateway id and never personal data:

    vv/v1/gw/{gateway_id}/obs      gateway -> hub   observation batches, QoS 1
    vv/v1/gw/{gateway_id}/status   gateway -> hub   retained; the last will says offline
    vv/v1/gw/{gateway_id}/cmd      hub -> gateway   commands (measure again, config changed)

``decode_batch`` is the one gate every message passes: it names the field and the reason of
the first thing wrong, with a machine-readable ``code`` that ingest stores in dead letters.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from vitalvagt.errors import VitalvagtError
from vitalvagt.kinds import KIND_SPECS
from vitalvagt.observation import GatewayId, Observation, stable_id_int

WIRE_VERSION = 1
TOPIC_ROOT = "vv/v1/gw"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_OBSERVATIONS = 1000
# Device clocks drift; a reading more than this ahead of the hub's clock is refused.
MAX_FUTURE = timedelta(minutes=10)

_TOPIC_RE = re.compile(r"^vv/v1/gw/([a-z0-9][a-z0-9-]{2,62})/(obs|status|cmd)$")


class Channel(StrEnum):
    OBS = "obs"
    STATUS = "status"
    CMD = "cmd"


def topic(gateway_id: str, channel: Channel | str) -> str:
    return f"{TOPIC_ROOT}/{gateway_id}/{Channel(channel).value}"


def obs_topic(gateway_id: str) -> str:
    return topic(gateway_id, Channel.OBS)


def status_topic(gateway_id: str) -> str:
    return topic(gateway_id, Channel.STATUS)


def cmd_topic(gateway_id: str) -> str:
    return topic(gateway_id, Channel.CMD)


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


class GatewayState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class GatewayStatus(BaseModel):
    """Retained payload on ``.../status``; the broker publishes the offline one as last will."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Vitalvagt gateway status v1")

    v: Literal[1] = 1
    gateway_id: GatewayId
    state: GatewayState
    at: AwareDatetime
    outbox_pending: int | None = Field(default=None, ge=0)
    software: str | None = None


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


def _translate(exc: ValidationError) -> WireError:
    err = exc.errors(include_url=False)[0]
    loc, typ = tuple(err["loc"]), err["type"]
    # Drop pydantic's tagged-union/function markers from the path; keep field names.
    field = _path(tuple(p for p in loc if not (isinstance(p, str) and "[" in p)))
    last = loc[-1] if loc else ""
    if typ == "missing":
        return WireError(WireErrorCode.MISSING_FIELD, field, "is required")
    if typ == "extra_forbidden":
        return WireError(WireErrorCode.UNKNOWN_FIELD, field, "is not a field of wire format v1")
    if typ == "enum" and last == "kind":
        known = ", ".join(k.value for k in KIND_SPECS)
        return WireError(
            WireErrorCode.UNKNOWN_KIND, field, f"{err.get('input')!r} is not one of {known}"
        )
    if typ == "enum" and "flags" in loc:
        return WireError(
            WireErrorCode.UNKNOWN_FLAG, field, f"{err.get('input')!r} is not a known quality flag"
        )
    return WireError(WireErrorCode.INVALID_FIELD, field, err["msg"])


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
    except ValidationError:
        batch = None
    if batch is None:
        batch = _diagnose(raw)
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
                    "contains a NUL character (\\u0000), which cannot be stored; remove it",
                )


def _diagnose(raw: bytes | str) -> ObservationBatch:
    """Slow path for a message that failed validation: find and name the first problem."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(WireErrorCode.NOT_JSON, "payload", f"is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise WireError(
            WireErrorCode.NOT_AN_OBJECT,
            "payload",
            f"must be a JSON object, not {type(doc).__name__}",
        )
    if "v" not in doc:
        raise WireError(WireErrorCode.MISSING_FIELD, "v", "is required (the wire format version)")
    if doc["v"] != WIRE_VERSION:
        raise WireError(
            WireErrorCode.UNSUPPORTED_VERSION,
            "v",
            f"version {doc['v']!r} is not supported; this hub speaks version {WIRE_VERSION}",
        )
    try:
        return ObservationBatch.model_validate(doc)
    except ValidationError as exc:
        raise _translate(exc) from exc


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
            f"{batch.gateway_id!r} does not match the topic's gateway {topic_gateway_id!r}",
        )
    limit = (now or datetime.now(UTC)) + max_future
    for i, obs in enumerate(batch.observations):
        where = f"observations[{i}]"
        s = KIND_SPECS[obs.kind]
        if obs.unit != s.unit:
            raise WireError(
                WireErrorCode.WRONG_UNIT,
                f"{where}.unit",
                f"{obs.unit!r} is not the unit of {obs.kind.value}; send {s.unit!r}",
            )
        if not s.plausible_min <= obs.value <= s.plausible_max:
            raise WireError(
                WireErrorCode.IMPLAUSIBLE_VALUE,
                f"{where}.value",
                f"{obs.value:g} {s.unit} is outside the plausible range "
                f"{s.plausible_min:g}-{s.plausible_max:g} for {obs.kind.value}",
            )
        if obs.measured_at > limit:
            raise WireError(
                WireErrorCode.FUTURE_TIME,
                f"{where}.measured_at",
                f"{obs.measured_at.isoformat()} is more than {max_future} ahead of the hub's clock",
            )
        if verify_ids:
            expected = stable_id_int(
                batch.gateway_id, obs.device.address, obs.kind, obs.measured_at
            )
            if obs.id.int != expected:
                raise WireError(
                    WireErrorCode.ID_MISMATCH,
                    f"{where}.id",
                    f"{obs.id} is not the stable id of this reading"
                    f" (expected {uuid.UUID(int=expected)})",
                )


def make_batch(
    gateway_id: str,
    observations: list[Observation] | tuple[Observation, ...],
    *,
    sent_at: datetime | None = None,
) -> ObservationBatch:
    return ObservationBatch(
        v=WIRE_VERSION,
        gateway_id=gateway_id,
        sent_at=sent_at or datetime.now(UTC),
        observations=tuple(observations),
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
    ):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://vitalvagt.dk/schema/{name}.json"
        out[name] = schema
    return out
