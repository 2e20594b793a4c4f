"""``vitalvagt user add|list|disable``: the API's local users (api/users.py)."""

from __future__ import annotations

import argparse
import sys

from vitalvagt.endpoints import database_url
from vitalvagt.roles import Role
from vitalvagt.settings import Settings

# The commands import the database and the password hashing when they run: `vitalvagt`
# builds its parser on a tablet too, where neither is installed (tests/core/test_tablet_install.py).


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from api.users import add_user
    from vitalvagt.db.connect import connect

    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    with connect(database_url(settings)) as conn:
        user, password = add_user(
            conn,
            args.user_id,
            display_name=args.name or args.user_id,
            role=args.role,
            team_ids=args.team,
            password=password,
        )
    print(f"user {user.id}: {user.role.value} of {', '.join(user.team_ids)}")
    if not args.password_stdin:
        print(f"password (shown once): {password}")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from api.users import list_users
    from vitalvagt.db.connect import connect

    with connect(database_url(settings)) as conn:
        users = list_users(conn)
    for u in users:
        state = "active" if u.active else "disabled"
        print(f"{u.id}\t{u.role.value}\t{','.join(u.team_ids)}\t{state}\t{u.display_name}")
    return 0


def _disable(args: argparse.Namespace, settings: Settings) -> int:
    from api.users import disable_user
    from vitalvagt.db.connect import connect

    with connect(database_url(settings)) as conn:
        if not disable_user(conn, args.user_id):
            print(f"no active user {args.user_id!r}", file=sys.stderr)
            return 1
    print(f"user {args.user_id} disabled; their refresh tokens are revoked")
    return 0


def register_users_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "user",
        help="the clinician API's local users",
        description="Local users of the clinician API (the embedded default; a deployment with"
        " an OpenID Connect provider needs none). Passwords are stored as Argon2 hashes.",
    )
    cmds = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    a = cmds.add_parser(
        "add",
        help="add a user",
        description="Add a user; prints a generated"
        " password once, or reads one line from stdin (--password-stdin).",
    )
    a.add_argument("user_id", help="login name: lower-case letters, digits, . _ -")
    a.add_argument("--name", help="display name (default: the login name)")
    a.add_argument("--role", required=True, choices=[r.value for r in Role])
    a.add_argument(
        "--team",
        action="append",
        required=True,
        help="an acute team id (repeat for several): the user's scope",
    )
    a.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (at least 12 characters) from stdin",
    )
    a.set_defaults(handler=_add)
    ls = cmds.add_parser("list", help="list users", description="List users, one a line.")
    ls.set_defaults(handler=_list)
    d = cmds.add_parser(
        "disable",
        help="disable a user",
        description="Disable a user; their tokens stop working at once.",
    )
    d.add_argument("user_id")
    d.set_defaults(handler=_disable)
