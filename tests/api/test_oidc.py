"""Tokens of an external OpenID Connect provider: a JWKS served over HTTP here, keys rotated,
the role and teams from the claims; the wrong audience or issuer, an unknown key and an
unsigned token are refused, and local login is off."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from api.app import create_app
from api.config import OidcConfig
from tests.api.conftest import World, api_config, own_address
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack
ISSUER, AUDIENCE = "https://login.example.dk/realms/region", "vitalvagt"


class Provider:
    """The provider's key set, changed by the test (rotation)."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}

    def add(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> bytes:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": keys}).encode()

    def token(self, kid: str, key: rsa.RSAPrivateKey | None = None, **over: object) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "ext-7",
            "iat": now,
            "exp": now + 300,
            "name": "Dr. Extern",
            "roles": ["physician"],
            **over,
        }
        return jwt.encode(claims, key or self.keys[kid], "RS256", headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    p = Provider()
    p.add("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = p.jwks()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="jwks-under-test")
    thread.start()
    try:
        yield p, f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_provider_tokens_with_rotation_and_refusals(
    stack: Stack, world: World, provider: tuple[Provider, str]
) -> None:
    p, url = provider
    config = api_config(oidc=OidcConfig(ISSUER, AUDIENCE, url, jwks_refresh_cooldown_s=0))
    with TestClient(create_app(stack.database_url(), config=config), client=own_address()) as c:

        def me(token: str) -> tuple[int, dict]:
            r = c.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            return r.status_code, r.json()

        status, body = me(p.token("k1", teams=[world.a.team]))
        assert status == 200, body
        assert body["role"] == "physician" and body["team_ids"] == [world.a.team]
        assert body["municipality_ids"] == [world.a.municipality]
        # the scope holds for provider users too
        h = {"Authorization": f"Bearer {p.token('k1', teams=[world.a.team])}"}
        assert c.get(f"/patients/{world.a.patient}", headers=h).status_code == 200
        assert c.get(f"/patients/{world.b.patient}", headers=h).status_code == 404
        # rotation: a new key the API has not fetched yet is fetched on first sight
        p.add("k2")
        assert me(p.token("k2", teams=[world.a.team]))[0] == 200
        # refused: another audience, another issuer, expired, no role, a key not in the set
        # under a known key id, and unsigned
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        for bad in (
            p.token("k1", aud="another-app"),
            p.token("k1", iss="https://evil"),
            p.token("k1", iat=now - 900, exp=now - 600),
            p.token("k1", roles=["cook"]),
            p.token("k1", key=stranger),
            jwt.encode(
                {
                    "iss": ISSUER,
                    "aud": AUDIENCE,
                    "sub": "x",
                    "iat": now,
                    "exp": now + 60,
                    "roles": ["admin"],
                },
                None,
                "none",
            ),
        ):
            status, body = me(bad)
            assert status == 401 and body["title"] == "not authenticated", body
        # no local login in this mode
        r = c.post("/auth/token", data={"username": "someone", "password": "x"})
        assert r.status_code == 404
