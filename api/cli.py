"""`vitalvagt api ...` commands."""

from __future__ import annotations

import argparse

from vitalvagt.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from api.config import api_config
    from vitalvagt.endpoints import database_url

    hook = None
    if settings.database_url is None:  # the embedded stack: its broker's password file
        from vitalvagt.stack import Stack

        hook = Stack(settings).sync_broker_users
    uvicorn.run(
        create_app(database_url(settings), config=api_config(settings), on_gateways_changed=hook),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
    )
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    from api.users_cli import register_users_cli

    register_users_cli(sub)
    p = sub.add_parser(
        "api",
        help="the clinician API (FastAPI)",
        description="The clinician API: alerts, patients, readings, trends, gateways and "
        "dead letters, with bearer tokens and an audit log of who read what (docs/api.md). "
        "Needs the database (the embedded stack or VV_DATABASE_URL).",
    )
    cmds = p.add_subparsers(dest="api_command", required=True, metavar="ACTION")
    s = cmds.add_parser(
        "serve",
        help="serve the API over HTTP",
        description="Serve the API with uvicorn until stopped.",
    )
    s.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.set_defaults(handler=_serve)
