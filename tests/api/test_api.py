"""The clinician API against the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.users import Role, UserError, add_user
from ingest.messages import Message
from ingest.registry import GatewayDirectory, validate
from ingest.rollups import refresh_rollups
from ingest.store import Store
from tests.api.conftest import PASSWORD, auth
from tests.ingest.conftest import add_home, payloads, readings
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack
NURSE: dict[str, str] = {}  # her bearer token, set by the `nurse` fixture


@pytest.fixture
def home(stack: Stack, registry: psycopg.Connection) -> tuple[str, str]:
    gw, _, patient = add_home(registry, stack, "api")
    with Store(stack.database_url()) as store:
        store.open()
        msgs = [
            Message(f"vv/v1/gw/{gw}/obs", p, datetime.now(UTC))
            for p in payloads(gw, readings(gw, 30), 10)
        ]
        store.write([validate(m, GatewayDirectory(), store.conn) for m in msgs], [])  # type: ignore[misc]
    refresh_rollups(registry, retention_days=100_000)
    return patient, gw


@pytest.fixture
def nurse(client: TestClient, home: tuple[str, str], registry: psycopg.Connection) -> None:
    """Nurse Anne of the test team (the team of `home`), logged in."""
    try:
        add_user(
            registry,
            "nurse-anne",
            display_name="Anne",
            role=Role.NURSE,
            team_ids=["team-test"],
            password=PASSWORD,
        )
    except UserError:
        pass  # made by an earlier test of the session
    NURSE.update(auth(client, "nurse-anne"))


def test_patient_latest_and_window_and_trend(
    client: TestClient, home: tuple[str, str], registry: psycopg.Connection, nurse: None
) -> None:
    patient, gw = home
    r = client.get(f"/patients/{patient}", headers=NURSE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gateway_id"] == gw and body["group"] == "copd"
    assert [x["kind"] for x in body["latest"]] == ["spo2"]
    last = readings(gw, 30)[-1]
    assert body["latest"][0]["value"] == last.value
    obs = client.get(
        f"/patients/{patient}/observations", headers=NURSE, params={"kind": "spo2", "limit": 5}
    ).json()
    assert [o["id"] for o in obs] == [str(o.id) for o in reversed(readings(gw, 30)[-5:])]
    since = (last.measured_at - timedelta(seconds=100)).isoformat()
    assert (
        len(
            client.get(
                f"/patients/{patient}/observations", headers=NURSE, params={"since": since}
            ).json()
        )
        == 3
    )
    trend = client.get(
        f"/patients/{patient}/trend", headers=NURSE, params={"kind": "spo2", "resolution": "hour"}
    ).json()
    assert sum(b["n"] for b in trend["buckets"]) == 30 and trend["unit"] == "%"
    actions = [
        r[0]
        for r in registry.execute(
            "SELECT action FROM audit_log WHERE actor = 'nurse-anne' AND patient_id = %s"
            " ORDER BY id",
            (patient,),
        )
    ]
    assert actions[-4:] == ["read_patient", "read_observations", "read_observations", "read_trend"]


def test_errors_are_json_problems_naming_the_field(
    client: TestClient, home: tuple[str, str], nurse: None
) -> None:
    patient, _ = home
    r = client.get("/patients/p-nobody", headers=NURSE)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "p-nobody" in r.json()["detail"]
    r = client.get(f"/patients/{patient}/observations", headers=NURSE, params={"kind": "glucose"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "query.kind"
    r = client.get(f"/patients/{patient}")  # no token: who read it must be known
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == "Bearer"
    # the header that was trusted before is no way in any more
    r = client.get(f"/patients/{patient}", headers={"X-Vitalvagt-User": "nurse-anne"})
    assert r.status_code == 401


def test_health(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": True}
