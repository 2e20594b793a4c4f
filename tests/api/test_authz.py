"""Authorization, generated from the route table (``app.routes``): a new endpoint cannot
skip it. Every route but the public ones refuses a request without a token; no user of team
A, in any role, gets anything of team B's from any route, nor changes anything of it; and
the same request with team B's own users works (so the ids filled in are real)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fastapi.routing
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.app import PUBLIC_PATHS
from tests.api.conftest import RECIPIENT, Team, World, auth, own_address
from vitalvagt.roles import Role

pytestmark = pytest.mark.stack
# Streams never end: tested with a real server in test_stream.py and test_readings_stream.py
# (scope included).
STREAMING = frozenset({"/alerts/stream", "/patients/{patient_id}/readings/stream"})


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every API route, in the order they match. FastAPI from about 0.13x
    keeps included routers as such in ``app.routes`` (``iter_route_contexts`` walks them);
    before, ``app.routes`` held every route itself."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    found = walk(app.routes) if walk else app.routes
    out = []
    for r in found:
        if isinstance(getattr(r, "original_route", r), APIRoute):
            out.extend((m, r.path) for m in sorted(r.methods))
    assert len(out) > 20
    return out


def fill(path: str, t: Team) -> str:
    values = {
        "patient_id": t.patient,
        "gateway_id": t.gateway,
        "alert_id": str(t.alert),
        "dead_letter_id": str(t.dead_letter),
        "kind": "spo2",
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{path}: add its path parameter to fill() in {__name__}"
    return path


def request_of(method: str, path: str, t: Team) -> dict[str, Any]:
    """The query and body a route needs to do its work for team ``t``."""
    soon = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    known: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/alerts/{alert_id}/acknowledge"): {"json": {"note": "calling now"}},
        ("POST", "/alerts/{alert_id}/snooze"): {"json": {"until": soon, "note": "at the GP"}},
        ("POST", "/alerts/{alert_id}/note"): {"json": {"note": "called her: measuring again"}},
        ("POST", "/alerts/{alert_id}/resolve"): {"json": {"reason": "measured again: 94 %"}},
        ("PUT", "/patients/{patient_id}/thresholds/{kind}"): {
            "json": {"alert_low": 84, "warn_low": 87, "reason": "chronic low saturation"}
        },
        ("POST", "/gateways"): {"json": {"gateway_id": t.gateway, "patient_id": t.patient}},
        ("POST", "/gateways/{gateway_id}/revoke"): {"json": {"reason": "tablet lost"}},
        ("POST", "/patients/{patient_id}/fhir/export"): {"json": {"recipient": RECIPIENT}},
        ("POST", "/patients/{patient_id}/consents"): {
            "json": {
                "recipient": "Egen læge",
                "given_at": str(date.today()),
                "valid_until": str(date.today() + timedelta(days=90)),
            }
        },
        ("PUT", "/patients/{patient_id}/schedule"): {
            "json": {"kinds": [{"kind": "spo2", "local_times": ["08:00"]}], "reason": "COPD plan"}
        },
        ("GET", "/patients/{patient_id}/series"): {"params": {"kind": "spo2"}},
        ("GET", "/patients/{patient_id}/trend"): {"params": {"kind": "spo2"}},
        ("GET", "/patients"): {"params": {"team": t.team}},
        ("GET", "/alerts"): {"params": {"team": t.team}},
        ("POST", "/auth/token"): {"data": {"username": t.users[Role.NURSE], "password": "x"}},
        ("POST", "/auth/refresh"): {"json": {"refresh_token": "x"}},
    }
    if method != "GET":
        assert (method, path) in known, f"{method} {path}: add its body to request_of()"
    return known.get((method, path), {})


def team_b_state(conn: psycopg.Connection, b: Team) -> list[Any]:
    """Everything of team B's that a route could change."""
    return [
        conn.execute(
            "SELECT state::text, note, snoozed_until FROM alerts WHERE id = %s", (b.alert,)
        ).fetchone(),
        conn.execute(
            "SELECT count(*) FROM alert_transitions WHERE alert_id = %s", (b.alert,)
        ).fetchone(),
        conn.execute(
            "SELECT count(*) FROM alert_limits WHERE patient_id = %s", (b.patient,)
        ).fetchone(),
        conn.execute(
            "SELECT count(*) FROM consents WHERE patient_id = %s", (b.patient,)
        ).fetchone(),
        conn.execute(
            "SELECT credential_hash, active FROM gateways WHERE id = %s", (b.gateway,)
        ).fetchone(),
        conn.execute(
            "SELECT count(*) FROM measurement_schedules WHERE patient_id = %s", (b.patient,)
        ).fetchone(),
    ]


def leaks(body: str, b: Team) -> list[str]:
    return [s for s in (b.patient, b.gateway, b.team, b.municipality, b.observation) if s in body]


def test_every_route_but_the_public_ones_needs_a_token(app: FastAPI, world: World) -> None:
    with TestClient(app, client=own_address()) as client:
        for method, path in routes(app):
            if path in PUBLIC_PATHS:
                continue
            r = client.request(method, fill(path, world.b), **request_of(method, path, world.b))
            assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text[:200]}"
            assert r.headers["content-type"] == "application/problem+json"


def test_no_user_of_team_a_gets_or_changes_anything_of_team_b(
    app: FastAPI, world: World, registry: psycopg.Connection
) -> None:
    a, b = world.a, world.b
    before = team_b_state(registry, b)
    with TestClient(app, client=own_address()) as client:
        tokens = {role: auth(client, user) for role, user in a.users.items()}
        for method, path in routes(app):
            if path in PUBLIC_PATHS or path in STREAMING:
                continue
            for role, headers in tokens.items():
                r = client.request(
                    method, fill(path, b), headers=headers, **request_of(method, path, b)
                )
                where = f"{role.value} of team A: {method} {path}"
                assert r.status_code in (200, 403, 404), f"{where}: {r.status_code} {r.text}"
                if r.status_code == 200:
                    assert not leaks(json.dumps(r.json(), separators=(",", ":")), b), where
                assert team_b_state(registry, b) == before, f"{where} changed team B's data"


def test_team_bs_own_users_get_the_same_requests_answered(
    app: FastAPI, world: World, registry: psycopg.Connection
) -> None:
    """The other side of the test above: with team B's users each route answers (some role
    of team B may do it), so a 404 for team A is the scope, not a wrong id."""
    b = world.b
    with TestClient(app, client=own_address()) as client:
        tokens = {role: auth(client, user) for role, user in b.users.items()}
        for method, path in routes(app):
            if path in PUBLIC_PATHS or path in STREAMING:
                continue
            answers = []
            for headers in tokens.values():
                r = client.request(
                    method, fill(path, b), headers=headers, **request_of(method, path, b)
                )
                answers.append(r.status_code)
                if r.is_success:
                    break
            assert any(200 <= s < 300 for s in answers), f"{method} {path}: {answers}"
