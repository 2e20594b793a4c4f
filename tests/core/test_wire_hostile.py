"""The wire codec against hostile input: every refusal is a named WireError whose reason is
the hub's own words, never the sender's text (issue 9, defects 1, 5, 9, 11, 12)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.core.test_wire import GW, NOW, error, first_obs, obs, payload
from vitalvagt.quality import Flag
from vitalvagt.wire import (
    MAX_AGE,
    WireError,
    WireErrorCode,
    batch_id_of,
    decode_batch,
    encode,
    make_batch,
)

CPR = "010190-1234"
NAME = "Jens Peter Hansen"


refuse = error  # decode, and return the WireError it must raise


def _fields(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a scalar or container in a JSON document."""
    out = [path] if path else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _fields(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _fields(v, (*path, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


SECRETS = [CPR, NAME, f"{NAME} {CPR}", "0101901234"]


@pytest.mark.parametrize("planted", SECRETS)
@pytest.mark.parametrize("path", _fields(payload()))
def test_no_reason_repeats_personal_data_planted_in_any_field(path: tuple, planted: str) -> None:
    doc = payload()
    _set(doc, path, planted)
    try:
        decode_batch(json.dumps(doc), topic_gateway_id=GW, now=NOW)
    except WireError as err:
        assert planted not in str(err) and "1234" not in str(err), (path, str(err))
    else:  # only free-text device fields may legitimately hold any text
        assert path[-1] in ("model", "serial"), path


@pytest.mark.parametrize("planted", SECRETS)
def test_an_unknown_key_holding_personal_data_is_not_repeated(planted: str) -> None:
    for doc in (payload(**{planted: 1}), first_obs(**{planted: "x"})):
        err = refuse(doc)
        assert err.code is WireErrorCode.UNKNOWN_FIELD
        assert planted not in str(err)


@pytest.mark.parametrize(
    "doc",
    [
        first_obs(**{"ki\x00nd": "spo2"}),
        payload(**{"\x00": 1}),
        first_obs(id="11c7fbe9-d6fd-507d-96ea-5a64c12ee9\x00f"),
        first_obs(reading_id="\x00"),
        first_obs(kind="spo2\x00"),
        first_obs(flags=["invalid\x00"]),
        payload(gateway_id="gw-0001\x00"),
        first_obs(unit="%\x00"),
        first_obs(device={"address": "C0:FF:EE:00:00:01", "model": "PO\x0060"}),
        payload(batch_id="b\x00"),
    ],
)
def test_nul_anywhere_is_refused_and_never_in_the_reason(doc: dict[str, Any]) -> None:
    err = refuse(doc)
    assert "\x00" not in str(err) and "\\u0000" not in str(err)
    assert err.code in {WireErrorCode.INVALID_FIELD, WireErrorCode.UNKNOWN_FIELD,
                        WireErrorCode.UNKNOWN_KIND, WireErrorCode.UNKNOWN_FLAG,
                        WireErrorCode.GATEWAY_MISMATCH}  # fmt: skip


@pytest.mark.parametrize("depth", [300, 10_000, 100_000])
@pytest.mark.parametrize("where", ["top", "field"])
def test_deep_nesting_is_an_invalid_field_not_a_crash(depth: int, where: str) -> None:
    nest = "[" * depth + "]" * depth
    raw = nest if where == "top" else json.dumps(first_obs(value=12.5)).replace("12.5", nest, 1)
    if where == "field":
        assert nest in raw
    err = refuse(raw)
    assert err.code in {WireErrorCode.INVALID_FIELD, WireErrorCode.NOT_AN_OBJECT}


@pytest.mark.parametrize(
    "at",
    ["0001-01-01T00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
     "9999-12-31T23:59:59Z", "2026-11-22T23:59:60Z", "2026-02-30T00:00Z", "yesterday"],
)  # fmt: skip
@pytest.mark.parametrize("name", ["measured_at", "received_at"])
def test_extreme_dates_are_named_refusals(at: str, name: str) -> None:
    err = refuse(first_obs(**{name: at}))
    assert err.field.endswith(name)
    assert err.code in {WireErrorCode.INVALID_FIELD, WireErrorCode.TOO_OLD,
                        WireErrorCode.FUTURE_TIME, WireErrorCode.ID_MISMATCH}  # fmt: skip


def test_a_reading_from_a_reset_device_clock_is_too_old() -> None:
    for at in (datetime(1970, 1, 1, tzinfo=UTC), NOW - MAX_AGE - timedelta(seconds=1)):
        err = refuse(encode(make_batch(GW, [obs(at=at)], sent_at=NOW)))
        assert (err.code, err.field) == (WireErrorCode.TOO_OLD, "observations[0].measured_at")
    ok = make_batch(GW, [obs(at=NOW - MAX_AGE + timedelta(minutes=1))], sent_at=NOW)
    decode_batch(encode(ok), topic_gateway_id=GW, now=NOW)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"value": "95"}, "value"),
        ({"value": True}, "value"),
        ({"value": None}, "value"),
        ({"value": [95]}, "value"),
        ({"measured_at": 1764000000}, "measured_at"),
        ({"received_at": 1764000000.5}, "received_at"),
        ({"measured_at": {"t": 1}}, "measured_at"),
        ({"flags": [str(f) for f in Flag] * 2}, "flags"),
        ({"flags": ["invalid"] * 15_000}, "flags"),
        ({"unit": 1}, "unit"),
        ({"device": "C0:FF:EE:00:00:01"}, "device"),
    ],
)
def test_strict_types(changes: dict[str, Any], field: str) -> None:
    err = refuse(first_obs(**changes))
    assert err.field.startswith(f"observations[0].{field}"), err


@pytest.mark.parametrize("v", [True, 1.0, "1", None, [1], 10**30])
def test_version_must_be_the_integer_1(v: Any) -> None:
    err = refuse(payload(v=v))
    assert err.code is WireErrorCode.UNSUPPORTED_VERSION and err.field == "v"


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity", "1" + "0" * 5000])
def test_huge_and_non_finite_numbers(number: str) -> None:
    raw = json.dumps(first_obs(value=12345.678)).replace("12345.678", number)
    assert number in raw
    err = refuse(raw)
    assert err.code in {WireErrorCode.INVALID_FIELD, WireErrorCode.NOT_JSON}
    assert number not in err.reason


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff", b'{"v": 1, "x": "\xc0\xaf"}', b'{"v": 1, "gateway_id": "\\ud800"}', b"\x00"],
)
def test_bytes_that_are_not_utf8_json(raw: bytes) -> None:
    err = refuse(raw)
    assert err.code in {WireErrorCode.NOT_JSON, WireErrorCode.INVALID_FIELD}


def test_batch_id_round_trips_and_is_found_in_a_refused_message() -> None:
    batch = make_batch(GW, [obs()], sent_at=NOW, batch_id="a1b2c3d4:1-100")
    assert decode_batch(encode(batch), topic_gateway_id=GW, now=NOW).batch_id == "a1b2c3d4:1-100"
    bad = json.dumps(payload(batch_id="a1b2c3d4:7-9", v=2)).encode()
    assert batch_id_of(bad) == "a1b2c3d4:7-9"
    assert batch_id_of(b'{"batch_id": "no spaces allowed"}') is None
    assert refuse(payload(batch_id="x" * 65)).field == "batch_id"
