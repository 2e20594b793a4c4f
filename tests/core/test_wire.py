"""The wire codec: round trips, and one clear error per kind of malformed payload."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.observation import DeviceRef, Observation, stable_id
from vitalvagt.quality import Flag
from vitalvagt.wire import (
    MAX_PAYLOAD_BYTES,
    Channel,
    WireError,
    WireErrorCode,
    cmd_topic,
    decode_batch,
    encode,
    json_schemas,
    make_batch,
    obs_topic,
    parse_topic,
    status_topic,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GW = "gw-0001"


def obs(
    kind: Kind = Kind.SPO2, value: float = 95, at: datetime | None = None, **kw: Any
) -> Observation:
    at = at or NOW - timedelta(minutes=5)
    return Observation.create(
        gateway_id=GW,
        kind=kind,
        value=value,
        unit=KIND_SPECS[kind].unit,
        measured_at=at,
        received_at=at + timedelta(seconds=2),
        device=DeviceRef(address="C0:FF:EE:00:00:01", model="PO-60", serial="123"),
        **kw,
    )


def payload(**changes: Any) -> dict[str, Any]:
    doc = json.loads(encode(make_batch(GW, [obs(), obs(Kind.PULSE, 72)], sent_at=NOW)))
    doc.update(changes)
    return doc


def first_obs(**changes: Any) -> dict[str, Any]:
    doc = payload()
    doc["observations"][0].update(changes)
    return doc


def error(raw: bytes | str | dict[str, Any]) -> WireError:
    if isinstance(raw, dict):
        raw = json.dumps(raw)
    with pytest.raises(WireError) as info:
        decode_batch(raw, topic_gateway_id=GW, now=NOW)
    return info.value


def test_topics_round_trip_and_carry_only_the_gateway_id() -> None:
    assert obs_topic(GW) == "vv/v1/gw/gw-0001/obs"
    assert status_topic(GW) == "vv/v1/gw/gw-0001/status"
    assert cmd_topic(GW) == "vv/v1/gw/gw-0001/cmd"
    assert parse_topic(obs_topic(GW)) == (GW, Channel.OBS)
    for bad in ("vv/v1/gw/+/obs", "vv/v1/gw/GW/obs", "vv/v1/gw/gw-1/other", "vv/v2/gw/gw-0001/obs"):
        with pytest.raises(WireError) as info:
            parse_topic(bad)
        assert info.value.code is WireErrorCode.BAD_TOPIC


def test_round_trip_keeps_every_field() -> None:
    reading = uuid.uuid4()
    batch = make_batch(
        GW,
        [
            obs(Kind.BP_SYSTOLIC, 138, reading_id=reading, flags=(Flag.IRREGULAR_PULSE,)),
            obs(Kind.BP_DIASTOLIC, 88, reading_id=reading),
            obs(Kind.TEMPERATURE, 37.6, at=NOW - timedelta(hours=1)),
        ],
        sent_at=NOW,
    )
    decoded = decode_batch(encode(batch), topic_gateway_id=GW, now=NOW)
    assert decoded == batch
    assert decoded.observations[0].flags == (Flag.IRREGULAR_PULSE,)
    assert decoded.observations[0].reading_id == decoded.observations[1].reading_id == reading


@given(
    kind=st.sampled_from(list(Kind)),
    frac=st.floats(0, 1),
    seconds=st.integers(0, 364 * 86400),
    micros=st.integers(0, 999_999),
)
def test_round_trip_any_plausible_observation(
    kind: Kind, frac: float, seconds: int, micros: int
) -> None:
    s = KIND_SPECS[kind]
    value = s.plausible_min + frac * (s.plausible_max - s.plausible_min)
    at = NOW - timedelta(seconds=seconds, microseconds=micros)
    batch = make_batch(GW, [obs(kind, value, at=at)], sent_at=NOW)
    assert decode_batch(encode(batch), topic_gateway_id=GW, now=NOW) == batch


def test_stable_id_depends_on_gateway_device_kind_and_time_only() -> None:
    at = NOW - timedelta(minutes=1)
    a = stable_id(GW, "c0:ff:ee:00:00:01", Kind.SPO2, at)
    assert a == stable_id(GW, "C0:FF:EE:00:00:01", "spo2", at.astimezone(UTC))
    assert a != stable_id("gw-0002", "C0:FF:EE:00:00:01", Kind.SPO2, at)
    assert a != stable_id(GW, "C0:FF:EE:00:00:01", Kind.PULSE, at)
    assert a != stable_id(GW, "C0:FF:EE:00:00:01", Kind.SPO2, at + timedelta(microseconds=1))


@pytest.mark.parametrize(
    ("raw", "code", "field", "words"),
    [
        (b"\xff\xfe not json", WireErrorCode.NOT_JSON, "payload", "not JSON"),
        ('{"v": 1,', WireErrorCode.NOT_JSON, "payload", "not JSON"),
        ("[1, 2]", WireErrorCode.NOT_AN_OBJECT, "payload", "JSON object"),
        (payload(v=2), WireErrorCode.UNSUPPORTED_VERSION, "v", "version 2"),
        ({"gateway_id": GW}, WireErrorCode.MISSING_FIELD, "v", "required"),
        (first_obs(kind="glucose"), WireErrorCode.UNKNOWN_KIND, "observations[0].kind", "spo2"),
        (payload(sent_at=None), WireErrorCode.INVALID_FIELD, "sent_at", ""),
        (first_obs(unit="mmHg"), WireErrorCode.WRONG_UNIT, "observations[0].unit", "'%'"),
        (first_obs(value=130), WireErrorCode.IMPLAUSIBLE_VALUE, "observations[0].value", "50-100"),
        (
            first_obs(flags=["sparkles"]),
            WireErrorCode.UNKNOWN_FLAG,
            "observations[0].flags[0]",
            "quality flag",
        ),
        (
            first_obs(colour="red"),
            WireErrorCode.UNKNOWN_FIELD,
            "observations[0]",
            "not part of wire format v1",
        ),
        (
            first_obs(id=str(uuid.uuid4())),
            WireErrorCode.ID_MISMATCH,
            "observations[0].id",
            "stable id",
        ),
        (payload(gateway_id="gw-9999"), WireErrorCode.GATEWAY_MISMATCH, "gateway_id", "topic"),
        (payload(observations=[]), WireErrorCode.INVALID_FIELD, "observations", "at least 1"),
        (
            first_obs(measured_at="2026-11-22T08:00:00"),
            WireErrorCode.INVALID_FIELD,
            "observations[0].measured_at",
            "time zone",
        ),
    ],
)
def test_each_malformed_payload_gets_its_own_clear_error(
    raw: bytes | str | dict[str, Any], code: WireErrorCode, field: str, words: str
) -> None:
    err = error(raw)
    assert err.code is code, err
    assert err.field == field, err
    assert words in err.reason, err
    assert str(err).startswith(f"{code.value}: {field}: ")


def test_missing_field_inside_an_observation_names_it() -> None:
    doc = payload()
    del doc["observations"][1]["measured_at"]
    err = error(doc)
    assert (err.code, err.field) == (WireErrorCode.MISSING_FIELD, "observations[1].measured_at")


def test_time_far_in_the_future_is_refused_but_small_clock_drift_is_not() -> None:
    ok = make_batch(GW, [obs(at=NOW + timedelta(minutes=5))], sent_at=NOW)
    decode_batch(encode(ok), topic_gateway_id=GW, now=NOW)
    bad = make_batch(GW, [obs(at=NOW + timedelta(days=2))], sent_at=NOW)
    err = error(encode(bad))
    assert (err.code, err.field) == (WireErrorCode.FUTURE_TIME, "observations[0].measured_at")


def test_oversize_payload_is_refused_before_parsing() -> None:
    raw = b" " * (MAX_PAYLOAD_BYTES + 1)
    err = error(raw)
    assert err.code is WireErrorCode.OVERSIZE and str(MAX_PAYLOAD_BYTES) in err.reason


def test_special_float_values_are_not_json_numbers() -> None:
    err = error(json.dumps(first_obs(value=float("nan"))))
    assert err.code is WireErrorCode.INVALID_FIELD and err.field == "observations[0].value"


def test_published_json_schema_matches_the_model(tmp_path: Any) -> None:
    schemas = json_schemas()
    batch = schemas["observation-batch.v1"]
    assert batch["required"] == ["v", "gateway_id", "sent_at", "observations"]
    obs_schema = batch["$defs"]["Observation"]
    assert set(obs_schema["required"]) >= {"id", "kind", "value", "unit", "measured_at", "device"}
    assert set(batch["$defs"]["Kind"]["enum"]) == {k.value for k in Kind}
    # The committed copy in docs/ is the generated one (regenerate with `make schema`).
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "schema"
    for name, schema in schemas.items():
        committed = json.loads((docs / f"{name}.schema.json").read_text())
        assert committed == schema, f"docs/schema/{name}.schema.json is stale: run `make schema`"


def test_a_third_party_validator_accepts_our_payload_and_rejects_a_bad_one() -> None:
    import jsonschema

    schema = json_schemas()["observation-batch.v1"]
    jsonschema.validate(payload(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(first_obs(kind="glucose"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload(gateway_id="GW 1/+"), schema)


def test_the_documented_example_is_valid_and_its_stable_id_is_right() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "wire-format.md").read_text()
    example = json.loads(re.search(r"```json\n(.*?)```", doc, re.S).group(1))  # type: ignore[union-attr]
    batch = decode_batch(json.dumps(example), topic_gateway_id="gw-0001", now=NOW)
    assert batch.observations[0].kind is Kind.BP_SYSTOLIC
    at = datetime(2026, 11, 22, 7, 1, 55, tzinfo=UTC)
    assert str(stable_id("gw-0001", "C0:FF:EE:00:00:01", Kind.SPO2, at)) in doc


@given(
    gw=st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True),
    addr=st.text("0123456789abcdefABCDEF:", min_size=1, max_size=17),
    kind=st.sampled_from(list(Kind)),
    seconds=st.integers(0, 2**31),
    micros=st.integers(0, 999_999),
)
def test_fast_stable_id_is_the_documented_uuid5(
    gw: str, addr: str, kind: Kind, seconds: int, micros: int
) -> None:
    from vitalvagt.observation import OBSERVATION_NAMESPACE

    at = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)
    text = f"{gw}|{addr.upper()}|{kind.value}|{at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    assert stable_id(gw, addr, kind, at) == uuid.uuid5(OBSERVATION_NAMESPACE, text)


@pytest.mark.parametrize("field", ["model", "serial", "address"])
def test_a_nul_character_in_text_is_refused_by_name(field: str) -> None:
    # Valid JSON, but no PostgreSQL text can hold it: it must be a dead letter, not a batch
    # the database refuses (which once stopped ingest).
    device = {"address": "C0:FF:EE:00:00:01", "model": "PO-60", "serial": "123"}
    device[field] = device[field][:2] + "\x00" + device[field][2:]
    err = error(first_obs(device=device))
    assert (err.code, err.field) == (WireErrorCode.INVALID_FIELD, f"observations[0].device.{field}")
    assert "NUL" in err.reason


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    doc = first_obs(device={"address": "C0:FF:EE:00:00:01", "model": "PO\\u000060"})
    assert "\\\\u0000" in json.dumps(doc)
    batch = decode_batch(json.dumps(doc), topic_gateway_id=GW, now=NOW)
    assert batch.observations[0].device.model == "PO\\u000060"
