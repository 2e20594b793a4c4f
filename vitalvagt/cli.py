"""The one command-line entry point, ``vitalvagt``.

The core's own commands (stack, db, wire) are defined here; each component adds its
commands through a ``register_cli(subparsers)`` function in its ``cli`` module, imported
here by name so that the core never imports a component's code at module level.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vitalvagt.errors import VitalvagtError
from vitalvagt.logs import setup_logging
from vitalvagt.settings import Settings, load_settings

COMPONENT_CLIS = ("gateway.cli", "ingest.cli", "alerts.cli", "api.cli", "simulator.cli")

Handler = Callable[[argparse.Namespace, Settings], int]


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from vitalvagt.stack import Stack, describe

    stack = Stack(settings)
    if args.action == "up":
        stack.up()
        print("stack is up")
        print(describe(stack.status()))
    elif args.action == "down":
        stack.down()
        print(f"stack is down; data kept in {stack.paths.root}")
    else:
        status = stack.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print(describe(status))
        pg = status["postgresql"]
        mq = status["mosquitto"]
        running = isinstance(pg, dict) and isinstance(mq, dict) and pg["running"] and mq["running"]
        return 0 if running else 3
    return 0


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from vitalvagt.db.migrate import migrate
    from vitalvagt.stack import with_stack_defaults

    settings = with_stack_defaults(settings)
    if settings.database_url is None:
        raise VitalvagtError("no database: set VV_DATABASE_URL or run `vitalvagt stack up` first")
    applied = migrate(settings.database_url.get_secret_value())
    print(f"applied migrations: {applied}" if applied else "database schema is up to date")
    return 0


def _wire_schema(args: argparse.Namespace, settings: Settings) -> int:
    from vitalvagt.wire import json_schemas

    schemas = json_schemas()
    if args.out is None:
        print(json.dumps(schemas, indent=2))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (args.out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        print(f"wrote {args.out / name}.schema.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitalvagt",
        description="Vitalvagt: telemedicine home-monitoring hub for COPD and heart failure. "
        "Settings come from VV_* environment variables (docs/operations.md); the embedded "
        "default needs none.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "stack",
        help="run the embedded PostgreSQL+TimescaleDB and mosquitto",
        description="Start, stop or describe the embedded stack: a private PostgreSQL 15 cluster "
        "with TimescaleDB and a mosquitto broker, state under VV_STATE_DIR (default .vv/). "
        "Needs `make setup` to have installed PostgreSQL 15, TimescaleDB and mosquitto.",
    )
    p.add_argument("action", choices=["up", "down", "status"],
                   help="up: start (idempotent, also migrates); down: stop, keep data; status: what runs")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(handler=_stack)

    p = sub.add_parser(
        "db",
        help="database schema migrations",
        description="Apply the schema migrations to VV_DATABASE_URL (default: the embedded "
        "stack's database). Running it again changes nothing.",
    )
    p.add_argument("action", choices=["migrate"])
    p.set_defaults(handler=_db)

    p = sub.add_parser(
        "wire",
        help="the MQTT wire format's JSON Schemas",
        description="Print or write the JSON Schemas of the MQTT payloads (wire format v1). "
        "Needs nothing running.",
    )
    p.add_argument("action", choices=["schema"])
    p.add_argument("--out", type=Path, default=None, help="directory to write *.schema.json into")
    p.set_defaults(handler=_wire_schema)

    for name in COMPONENT_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name in (name, name.split(".")[0]):
                continue  # component not built (yet) or not installed on this machine
            raise
        module.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    setup_logging("DEBUG" if args.verbose else settings.log_level)
    try:
        return int(args.handler(args, settings) or 0)
    except VitalvagtError as exc:
        print(f"vitalvagt {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
