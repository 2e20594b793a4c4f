"""Authentication: login, refresh with rotation, the login rate limit, and the tokens that
must be refused (expired, wrongly signed, for another audience, unsigned)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.config import LOCAL_AUDIENCE, LOCAL_ISSUER
from api.users import disable_user
from tests.api.conftest import PASSWORD, SECRET, World, login
from vitalvagt.roles import Role

pytestmark = pytest.mark.stack


def _claims(user: str, **over: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": user,
        "typ": "access",
        "iat": now,
        "exp": now + 600,
        "jti": "t1",
        **over,
    }


def _me(client: TestClient, token: str) -> tuple[int, dict]:
    r = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.json()


def test_login_gives_a_short_lived_token_of_the_users_scope(
    client: TestClient, world: World
) -> None:
    answer = login(client, world.a.users[Role.NURSE])
    assert answer["token_type"] == "bearer" and answer["expires_in"] == 900
    payload = jwt.decode(
        answer["access_token"], SECRET, algorithms=["HS256"], audience=LOCAL_AUDIENCE
    )
    assert payload["exp"] - payload["iat"] == 900
    status, me = _me(client, answer["access_token"])
    assert status == 200
    assert me["role"] == "nurse" and me["team_ids"] == [world.a.team]
    assert me["municipality_ids"] == [world.a.municipality]
    r = client.post(
        "/auth/token", data={"username": world.a.users[Role.NURSE], "password": "wrong password!"}
    )
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_refresh_rotates_and_a_used_refresh_token_is_refused(
    client: TestClient, world: World
) -> None:
    first = login(client, world.a.users[Role.NURSE])
    r = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert _me(client, second["access_token"])[0] == 200
    # the spent token again: refused, and the chain it started is ended (the thief's and
    # the owner's next refresh alike)
    again = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 401 and "used already" in again.json()["detail"]
    r = client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    # an access token is no refresh token
    r = client.post("/auth/refresh", json={"refresh_token": second["access_token"]})
    assert r.status_code == 401


def test_login_rate_limit_per_address_and_per_user(app: FastAPI, world: World) -> None:
    user = world.a.users[Role.PHYSICIAN]
    with TestClient(app, client=("10.0.0.7", 4000)) as c:
        for _ in range(5):
            r = c.post("/auth/token", data={"username": user, "password": "not it at all"})
            assert r.status_code == 401
        r = c.post("/auth/token", data={"username": user, "password": PASSWORD})
        assert r.status_code == 429, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # the address is blocked for every user name...
        r = c.post("/auth/token", data={"username": world.a.users[Role.NURSE], "password": "x"})
        assert r.status_code == 429
    # ...and the user name from every address
    with TestClient(app, client=("10.0.0.8", 4000)) as c:
        r = c.post("/auth/token", data={"username": user, "password": PASSWORD})
        assert r.status_code == 429
        assert (
            c.post(
                "/auth/token", data={"username": world.a.users[Role.NURSE], "password": PASSWORD}
            ).status_code
            == 200
        )


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong_key",
        "wrong_audience",
        "wrong_issuer",
        "alg_none",
        "refresh",
        "garbage",
        "unknown_user",
    ],
)
def test_bad_tokens_are_refused_with_a_401_problem(
    client: TestClient, world: World, case: str
) -> None:
    user = world.a.users[Role.NURSE]
    now = int(time.time())
    if case == "expired":
        token = jwt.encode(_claims(user, iat=now - 2000, exp=now - 1000), SECRET, "HS256")
    elif case == "wrong_key":
        token = jwt.encode(_claims(user), "another-key-" + "x" * 40, "HS256")
    elif case == "wrong_audience":
        token = jwt.encode(_claims(user, aud="someone-else"), SECRET, "HS256")
    elif case == "wrong_issuer":
        token = jwt.encode(_claims(user, iss="https://evil.example"), SECRET, "HS256")
    elif case == "alg_none":

        def b64(d: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

        token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(_claims(user))}."
    elif case == "refresh":
        token = login(client, user)["refresh_token"]
    elif case == "unknown_user":
        token = jwt.encode(_claims("nobody-at-all"), SECRET, "HS256")
    else:
        token = "not.a.token"
    status, body = _me(client, token)
    assert status == 401, body
    assert body["status"] == 401 and body["title"] == "not authenticated"
    assert token not in json.dumps(body)


def test_a_disabled_user_is_refused_at_once(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    user = world.a.users[Role.NURSE]
    answer = login(client, user)
    assert disable_user(registry, user)
    assert _me(client, answer["access_token"])[0] == 401
    r = client.post("/auth/refresh", json={"refresh_token": answer["refresh_token"]})
    assert r.status_code == 401
    r = client.post("/auth/token", data={"username": user, "password": PASSWORD})
    assert r.status_code == 401


def test_the_audit_log_never_holds_a_token(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    answer = login(client, world.a.users[Role.NURSE])
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    assert client.get(f"/patients/{world.a.patient}", headers=headers).status_code == 200
    rows = registry.execute(
        "SELECT actor, action, detail::text FROM audit_log WHERE actor = %s",
        (world.a.users[Role.NURSE],),
    ).fetchall()
    assert {r[1] for r in rows} >= {"login", "read_patient"}
    assert all(answer["access_token"] not in r[2] and PASSWORD not in r[2] for r in rows)
    assert all('"address": "10.' in r[2] for r in rows)  # the client's address
