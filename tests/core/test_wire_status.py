"""The gateway status codec (``decode_status``) and its optional ``devices`` with battery
levels: old payloads still decode, every bad battery value is a named refusal, and no input
makes it raise anything but a WireError (property tests and a fuzz with hypothesis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitalvagt.wire import (
    MAX_STATUS_DEVICES,
    GatewayState,
    GatewayStatus,
    StatusDevice,
    WireError,
    WireErrorCode,
    decode_status,
    encode,
)

GW = "gw-0001"
AT = "2026-11-22T07:02:10.120000Z"
CPR = "010190-1234"


def status(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "gateway_id": GW,
        "state": "online",
        "at": AT,
        "outbox_pending": 0,
        "software": "vitalvagt-gateway 0.1.0",
    }
    doc.update(changes)
    return doc


def device(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "address": "D1:56:56:22:00:02",
        "model": "PO-60",
        "battery_level": 64,
        "battery_at": AT,
    }
    doc.update(changes)
    return doc


def refuse(doc: dict[str, Any] | str) -> WireError:
    raw = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(WireError) as info:
        decode_status(raw, topic_gateway_id=GW)
    return info.value


def test_a_payload_without_devices_decodes_as_before() -> None:
    # What every gateway before battery levels sent, and every last will.
    for doc in (
        status(),
        status(state="offline"),
        {"v": 1, "gateway_id": GW, "state": "online", "at": AT},
    ):
        got = decode_status(json.dumps(doc), topic_gateway_id=GW)
        assert got.devices is None
        assert json.loads(encode(got)) == {**doc, "at": "2026-11-22T07:02:10.120000Z"}


def test_devices_with_and_without_a_battery_level_round_trip() -> None:
    doc = status(devices=[device(), {"address": "D1:56:56:1D:00:04"}])
    got = decode_status(json.dumps(doc), topic_gateway_id=GW)
    assert got.devices == (
        StatusDevice(
            address="D1:56:56:22:00:02",
            model="PO-60",
            battery_level=64,
            battery_at=datetime(2026, 11, 22, 7, 2, 10, 120000, tzinfo=UTC),
        ),
        StatusDevice(address="D1:56:56:1D:00:04"),
    )
    assert decode_status(encode(got), topic_gateway_id=GW) == got
    assert got.devices[0].battery_at is not None and got.devices[0].battery_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (101, "must be at most 100"),
        (255, "must be at most 100"),
        (-1, "must be at least 0"),
        ("64", "must be an integer"),
        (64.0, "must be an integer"),
        (64.5, "must be an integer"),
        (True, "must be an integer"),
        ([64], "must be an integer"),
        ({"v": 64}, "must be an integer"),
    ],
)
def test_a_bad_battery_level_is_refused_naming_the_field(value: Any, reason: str) -> None:
    err = refuse(
        status(devices=[device(), device(address="D1:56:56:09:00:05", battery_level=value)])
    )
    assert (err.code, err.field, err.reason) == (
        WireErrorCode.INVALID_FIELD,
        "devices[1].battery_level",
        reason,
    )


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"battery_at": None}, WireErrorCode.MISSING_FIELD, "devices[0].battery_at"),
        ({"battery_level": None}, WireErrorCode.INVALID_FIELD, "devices[0].battery_at"),
        ({"battery_at": 1764000000}, WireErrorCode.INVALID_FIELD, "devices[0].battery_at"),
        ({"battery_at": "2026-11-22"}, WireErrorCode.INVALID_FIELD, "devices[0].battery_at"),
        (
            {"battery_at": "2026-11-22T07:02:10"},
            WireErrorCode.INVALID_FIELD,
            "devices[0].battery_at",
        ),
        ({"battery_at": CPR}, WireErrorCode.INVALID_FIELD, "devices[0].battery_at"),
        ({"address": ""}, WireErrorCode.INVALID_FIELD, "devices[0].address"),
        ({"address": "A" * 65}, WireErrorCode.INVALID_FIELD, "devices[0].address"),
        ({"address": "AA\x00"}, WireErrorCode.INVALID_FIELD, "devices[0].address"),
        ({"model": "PO\x0060"}, WireErrorCode.INVALID_FIELD, "devices[0].model"),
        ({"voltage": 3.1}, WireErrorCode.UNKNOWN_FIELD, "devices[0]"),
    ],
)
def test_each_malformed_device_gets_its_own_clear_error(
    changes: dict[str, Any], code: WireErrorCode, field: str
) -> None:
    doc = device(**changes)
    if changes.get("battery_at", "") is None:
        del doc["battery_at"]
    err = refuse(status(devices=[doc]))
    assert (err.code, err.field) == (code, field), str(err)
    assert "\x00" not in str(err) and CPR not in str(err)


def test_the_device_list_itself_is_checked() -> None:
    assert refuse(status(devices={"address": "x"})).field == "devices"
    too_many = [
        {"address": f"D1:00:00:00:{i // 256:02X}:{i % 256:02X}"}
        for i in range(MAX_STATUS_DEVICES + 1)
    ]
    err = refuse(status(devices=too_many))
    assert (err.field, err.reason) == ("devices", f"must have at most {MAX_STATUS_DEVICES} items")
    twice = refuse(status(devices=[device(), device(address="d1:56:56:22:00:02")]))
    assert (twice.code, twice.field) == (WireErrorCode.INVALID_FIELD, "devices[1].address")
    missing = refuse(status(devices=[{"battery_level": 5, "battery_at": AT}]))
    assert (missing.code, missing.field) == (WireErrorCode.MISSING_FIELD, "devices[0].address")


def test_version_and_gateway_are_checked_as_for_batches() -> None:
    err = refuse(status(v=2, devices=[device()]))
    assert err.code is WireErrorCode.UNSUPPORTED_VERSION
    err = refuse(status(gateway_id="gw-someone-else", devices=[device()]))
    assert err.code is WireErrorCode.GATEWAY_MISMATCH
    assert refuse("x" * (256 * 1024 + 1)).code is WireErrorCode.OVERSIZE


# --------------------------------------------------------------------------- properties

times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
addresses = st.text(st.sampled_from("0123456789ABCDEF:"), min_size=1, max_size=64)
devices = st.lists(
    st.builds(
        lambda a, m, level, at: StatusDevice(
            address=a, model=m, battery_level=level, battery_at=None if level is None else at
        ),
        addresses,
        st.none() | st.text(max_size=128).filter(lambda t: "\x00" not in t),
        st.none() | st.integers(0, 100),
        times,
    ),
    max_size=MAX_STATUS_DEVICES,
    unique_by=lambda d: d.address,
)


@given(devices)
def test_any_valid_device_list_round_trips(ds: list[StatusDevice]) -> None:
    sent = GatewayStatus(
        gateway_id=GW, state=GatewayState.ONLINE, at=datetime.now(UTC), devices=tuple(ds)
    )
    assert decode_status(encode(sent), topic_gateway_id=GW) == sent


@given(st.integers().filter(lambda n: not 0 <= n <= 100), st.integers(0, 3))
def test_any_integer_outside_0_100_is_refused_naming_its_device(value: int, i: int) -> None:
    ds = [device(address=f"D1:00:00:00:00:{k:02X}") for k in range(4)]
    ds[i]["battery_level"] = value
    err = refuse(status(devices=ds))
    if abs(value) >= 10**4300:  # pragma: no cover - hypothesis rarely goes there
        assert err.code is WireErrorCode.NOT_JSON
    else:
        assert (err.code, err.field) == (WireErrorCode.INVALID_FIELD, f"devices[{i}].battery_level")
        assert str(value) not in err.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["battery_level", "battery_at", "address", "model", "extra"]),
    json_values,
)
def test_any_value_in_a_device_field_decodes_or_is_a_named_refusal(key: str, value: Any) -> None:
    try:
        got = decode_status(
            json.dumps(status(devices=[device(**{key: value})])), topic_gateway_id=GW
        )
    except WireError as err:
        assert err.field.startswith("devices"), str(err)
        assert err.code in {
            WireErrorCode.INVALID_FIELD,
            WireErrorCode.MISSING_FIELD,
            WireErrorCode.UNKNOWN_FIELD,
            WireErrorCode.NOT_JSON,
        }
    else:
        (d,) = got.devices or ()
        if d.battery_level is not None:
            assert type(d.battery_level) is int and 0 <= d.battery_level <= 100
            assert d.battery_at is not None and d.battery_at.tzinfo is UTC


@given(json_values)
def test_any_json_as_the_device_list_decodes_or_is_a_named_refusal(value: Any) -> None:
    try:
        got = decode_status(json.dumps(status(devices=value)), topic_gateway_id=GW)
    except WireError as err:
        assert err.field.startswith("devices") or err.code is WireErrorCode.NOT_JSON, str(err)
    else:
        assert got.devices is None or isinstance(got.devices, tuple)


@given(st.binary(max_size=64))
def test_bytes_in_the_devices_slot_never_crash_the_decoder(junk: bytes) -> None:
    raw = json.dumps(status(devices=[device()])).encode().replace(b"64", junk, 1)
    try:
        decode_status(raw, topic_gateway_id=GW)
    except WireError:
        pass


def test_a_future_battery_time_is_kept_as_sent() -> None:
    # Like the status's own ``at``, a gateway clock ahead is not refused (the level is).
    ahead = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    got = decode_status(json.dumps(status(devices=[device(battery_at=ahead)])))
    assert got.devices is not None and got.devices[0].battery_level == 64


def test_the_documented_status_example_is_valid() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "wire-format.md").read_text()
    section = doc.split("## Gateway status", 1)[1]
    example = re.search(r"```json\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    got = decode_status(example, topic_gateway_id=GW)
    assert [d.battery_level for d in got.devices or ()] == [64, None]
