"""Fixtures of the API tests: a world of two municipalities with a team each, a patient, a
gateway, readings, an alert and a dead letter per team, and a user of every role per team;
an app with a signing key of the test's own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ApiConfig
from api.users import Role, add_user
from tests.conftest import free_port
from tests.ingest.conftest import registry  # noqa: F401 - shared fixture
from vitalvagt.db.alert_lifecycle import record
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.stack import Stack

SECRET = "test-signing-key-" + "k" * 40
PASSWORD = "correct horse battery"
RECIPIENT = "Aalborg Universitetshospital, lungemedicinsk afdeling"


def api_config(**overrides: object) -> ApiConfig:
    return ApiConfig(jwt_secret=SECRET, **overrides)  # type: ignore[arg-type]


@dataclass
class Team:
    key: str  # "a" or "b"
    municipality: str
    team: str
    patient: str
    gateway: str
    alert: int = 0
    dead_letter: int = 0
    observation: str = ""
    users: dict[Role, str] = field(default_factory=dict)


@dataclass
class World:
    a: Team
    b: Team


def make_team(conn: psycopg.Connection, key: str, tag: str) -> Team:
    t = Team(key, f"9{tag[:2]}{key}"[:4], f"team-{tag}-{key}", f"p-{tag}-{key}", f"gw-{tag}-{key}")
    conn.execute(
        "INSERT INTO municipalities (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (t.municipality, f"Kommune {key}"),
    )
    conn.execute(
        "INSERT INTO acute_teams (id, municipality_id, name) VALUES (%s, %s, %s)",
        (t.team, t.municipality, f"Akutteam {key}"),
    )
    conn.execute(
        "INSERT INTO patients (id, municipality_id, team_id, patient_group)"
        " VALUES (%s, %s, %s, 'copd')",
        (t.patient, t.municipality, t.team),
    )
    provision_gateway(conn, t.gateway, patient_id=t.patient)
    now = datetime.now(UTC).replace(microsecond=0)
    obs = [uuid.uuid4() for _ in range(20)]
    for i, oid in enumerate(obs):
        at = now - timedelta(hours=20 - i)
        conn.execute(
            "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
            " device_address, kind, value, unit) VALUES (%s, %s, %s, %s, %s,"
            " '00:11:22:33:44:55', 'spo2', %s, '%%')",
            (oid, at, at, t.patient, t.gateway, 90 + i % 8 if i != 10 else 80),
        )
    t.observation = str(obs[10])
    row = conn.execute(
        "INSERT INTO alerts (patient_id, team_id, rule, severity, kind, value, observation_id,"
        " measured_at, message) VALUES (%s, %s, 'limit:spo2', 'red', 'spo2', 80, %s, %s,"
        " 'SpO2 80 %%: call the patient') RETURNING id",
        (t.patient, t.team, obs[10], now - timedelta(hours=10)),
    ).fetchone()
    t.alert = row[0]
    record(conn, t.alert, None, "open", by="engine", reason="opened")
    t.dead_letter = conn.execute(
        "INSERT INTO dead_letters (topic, payload, gateway_id, reason_code, reason, payload_size)"
        " VALUES (%s, %s, %s, 'bad_json', 'not JSON', 9) RETURNING id",
        (f"vv/v1/gw/{t.gateway}/obs", b"CPR 0101", t.gateway),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO consents (patient_id, recipient, given_at, valid_until, recorded_by)"
        " VALUES (%s, %s, current_date - 10, current_date + 300, 'test')",
        (t.patient, RECIPIENT),
    )
    for role in Role:
        user_id = f"{role.value.replace('_', '')}-{tag}-{key}"
        add_user(
            conn,
            user_id,
            display_name=f"{role.value} {key}",
            role=role,
            team_ids=[t.team],
            password=PASSWORD,
        )
        t.users[role] = user_id
    return t


@pytest.fixture
def world(registry: psycopg.Connection) -> World:  # noqa: F811
    tag = uuid.uuid4().hex[:6]
    return World(make_team(registry, "a", tag), make_team(registry, "b", tag))


@pytest.fixture
def app(stack: Stack) -> FastAPI:
    return create_app(stack.database_url(), config=api_config())


def own_address() -> tuple[str, int]:
    """A client address of its own, so that failed logins of one test (or schemathesis', from
    the default "testclient") never rate-limit another's."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{n // 250 % 250}.{n // 62500 % 250}", 50000


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, client=own_address()) as c:
        yield c


def login(client: TestClient, user: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/auth/token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def auth(client: TestClient, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(client, user)['access_token']}"}


@contextmanager
def serving(stack: Stack) -> Iterator[str]:
    """The API under uvicorn on a free port in a thread (its lifespan: the pool, the feeds)."""
    port = free_port()
    app = create_app(stack.database_url(), config=api_config(), pool_max_size=4)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"api-under-test-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
