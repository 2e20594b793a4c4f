"""Bearer tokens: the API's own (local users) and an external OpenID Connect provider's.

Local access tokens are HS256 JWTs for ``LOCAL_AUDIENCE`` from ``LOCAL_ISSUER``, short-lived;
refresh tokens are JWTs too, recorded by id in ``refresh_tokens`` and good for one use: a
refresh answers a new pair, and a used token presented again is refused and revokes its
family, as a logout does. Only the algorithms named here are accepted: an unsigned
(``alg: none``) token, one signed with another key, expired, or for another audience or
issuer is ``Unauthorized``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
import psycopg

from api.config import LOCAL_AUDIENCE, LOCAL_ISSUER, ApiConfig, OidcConfig
from api.errors import Unauthorized
from api.users import User
from vitalvagt.roles import Role

LOCAL_ALGORITHMS = ["HS256"]
OIDC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
_LEEWAY_S = 10


@dataclass(frozen=True, slots=True)
class Claims:
    """Who a valid access token speaks for: a local user's id, or the provider's subject
    with the role and teams it names."""

    sub: str
    role: Role | None  # None for local tokens: the users table says
    team_ids: tuple[str, ...] | None
    name: str | None = None


def _require(payload: dict[str, Any], *names: str) -> None:
    for n in names:
        if n not in payload:
            raise Unauthorized(f"token without the {n!r} claim")


def issue_pair(
    conn: psycopg.Connection, config: ApiConfig, user: User, *, family: str | None = None
) -> dict[str, Any]:
    """A new access token and refresh token for ``user`` (the OAuth2 token answer)."""
    now = int(time.time())
    access = jwt.encode(
        {
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": user.id,
            "typ": "access",
            "role": user.role.value,
            "iat": now,
            "exp": now + config.access_token_s,
            "jti": secrets.token_urlsafe(12),
        },
        config.jwt_secret,
        algorithm="HS256",
    )
    jti, family = secrets.token_urlsafe(18), family or secrets.token_urlsafe(12)
    refresh = jwt.encode(
        {
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": user.id,
            "typ": "refresh",
            "iat": now,
            "exp": now + config.refresh_token_s,
            "jti": jti,
            "fam": family,
        },
        config.jwt_secret,
        algorithm="HS256",
    )
    conn.execute(
        "INSERT INTO refresh_tokens (jti, family, user_id, expires_at)"
        " VALUES (%s, %s, %s, to_timestamp(%s))",
        (jti, family, user.id, now + config.refresh_token_s),
    )
    return {
        "access_token": access,
        "token_type": "bearer",
        "expires_in": config.access_token_s,
        "refresh_token": refresh,
        "refresh_expires_in": config.refresh_token_s,
    }


def _decode_local(token: str, config: ApiConfig, typ: str) -> dict[str, Any]:
    try:
        payload = jwt.decode(
            token,
            config.jwt_secret,
            algorithms=LOCAL_ALGORITHMS,
            audience=LOCAL_AUDIENCE,
            issuer=LOCAL_ISSUER,
            leeway=_LEEWAY_S,
            options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("the token is for another audience") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    if payload.get("typ") != typ:
        raise Unauthorized(f"not an {typ} token")
    return payload


def rotate(conn: psycopg.Connection, config: ApiConfig, token: str) -> str:
    """Spend a refresh token; returns its user id. A used, revoked or unknown one is refused
    (and a used one revokes its family: someone else may hold a copy)."""
    payload = _decode_local(token, config, "refresh")
    _require(payload, "fam")
    with conn.transaction():
        row = conn.execute(
            "SELECT user_id, used_at IS NOT NULL, revoked_at IS NOT NULL FROM refresh_tokens"
            " WHERE jti = %s FOR UPDATE",
            (payload["jti"],),
        ).fetchone()
        if row is None:
            raise Unauthorized("unknown refresh token")
        if row[1]:
            conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now() WHERE family = %s"
                " AND revoked_at IS NULL",
                (payload["fam"],),
            )
        else:
            conn.execute(
                "UPDATE refresh_tokens SET used_at = now() WHERE jti = %s", (payload["jti"],)
            )
    if row[1]:
        raise Unauthorized("the refresh token was used already; log in again")
    if row[2]:
        raise Unauthorized("the refresh token was revoked; log in again")
    return str(row[0])


def revoke_family(conn: psycopg.Connection, config: ApiConfig, token: str) -> str:
    """Log out: every refresh token of ``token``'s family (the chain of rotations it belongs
    to) is revoked; returns its user id. A token that is invalid, expired or unknown is
    refused as at a refresh; one revoked already is not (a second logout changes nothing)."""
    payload = _decode_local(token, config, "refresh")
    _require(payload, "fam")
    with conn.transaction():
        row = conn.execute(
            "SELECT user_id, family FROM refresh_tokens WHERE jti = %s", (payload["jti"],)
        ).fetchone()
        if row is None:
            raise Unauthorized("unknown refresh token")
        conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family = %s AND revoked_at IS NULL",
            (row[1],),
        )
    return str(row[0])


def family_of(token: str, config: ApiConfig) -> str:
    return str(_decode_local(token, config, "refresh")["fam"])


def verify_local(token: str, config: ApiConfig) -> Claims:
    payload = _decode_local(token, config, "access")
    return Claims(sub=str(payload["sub"]), role=None, team_ids=None)


class OidcVerifier:
    """Tokens of an external provider: signature by a key of its JWKS (fetched and cached by
    PyJWKClient, fetched again when a token names a key id it does not know: key rotation),
    issuer, audience, expiry; the role and the teams from the configured claims."""

    def __init__(self, oidc: OidcConfig) -> None:
        self.oidc = oidc
        self._jwks = jwt.PyJWKClient(
            oidc.jwks_url,
            cache_keys=True,
            lifespan=300,
            timeout=10,
            cooldown_duration=oidc.jwks_refresh_cooldown_s,
        )

    def verify(self, token: str) -> Claims:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            payload = jwt.decode(
                token,
                key.key,
                algorithms=OIDC_ALGORITHMS,
                audience=self.oidc.audience,
                issuer=self.oidc.issuer,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is for another audience") from None
        except jwt.PyJWKClientConnectionError:
            raise Unauthorized("the identity provider's keys cannot be fetched") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        roles = payload.get(self.oidc.roles_claim)
        roles = [roles] if isinstance(roles, str) else roles if isinstance(roles, list) else []
        known = [Role(r) for r in roles if r in Role._value2member_map_]
        if not known:
            raise Unauthorized(f"the token names no role in {self.oidc.roles_claim!r}")
        teams = payload.get(self.oidc.teams_claim)
        teams = [teams] if isinstance(teams, str) else teams if isinstance(teams, list) else []
        return Claims(
            sub=str(payload["sub"]),
            role=known[0],
            team_ids=tuple(str(t) for t in teams),
            name=str(payload.get("name") or payload["sub"]),
        )
