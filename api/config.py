"""The API's configuration, built once from ``Settings`` and passed to ``create_app``.

Two ways to authenticate (``VV_API_AUTH``): ``local`` (the embedded default: users in the
database, tokens the API signs with HS256 under a key generated once into
``<state_dir>/api/jwt.key`` or given as ``VV_API_JWT_SECRET``) and ``oidc`` (tokens of an
external OpenID Connect provider, checked against its issuer, audience and JWKS).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from vitalvagt.errors import ConfigError
from vitalvagt.settings import Settings

LOCAL_ISSUER = "vitalvagt"
LOCAL_AUDIENCE = "vitalvagt-api"


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str
    roles_claim: str = "roles"
    teams_claim: str = "teams"
    # A token naming a key id not in the cached set fetches the set again, at most once in
    # this many seconds (so that made-up key ids cannot flood the provider).
    jwks_refresh_cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ApiConfig:
    jwt_secret: str  # local tokens (also signs nothing else)
    access_token_s: int = 900
    refresh_token_s: int = 8 * 3600
    login_failures_per_min: int = 5
    max_body_bytes: int = 1_000_000
    oidc: OidcConfig | None = None  # set: tokens come from the provider, /auth/token is off


def signing_key(state_dir: Path) -> str:
    """The local signing key: read from ``<state_dir>/api/jwt.key``, made there once (0600)."""
    path = state_dir / "api" / "jwt.key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def api_config(settings: Settings) -> ApiConfig:
    if settings.api_jwt_secret is not None:
        secret = settings.api_jwt_secret.get_secret_value()
    else:
        secret = signing_key(settings.state_dir)
    if len(secret) < 32:
        raise ConfigError("VV_API_JWT_SECRET: at least 32 characters")
    oidc = None
    if settings.api_auth == "oidc":
        missing = [
            n
            for n, v in (
                ("VV_API_OIDC_ISSUER", settings.api_oidc_issuer),
                ("VV_API_OIDC_AUDIENCE", settings.api_oidc_audience),
                ("VV_API_OIDC_JWKS_URL", settings.api_oidc_jwks_url),
            )
            if not v
        ]
        if missing:
            raise ConfigError(f"VV_API_AUTH=oidc needs {', '.join(missing)}")
        oidc = OidcConfig(
            settings.api_oidc_issuer or "",
            settings.api_oidc_audience or "",
            settings.api_oidc_jwks_url or "",
            settings.api_oidc_roles_claim,
            settings.api_oidc_teams_claim,
        )
    elif settings.api_auth != "local":
        raise ConfigError(f"VV_API_AUTH={settings.api_auth!r}: local or oidc")
    return ApiConfig(
        jwt_secret=secret,
        access_token_s=settings.api_access_token_s,
        refresh_token_s=settings.api_refresh_token_s,
        login_failures_per_min=settings.api_login_failures_per_min,
        max_body_bytes=settings.api_max_body_bytes,
        oidc=oidc,
    )
