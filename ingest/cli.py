"""`vitalvagt ingest ...` commands."""

from __future__ import annotations

import argparse
import json
import logging
import signal

from vitalvagt.settings import Settings

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.errors import IngestError
    from ingest.metrics import serve_health
    from ingest.rollups import start_jobs
    from ingest.service import IngestConfig, IngestService
    from vitalvagt.endpoints import database_url, mqtt_endpoint
    from vitalvagt.wire import MAX_AGE

    ep = mqtt_endpoint(settings, "vv-ingest")
    config = IngestConfig(
        database_url=database_url(settings), mqtt_host=ep.host, mqtt_port=ep.port,
        mqtt_username=ep.username, mqtt_password=ep.password, tls_ca=ep.tls_ca,
        client_id=f"vv-ingest-{args.instance}", batch_max_rows=args.batch_rows,
        batch_max_age_s=args.batch_age_ms / 1000, receive_maximum=args.receive_maximum,
        end_session_on_stop=args.end_session_on_exit,
    )  # fmt: skip
    if args.retention_days <= MAX_AGE.days:
        raise IngestError(
            f"--retention-days {args.retention_days} must exceed the {MAX_AGE.days} days of the"
            " oldest reading ingest accepts, or accepted readings would be deleted unseen"
        )
    service = IngestService(config)
    server = (
        serve_health(settings.host, args.health_port, service.metrics, service.health)
        if args.health_port
        else None
    )
    jobs = (
        start_jobs(
            config.database_url,
            retention_days=args.retention_days,
            rollup_interval_s=args.rollup_interval_s,
        )
        if not args.no_jobs
        else None
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop())
    log.info("ingest %s: starting (health on %s)", config.client_id, args.health_port or "off")
    try:
        service.run()
    except Exception as exc:
        # Any end but a signal is an error: say why, exit non-zero (the service manager
        # restarts us; unacknowledged messages come again).
        log.error("ingest %s: stopped: %s: %s", config.client_id, type(exc).__name__, exc)
        raise IngestError(f"ingest stopped: {type(exc).__name__}: {exc}") from exc
    finally:
        if jobs:
            jobs.shutdown(wait=False)
        if server:
            server.shutdown()
    return 0


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from ingest.deadletters import list_dead_letters, replay
    from vitalvagt.endpoints import database_url

    url = database_url(settings)
    if args.action == "list":
        with psycopg.connect(url) as conn:
            letters = list_dead_letters(conn, include_replayed=args.all, limit=args.limit)
        for d in letters:
            print(json.dumps({
                "id": d.id, "received_at": d.received_at.isoformat(), "topic": d.topic,
                "gateway_id": d.gateway_id, "code": d.code, "reason": d.reason, "bytes": d.size,
                "replayed_at": d.replayed_at.isoformat() if d.replayed_at else None,
                "replay_result": d.replay_result,
            }))  # fmt: skip
        if not letters:
            print("no dead letters" + ("" if args.all else " waiting for replay"))
        return 0
    outcomes = replay(url, ids=args.id or None)
    for o in outcomes:
        print(f"dead letter {o.id}: {o.detail}")
    stored = sum(o.stored for o in outcomes)
    print(f"replayed {len(outcomes)}: {stored} stored, {len(outcomes) - stored} still refused")
    return 0 if stored == len(outcomes) else 4


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="MQTT to TimescaleDB: store every reading exactly once",
        description="Ingest: subscribe to the gateways' observations, validate them, store each "
        "reading once in TimescaleDB and keep every refused message as a dead letter. Needs the "
        "database and the broker (the embedded stack, or VV_DATABASE_URL and VV_MQTT_*).",
    )
    cmds = p.add_subparsers(dest="ingest_command", required=True, metavar="ACTION")
    r = cmds.add_parser(
        "run", help="run the ingest service until stopped",
        description="Run ingest: shared MQTT subscription $share/ingest/vv/v1/gw/+/obs, "
        "acknowledged only after the database commit; roll-up and retention jobs.",
    )  # fmt: skip
    r.add_argument(
        "--instance",
        default="1",
        help="instance name; keep it stable across restarts (persistent session)",
    )
    r.add_argument("--batch-rows", type=int, default=5000, help="readings per transaction (max)")
    r.add_argument("--batch-age-ms", type=float, default=50, help="longest wait to fill a batch")
    r.add_argument(
        "--receive-maximum",
        type=int,
        default=1000,
        help="unacknowledged messages the broker may send (bounds memory)",
    )
    r.add_argument(
        "--health-port", type=int, default=9101, help="port for /healthz and /metrics (0: off)"
    )
    r.add_argument("--retention-days", type=int, default=730, help="raw readings kept (days)")
    r.add_argument("--rollup-interval-s", type=float, default=60, help="roll-up refresh period")
    r.add_argument(
        "--end-session-on-exit",
        action="store_true",
        help="end the broker session on a clean exit (an instance being retired)",
    )
    r.add_argument("--no-jobs", action="store_true", help="no roll-up and retention jobs here")
    r.set_defaults(handler=_run)
    d = cmds.add_parser(
        "dead-letters", help="list or replay refused messages",
        description="List the refused messages with their reasons, or replay them after the "
        "cause was fixed (for example after registering the gateway). Needs the database.",
    )  # fmt: skip
    d.add_argument("action", choices=["list", "replay"])
    d.add_argument("--id", type=int, action="append", help="only this dead letter (repeatable)")
    d.add_argument("--all", action="store_true", help="list: include replayed ones")
    d.add_argument("--limit", type=int, default=100, help="list: at most this many")
    d.set_defaults(handler=_dead_letters)
