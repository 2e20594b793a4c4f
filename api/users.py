"""Local users of the clinician API (the ``users`` table): add, list, disable, check a password.

Passwords are hashed with Argon2id through pwdlib; a user's teams (``acute_teams`` ids) give
their scope, and the teams' municipalities with it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cache

import psycopg
from pwdlib import PasswordHash

from api.errors import ApiError
from vitalvagt.roles import Role

USER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
_HASHER = PasswordHash.recommended()


@cache
def _dummy_hash() -> str:
    """Checked against when the user does not exist, so that a login takes as long either
    way; made on first use (an Argon2 hash costs a quarter of a second to make)."""
    return _HASHER.hash("not a password of anyone")




class UserError(ApiError):
    """A user that cannot be added or changed as asked."""

    status = 422
    title = "invalid user"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    display_name: str
    role: Role
    team_ids: tuple[str, ...]
    active: bool


def _user(row: tuple) -> User:
    return User(row[0], row[1], Role(row[2]), tuple(row[3]), row[4])


_COLUMNS = "id, display_name, role::text, team_ids, active"


def add_user(
    conn: psycopg.Connection,
    user_id: str,
    *,
    display_name: str,
    role: Role | str,
    team_ids: list[str],
    password: str | None = None,
) -> tuple[User, str]:
    """Create a user; returns it and the password (generated when none was given)."""
    if not USER_ID.match(user_id):
        raise UserError(f"user id {user_id[:70]!r}: lower-case letters, digits, . _ - (2-63)")
    try:
        role = Role(role)
    except ValueError:
        raise UserError(f"role {role!r}: one of {', '.join(r.value for r in Role)}") from None
    if password is not None and len(password) < 12:
        raise UserError("password: at least 12 characters")
    known = {
        r[0]
        for r in conn.execute(
            "SELECT id FROM acute_teams WHERE id = ANY(%s)", (team_ids,)
        ).fetchall()
    }
    if unknown := sorted(set(team_ids) - known):
        raise UserError(f"unknown team(s): {', '.join(unknown)}")
    if not team_ids:
        raise UserError("a user needs at least one team (their scope)")
    password = password or secrets.token_urlsafe(15)
    try:
        row = conn.execute(
            "INSERT INTO users (id, display_name, role, team_ids, password_hash)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (user_id, display_name, role.value, team_ids, _HASHER.hash(password)),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise UserError(f"user {user_id!r} exists already") from None
    assert row is not None
    return _user(row), password


def list_users(conn: psycopg.Connection) -> list[User]:
    return [_user(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM users ORDER BY id")]


def get_user(conn: psycopg.Connection, user_id: str) -> User | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM users WHERE id = %s", (user_id,)).fetchone()
    return _user(row) if row else None


def disable_user(conn: psycopg.Connection, user_id: str) -> bool:
    """Switch a user off; their refresh tokens are revoked (access tokens lapse in minutes,
    and every request checks that the user is still active)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE users SET active = false, disabled_at = now() WHERE id = %s AND active"
            " RETURNING id",
            (user_id,),
        ).fetchone()
        conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = %s"
            " AND revoked_at IS NULL",
            (user_id,),
        )
    return row is not None


def check_password(conn: psycopg.Connection, user_id: str, password: str) -> User | None:
    """The active user with this password, or None (the same work when no such user)."""
    row = conn.execute(
        f"SELECT {_COLUMNS}, password_hash FROM users WHERE id = %s", (user_id[:100],)
    ).fetchone()
    if row is None:
        _HASHER.verify(password, _dummy_hash())
        return None
    valid, new_hash = _HASHER.verify_and_update(password, row[5])
    if not valid or not row[4]:
        return None
    if new_hash:
        conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (new_hash, row[0]))
    return _user(row[:5])
