"""`vitalvagt api ...` commands."""

from __future__ import annotations

import argparse

from vitalvagt.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from vitalvagt.endpoints import database_url

    uvicorn.run(
        create_app(database_url(settings)),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
    )
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "api",
        help="the clinician API (FastAPI)",
        description="The clinician API: patients, readings, trends and dead letters, with an "
        "audit log of who read what. Needs the database (the embedded stack or VV_DATABASE_URL).",
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
