"""``/auth``: the OAuth2 password flow for local users, refresh with rotation, logout, and
who am I.

Failed logins are counted per user name and per client address in ``login_failures`` (all
API processes share the count); at the limit a login is a 429 problem with Retry-After, also
with the right password, until the minute has passed.
"""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Form, Request
from pydantic import BaseModel, Field

from api.audit import audit_anonymous
from api.config import ApiConfig
from api.errors import PUBLIC_RESPONSES, NotFound, TooManyRequests, Unauthorized
from api.security import Conn, CurrentUser, client_address
from api.tokens import family_of, issue_pair, revoke_family, rotate
from api.users import check_password, get_user

router = APIRouter(prefix="/auth", tags=["auth"])
WINDOW_S = 60


class TokenAnswer(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4000)


class Me(BaseModel):
    user_id: str
    name: str
    role: str
    team_ids: list[str]
    municipality_ids: list[str]


def _config(request: Request) -> ApiConfig:
    if request.app.state.oidc is not None:
        raise NotFound("local login is off: tokens come from the identity provider")
    return request.app.state.config


def retry_after_s(conn: psycopg.Connection, keys: list[str], limit: int) -> int | None:
    """Seconds until a login may be tried again, or None when under the limit."""
    row = conn.execute(
        "SELECT max(wait) FROM (SELECT key, count(*) AS n, ceil(extract(epoch FROM"
        " min(at) + make_interval(secs => %s) - now()))::int AS wait FROM login_failures"
        " WHERE key = ANY(%s) AND at > now() - make_interval(secs => %s) GROUP BY key) k"
        " WHERE n >= %s",
        (WINDOW_S, keys, WINDOW_S, limit),
    ).fetchone()
    return None if row is None or row[0] is None else max(1, int(row[0]))


def record_failure(conn: psycopg.Connection, keys: list[str]) -> None:
    conn.execute("DELETE FROM login_failures WHERE at < now() - interval '10 minutes'")
    conn.execute("INSERT INTO login_failures (key) SELECT unnest(%s::text[])", (keys,))


@router.post(
    "/token",
    responses=PUBLIC_RESPONSES
    | {401: PUBLIC_RESPONSES[400] | {"description": "Wrong user name or password"}},
)
def token(
    request: Request,
    conn: Conn,
    username: Annotated[str, Form(min_length=1, max_length=100)],
    password: Annotated[str, Form(min_length=1, max_length=1000)],
) -> TokenAnswer:
    """OAuth2 password flow: a short-lived access token and a refresh token."""
    config = _config(request)
    address = client_address(request)
    keys = [f"user:{username.lower()}", f"addr:{address}"]
    if (wait := retry_after_s(conn, keys, config.login_failures_per_min)) is not None:
        audit_anonymous(conn, username, "login_refused", address, reason="rate limit")
        raise TooManyRequests(f"too many failed logins; try again in {wait} s", retry_after_s=wait)
    user = check_password(conn, username.lower(), password)
    if user is None:
        record_failure(conn, keys)
        audit_anonymous(conn, username, "login_failed", address)
        raise Unauthorized("wrong user name or password, or the user is disabled")
    audit_anonymous(conn, user.id, "login", address)
    return TokenAnswer(**issue_pair(conn, config, user))


@router.post(
    "/refresh",
    responses=PUBLIC_RESPONSES
    | {
        401: PUBLIC_RESPONSES[400]
        | {"description": "Refresh token invalid, expired or used already"}
    },
)
def refresh(request: Request, conn: Conn, body: RefreshRequest) -> TokenAnswer:
    """A new pair for a refresh token; the token given is spent (a second use is refused
    and ends the whole chain of tokens)."""
    config = _config(request)
    user_id = rotate(conn, config, body.refresh_token)
    user = get_user(conn, user_id)
    if user is None or not user.active:
        raise Unauthorized("the token's user is unknown or disabled")
    answer: dict[str, Any] = issue_pair(
        conn, config, user, family=family_of(body.refresh_token, config)
    )
    return TokenAnswer(**answer)


@router.post(
    "/logout",
    status_code=204,
    responses=PUBLIC_RESPONSES
    | {401: PUBLIC_RESPONSES[400] | {"description": "Refresh token invalid or expired"}},
)
def logout(request: Request, conn: Conn, body: RefreshRequest) -> None:
    """End the session: the refresh token and every token of its chain are revoked, so no
    new access token comes of them. No access token is needed (it may have expired: the
    refresh token is the credential); one still held works until it expires (minutes)."""
    config = _config(request)
    user_id = revoke_family(conn, config, body.refresh_token)
    audit_anonymous(conn, user_id, "logout", client_address(request))


@router.get("/me")
def me(user: CurrentUser) -> Me:
    """The user the token speaks for, with their scope."""
    return Me(
        user_id=user.user_id,
        name=user.name,
        role=user.role.value,
        team_ids=list(user.team_ids),
        municipality_ids=list(user.municipality_ids),
    )
