"""The dependencies every route takes: a database connection, the current user, the role.

``current_user`` turns the bearer token into a ``Principal``: for local tokens the user is
read from the ``users`` table at each request (a disabled user is refused at once, and a
change of teams counts at once); for OpenID Connect tokens the role and teams come from the
claims. The principal's teams and their municipalities are its scope: every query of patient
data puts ``SCOPE_SQL`` in its WHERE clause (a patient outside it is "not found").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from api.errors import Forbidden, Unauthorized
from api.tokens import OidcVerifier, verify_local
from api.users import get_user
from vitalvagt.roles import Role

# The patients alias ``p`` within the caller's teams and their municipalities.
SCOPE_SQL = "p.team_id = ANY(%(teams)s) AND p.municipality_id = ANY(%(municipalities)s)"
CLINICAL = (Role.NURSE, Role.TEAM_LEAD, Role.PHYSICIAN)

bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    name: str
    role: Role
    team_ids: tuple[str, ...]
    municipality_ids: tuple[str, ...]
    address: str  # the client's address, for the audit log

    @property
    def scope(self) -> dict[str, Any]:
        """The named parameters of ``SCOPE_SQL``."""
        return {"teams": list(self.team_ids), "municipalities": list(self.municipality_ids)}


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection, Depends(get_conn)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_user(
    request: Request, conn: Conn, token: Annotated[str | None, Depends(bearer)]
) -> Principal:
    return principal(request, conn, token)


def streaming_user(request: Request, token: Annotated[str | None, Depends(bearer)]) -> Principal:
    """``current_user`` for a long response: the connection is given back at once."""
    with request.app.state.pool.connection() as conn:
        return principal(request, conn, token)


def principal(request: Request, conn: psycopg.Connection, token: str | None) -> Principal:
    if not token:
        raise Unauthorized("a bearer token is needed (POST /auth/token)")
    verifier: OidcVerifier | None = request.app.state.oidc
    if verifier is not None:
        claims = verifier.verify(token)
        role, teams, name = claims.role, claims.team_ids or (), claims.name or claims.sub
    else:
        claims = verify_local(token, request.app.state.config)
        user = get_user(conn, claims.sub)
        if user is None or not user.active:
            raise Unauthorized("the token's user is unknown or disabled")
        role, teams, name = user.role, user.team_ids, user.display_name
    assert role is not None
    rows = conn.execute(
        "SELECT DISTINCT municipality_id FROM acute_teams WHERE id = ANY(%s)", (list(teams),)
    ).fetchall()
    return Principal(
        claims.sub,
        name,
        role,
        tuple(teams),
        tuple(sorted(r[0] for r in rows)),
        client_address(request),
    )


CurrentUser = Annotated[Principal, Depends(current_user)]
StreamingUser = Annotated[Principal, Depends(streaming_user)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency: the current user, if their role is one of ``roles`` (else a 403)."""

    def check(user: CurrentUser) -> Principal:
        if user.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"role {user.role.value!r} may not do this (allowed: {allowed})")
        return user

    return check


Clinician = Annotated[Principal, Depends(require(*CLINICAL))]
Physician = Annotated[Principal, Depends(require(Role.PHYSICIAN))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
