"""The one command-line entry point, ``vitalvagt``.

The core's own commands (stack, db, wire) are defined here; each component adds its
commands through a ``register_cli(subparsers)`` function in its ``cli`` module, imported
here by name so that the core never imports a component's code at module level.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vitalvagt.errors import ConfigError, VitalvagtError
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


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from vitalvagt.demo import run_demo

    return run_demo(settings, homes=args.homes, speed=args.speed, duration_s=args.duration_s,
                    history_days=args.history_days, api_port=args.api_port,
                    health_port=args.health_port)  # fmt: skip


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from vitalvagt.db.migrate import migrate
    from vitalvagt.endpoints import with_stack_defaults

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


def _split_listen(value: str, flag: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise VitalvagtError(f"{flag} {value!r}: expected HOST:PORT, e.g. 0.0.0.0:8883")
    return host, int(port)


def _broker_config(args: argparse.Namespace, settings: Settings) -> int:
    """Write mosquitto's files for a container deployment (gateways from the database)."""
    from vitalvagt.db.gateways import gateway_credential_hashes

    if settings.database_url is None or not settings.broker_service_passwords:
        raise VitalvagtError(
            "broker config needs VV_DATABASE_URL and VV_BROKER_SERVICE_PASSWORDS "
            '(JSON, e.g. {"vv-ingest": "...", "vv-api": "..."})'
        )
    gateways = gateway_credential_hashes(settings.database_url.get_secret_value())
    passwords = {u: p.get_secret_value() for u, p in settings.broker_service_passwords.items()}
    print(write_broker_config(args, passwords, gateways))
    return 0


def write_broker_config(
    args: argparse.Namespace, service_passwords: dict[str, str], gateway_hashes: dict[str, str]
) -> str:
    """The files of `broker config` from its parsed arguments; returns what was written."""
    import shutil

    from vitalvagt.broker import BrokerFiles, mosquitto_conf, write_broker_files
    from vitalvagt.tls import ensure_certificates, server_names
    from vitalvagt.tls_files import TlsFiles

    services_host, services_port = _split_listen(args.services_listen, "--services-listen")
    gateway_host, gateway_port = _split_listen(args.gateway_listen, "--gateway-listen")
    out: Path = args.out
    files = BrokerFiles(out)
    tls_out = out / "tls"
    tls_out.mkdir(parents=True, exist_ok=True)
    if args.cert or args.key:
        if not (args.cert and args.key):
            raise VitalvagtError("--cert and --key go together (the server's certificate chain"
                                 " and its private key)")
        certfile, keyfile, ca_note = args.cert, args.key, "the CA that signed --cert"
    else:
        tls = TlsFiles(ca_dir=args.ca_dir, server_dir=tls_out)
        names = server_names("127.0.0.1")
        names += [n for n in args.tls_name if n not in names]
        ensure_certificates(tls, names)
        shutil.copyfile(tls.ca_cert, tls_out / "ca.crt")  # for gateways; ca.key stays behind
        certfile, keyfile = tls.server_cert, tls.server_key
        ca_note = f"{tls_out / 'ca.crt'} (private CA; server certificate for {', '.join(names)})"
    conf = mosquitto_conf(
        files=files,
        services_host=services_host,
        services_port=services_port,
        gateway_host=gateway_host,
        gateway_port=gateway_port,
        certfile=certfile,
        keyfile=keyfile,
        pid_file=args.data_dir / "mosquitto.pid",
        data_dir=args.data_dir,
        log_file=args.log_file,
    )
    write_broker_files(
        files, conf=conf, service_passwords=service_passwords, gateway_hashes=gateway_hashes
    )
    return (
        f"wrote mosquitto.conf, ACLs and password files ({len(service_passwords)} services,"
        f" {len(gateway_hashes)} gateways) to {out}; services on {services_host}:{services_port}"
        f" (plaintext), gateways on {gateway_host}:{gateway_port} (TLS, CA: {ca_note})"
    )


