"""Gateway status end to end: a real gateway client (paho, TLS gateway listener, a last will
as gateway/publisher.py sets it) -> mosquitto -> ingest's status path -> ``gateways`` ->
``GET /gateways/{id}`` and ``GET /gateways``. A gateway that drops without DISCONNECT is
offline from when the broker published its will; a malformed status is a dead letter and
ingest goes on."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from api.app import create_app
from api.users import add_user
from ingest.service import IngestService
from tests.api.conftest import PASSWORD, api_config, auth, own_address
from tests.ingest.conftest import add_home, ingest, wait_for  # noqa: F401 - shared fixture
from vitalvagt.mqtt_cleanup import client_tls_context
from vitalvagt.roles import Role
from vitalvagt.stack import Stack
from vitalvagt.wire import GatewayState, GatewayStatus, StatusDevice, encode, status_topic

pytestmark = pytest.mark.stack


def status(gw: str, state: GatewayState, devices: tuple[StatusDevice, ...] | None = None) -> bytes:
    return encode(GatewayStatus(gateway_id=gw, state=state, at=datetime.now(UTC), devices=devices))


def tablet(stack: Stack, gw: str, password: str) -> mqtt.Client:
    """A gateway as gateway/publisher.py connects: last will "offline" (retained, QoS 1, built
    at connect time), then "online" retained."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vv-gw-{gw}", protocol=mqtt.MQTTv5)
    c.username_pw_set(gw, password)
    c.tls_set_context(client_tls_context(stack.paths.ca_cert))
    c.will_set(status_topic(gw), status(gw, GatewayState.OFFLINE), 1, True)
    c.connect("127.0.0.1", stack.settings.mqtt_tls_port, keepalive=30)
    c.loop_start()
    c.publish(status_topic(gw), status(gw, GatewayState.ONLINE), 1, True).wait_for_publish(5)
    return c


def drop(c: mqtt.Client) -> None:
    """The link dies: no DISCONNECT, so the broker publishes the will."""
    c.loop_stop()
    sock = c.socket()
    assert sock is not None
    sock.close()


@pytest.fixture
def home(stack: Stack, registry: psycopg.Connection) -> Iterator[tuple[str, str, str]]:
    """(gateway, password, nurse of its team); the retained status is cleared afterwards."""
    gw, password, _patient = add_home(registry, stack, f"st-{uuid.uuid4().hex[:6]}")
    nurse = f"nurse-status-{gw}"
    add_user(registry, nurse, display_name="nurse", role=Role.NURSE, team_ids=["team-test"],
             password=PASSWORD)  # fmt: skip
    yield gw, password, nurse
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(gw, password)
    c.tls_set_context(client_tls_context(stack.paths.ca_cert))
    c.connect("127.0.0.1", stack.settings.mqtt_tls_port)
    c.loop_start()
    c.publish(status_topic(gw), b"", 1, True).wait_for_publish(5)  # clear the retained one
    c.disconnect()
    c.loop_stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[TestClient]:
    with TestClient(create_app(stack.database_url(), config=api_config()),
                    client=own_address()) as c:  # fmt: skip
        yield c


def state_of(api: TestClient, headers: dict[str, str], gw: str) -> dict:
    r = api.get(f"/gateways/{gw}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_online_then_a_dropped_link_is_offline_since_the_broker_published_the_will(
    stack: Stack,
    ingest: IngestService,  # noqa: F811
    home: tuple[str, str, str],
    api: TestClient,
) -> None:
    gw, password, nurse = home
    headers = auth(api, nurse)
    assert state_of(api, headers, gw)["state"] == "unknown"

    before_online = datetime.now(UTC)
    c = tablet(stack, gw, password)
    wait_for(lambda: state_of(api, headers, gw)["state"] == "online", 10, "online")
    online = state_of(api, headers, gw)
    online_since = datetime.fromisoformat(online["since"])
    assert before_online <= online_since <= datetime.now(UTC)
    assert online["last_status"]["state"] == "online"
    assert online["status_at"] is not None
    assert all(d["battery_level"] is None for d in online["devices"])  # none reported

    time.sleep(0.5)
    dropped_at = datetime.now(UTC)
    drop(c)
    wait_for(lambda: state_of(api, headers, gw)["state"] == "offline", 10, "offline")
    offline = state_of(api, headers, gw)
    since = datetime.fromisoformat(offline["since"])
    # The will's own "at" is the connect time; the hub records when it learned of the drop.
    assert dropped_at <= since <= datetime.now(UTC), (dropped_at, since)
    assert datetime.fromisoformat(offline["last_status"]["at"]) < dropped_at

    r = api.get("/gateways", params={"state": "offline"}, headers=headers)
    assert r.status_code == 200, r.text
    [row] = [g for g in r.json() if g["id"] == gw]
    assert row["state"] == "offline" and row["since"] == offline["since"]
    assert all(g["state"] == "offline" for g in r.json())
    everyone = api.get("/gateways", headers=headers).json()
    states = [g["state"] for g in everyone]
    assert states == sorted(states, key=["offline", "unknown", "online"].index)