def _admin_add_gateway(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from vitalvagt.db.gateways import provision_gateway
    from vitalvagt.endpoints import with_stack_defaults
    from vitalvagt.stack import Stack

    embedded = settings.database_url is None
    settings = with_stack_defaults(settings)
    if settings.database_url is None:
        raise VitalvagtError("no database: set VV_DATABASE_URL or run `vitalvagt stack up` first")
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        password = provision_gateway(conn, args.gateway_id, patient_id=args.patient)
    if embedded:
        Stack(settings).sync_broker_users()
    print(f"gateway {args.gateway_id}: MQTT user {args.gateway_id}, password {password}")
    print("the password is shown once; put it in the tablet's VV_MQTT_PASSWORD")
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
    p.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start (idempotent, also migrates); down: stop, keep data; status: what runs",
    )
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(handler=_stack)

    p = sub.add_parser(
        "demo",
        help="run the whole hub on the embedded stack with a simulated fleet",
        description="Start the embedded stack, then every built component (ingest, alerts, api) "
        "and a simulated fleet of homes, until Ctrl-C. Needs `make setup` only.",
    )
    p.add_argument("--homes", type=int, default=20, help="simulated homes (default 20)")
    p.add_argument("--speed", type=float, default=20160.0,
                   help="simulated seconds per real second (default 20160: the fleet's two weeks"
                   " of history in a minute, then real time)")
    p.add_argument("--history-days", type=int, default=14,
                   help="days of history the fleet replays first (default 14); then it goes on"
                   " in real time for a month")
    p.add_argument("--duration-s", type=float, default=None,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--api-port", type=int, default=8000,
                   help="the API's port (default 8000; a free one if it is taken)")
    p.add_argument("--health-port", type=int, default=9101,
                   help="ingest's /healthz and /metrics port (default 9101; a free one if taken)")
    p.set_defaults(handler=_demo)

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

    p = sub.add_parser(
        "broker",
        help="mosquitto configuration for container deployments",
        description="Write mosquitto.conf and, per listener, an ACL and a password file (service "
        "users from VV_BROKER_SERVICE_PASSWORDS on the plaintext services listener, gateways "
        "from VV_DATABASE_URL on the TLS gateway listener) into a directory, with a server "
        "certificate from a private CA made once in --ca-dir unless --cert/--key are given. "
        "The embedded stack writes its own; this is for docker-compose and other deployments.",
    )
    p.add_argument("action", choices=["config"])
    p.add_argument("--out", type=Path, required=True, help="directory for the files")
    p.add_argument(
        "--services-listen", "--listen", default="0.0.0.0:1883",
        help="the services' plaintext listener HOST:PORT (default 0.0.0.0:1883); never"
        " publish it outside the hub's own network",
    )  # fmt: skip
    p.add_argument(
        "--gateway-listen", default="0.0.0.0:8883",
        help="the gateways' TLS listener HOST:PORT (default 0.0.0.0:8883)",
    )  # fmt: skip
    p.add_argument(
        "--tls-name", action="append", default=[],
        help="a host name or IP address gateways connect to, for the generated server"
        " certificate (repeatable; localhost and 127.0.0.1 are always in it)",
    )  # fmt: skip
    p.add_argument(
        "--ca-dir", type=Path, default=Path("/vitalvagt/ca"),
        help="where the private CA (ca.key, ca.crt) is made once and kept; mosquitto never"
        " needs it (default /vitalvagt/ca)",
    )  # fmt: skip
    p.add_argument("--cert", type=Path, default=None,
                   help="use this server certificate (chain, PEM) instead of the private CA's")
    p.add_argument("--key", type=Path, default=None, help="the private key of --cert")
    p.add_argument("--data-dir", type=Path, default=Path("/mosquitto/data"), help="persistence dir")
    p.add_argument("--log-file", type=Path, default=Path("/mosquitto/log/mosquitto.log"))
    p.set_defaults(handler=_broker_config)

    p = sub.add_parser(
        "admin",
        help="provision gateways and other administration",
        description="Administration of the hub's database. Needs VV_DATABASE_URL or the "
        "embedded stack running.",
    )
    admin = p.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    a = admin.add_parser(
        "add-gateway",
        help="create a gateway (or give it a new password) and print its MQTT credentials",
        description="Create a gateway or re-key it. Prints the MQTT password once; only its hash "
        "is stored. On the embedded stack the broker is reloaded at once.",
    )
    a.add_argument("gateway_id", help="gateway id: 3-63 of a-z, 0-9 and '-', not starting with"
                   " 'vv-' (the service users' name space)")
    a.add_argument("--patient", default=None, help="pseudonymous id of the patient at home")
    a.set_defaults(handler=_admin_add_gateway)

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
    try:
        settings = load_settings()
        setup_logging("DEBUG" if args.verbose else settings.log_level)
        return int(args.handler(args, settings) or 0)
    except ConfigError as exc:
        # A usage error, like argparse's: the operator fixes a setting, nothing is retried.
        print(f"vitalvagt {args.command}: {exc}", file=sys.stderr)
        return 2
    except VitalvagtError as exc:
        print(f"vitalvagt {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