def test_a_malformed_status_is_a_dead_letter_and_ingest_keeps_going(
    stack: Stack,
    ingest: IngestService,  # noqa: F811
    home: tuple[str, str, str],
    api: TestClient,
    registry: psycopg.Connection,
) -> None:
    gw, password, nurse = home
    headers = auth(api, nurse)
    c = tablet(stack, gw, password)
    try:
        wait_for(lambda: state_of(api, headers, gw)["state"] == "online", 10, "online")
        for bad in (b'{"v": 1, "gateway_id": "%s", "state": "sideways", "at": "2026-01-01T00:00Z"}'
                    % gw.encode(), b"not json", encode(GatewayStatus(
                        gateway_id="gw-someone-else", state=GatewayState.OFFLINE,
                        at=datetime.now(UTC)))):  # fmt: skip
            c.publish(status_topic(gw), bad, 1).wait_for_publish(5)
        topic = status_topic(gw)

        def letters() -> list[tuple[str, str]]:
            return registry.execute(
                "SELECT reason_code, reason FROM dead_letters WHERE topic = %s ORDER BY id",
                (topic,),
            ).fetchall()

        wait_for(lambda: len(letters()) == 3, 10, "three dead letters")
        codes = [code for code, _ in letters()]
        assert codes == ["invalid_field", "not_json", "gateway_mismatch"]
        assert "state" in letters()[0][1]
        assert state_of(api, headers, gw)["state"] == "online"  # the bad ones changed nothing
        # ... and ingest goes on: a good status after them is recorded.
        c.publish(topic, status(gw, GatewayState.OFFLINE), 1, True).wait_for_publish(5)
        wait_for(lambda: state_of(api, headers, gw)["state"] == "offline", 10, "offline")
        assert ingest.status.alive and ingest.status.dead_letters == 3
    finally:
        c.disconnect()
        c.loop_stop()


def test_another_teams_gateway_is_not_listed(
    ingest: IngestService,  # noqa: F811
    home: tuple[str, str, str],
    api: TestClient,
    registry: psycopg.Connection,
) -> None:
    gw, _password, _nurse = home
    other = f"nurse-other-{uuid.uuid4().hex[:6]}"
    registry.execute(
        "INSERT INTO acute_teams (id, municipality_id, name) VALUES ('team-other', '0999',"
        " 'Akutteam Andet') ON CONFLICT DO NOTHING"
    )
    add_user(registry, other, display_name="nurse", role=Role.NURSE, team_ids=["team-other"],
             password=PASSWORD)  # fmt: skip
    headers = auth(api, other)
    assert gw not in api.get("/gateways", headers=headers).text
    assert api.get(f"/gateways/{gw}", headers=headers).status_code == 404


def test_battery_levels_reach_the_nurse_and_a_bad_one_is_a_dead_letter(
    stack: Stack,
    ingest: IngestService,  # noqa: F811
    home: tuple[str, str, str],
    api: TestClient,
    registry: psycopg.Connection,
) -> None:
    gw, password, nurse = home
    headers = auth(api, nurse)
    cuff, oxi, scale = "D1:56:56:10:00:01", "D1:56:56:22:00:02", "D1:56:56:1D:00:04"
    # The oximeter has sent readings before (its row exists); the cuff has not yet.
    registry.execute("INSERT INTO devices (gateway_id, address, model) VALUES (%s, %s, 'PO-60')",
                     (gw, oxi))  # fmt: skip
    at = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    levels = (
        StatusDevice(address=cuff, model="UA-651BLE", battery_level=12, battery_at=at),
        StatusDevice(address=oxi.lower(), battery_level=64, battery_at=at),
        StatusDevice(address=scale),  # no Battery Service: listed without a level
    )
    c = tablet(stack, gw, password)
    try:
        c.publish(status_topic(gw), status(gw, GatewayState.ONLINE, levels), 1,
                  True).wait_for_publish(5)  # fmt: skip

        def devices() -> dict[str, dict]:
            return {d["address"]: d for d in state_of(api, headers, gw)["devices"]}

        wait_for(lambda: devices().get(cuff, {}).get("battery_level") == 12, 10, "levels")
        got = devices()
        assert {a: d["battery_level"] for a, d in got.items()} == {cuff: 12, oxi: 64}
        assert datetime.fromisoformat(got[oxi]["battery_at"]) == at
        assert got[cuff]["model"] == "UA-651BLE" and got[oxi]["model"] == "PO-60"
        [row] = [g for g in api.get("/gateways", headers=headers).json() if g["id"] == gw]
        assert row["lowest_battery"] == 12  # this home needs a battery change
        # An older level (another ingest got a later status first) changes nothing.
        older = (StatusDevice(address=cuff, battery_level=90, battery_at=at - timedelta(hours=1)),)
        # A bad level is a dead letter naming the field, and changes nothing.
        bad = json.loads(status(gw, GatewayState.ONLINE, levels))
        bad["devices"][1]["battery_level"] = 150
        for payload in (status(gw, GatewayState.ONLINE, older), json.dumps(bad).encode()):
            c.publish(status_topic(gw), payload, 1, True).wait_for_publish(5)
        wait_for(lambda: registry.execute(
            "SELECT count(*) FROM dead_letters WHERE topic = %s", (status_topic(gw),)
        ).fetchone()[0] == 1, 10, "the dead letter")  # fmt: skip
        (code, reason) = registry.execute(
            "SELECT reason_code, reason FROM dead_letters WHERE topic = %s", (status_topic(gw),)
        ).fetchone()
        assert code == "invalid_field" and "devices[1].battery_level" in reason, reason
        assert {a: d["battery_level"] for a, d in devices().items()} == {cuff: 12, oxi: 64}
        # Offline (its last will carries no devices): the last known levels stay.
        drop(c)
        wait_for(lambda: state_of(api, headers, gw)["state"] == "offline", 10, "offline")
        assert {a: d["battery_level"] for a, d in devices().items()} == {cuff: 12, oxi: 64}
        r = api.get("/gateways", params={"state": "offline"}, headers=headers)
        assert [g["lowest_battery"] for g in r.json() if g["id"] == gw] == [12]
    finally:
        c.disconnect()
        c.loop_stop()
