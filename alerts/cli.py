"""`vitalvagt alerts ...` commands."""

from __future__ import annotations

import argparse
import json
import signal
from datetime import UTC, datetime, timedelta

from vitalvagt.settings import Settings


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.ruleset import RULESETS
    from alerts.service import AlertService
    from vitalvagt.endpoints import database_url

    service = AlertService(database_url(settings), missed_hours=args.missed_hours,
                           missed_every_s=args.missed_every_s,
                           ruleset=RULESETS[args.rules])  # fmt: skip
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop())
    service.run()
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from vitalvagt.endpoints import database_url

    with psycopg.connect(database_url(settings)) as conn:
        rows = conn.execute(
            "SELECT id, patient_id, team_id, severity, state::text, rule, message, opened_at,"
            " trigger_count FROM alerts WHERE (%s OR state <> 'resolved')"
            " AND (%s::text IS NULL OR team_id = %s)"
            " ORDER BY CASE severity WHEN 'red' THEN 0 WHEN 'yellow' THEN 1 ELSE 2 END, opened_at",
            (args.all, args.team, args.team),
        ).fetchall()
    keys = ("id", "patient_id", "team_id", "severity", "state", "rule", "message", "opened_at",
            "trigger_count")  # fmt: skip
    for r in rows:
        print(json.dumps(dict(zip(keys, r, strict=True)), default=str))
    if not rows:
        print("no active alerts")
    return 0


def _change(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from alerts.errors import AlertNotFound
    from vitalvagt.db.alert_lifecycle import acknowledge, resolve, snooze
    from vitalvagt.endpoints import database_url

    with psycopg.connect(database_url(settings), autocommit=True) as conn:
        if args.alerts_command == "snooze":
            until = datetime.now(UTC) + timedelta(minutes=args.minutes)
            done = snooze(conn, args.alert_id, by=args.by, until=until, note=args.note)
        else:
            fn = acknowledge if args.alerts_command == "ack" else resolve
            done = fn(conn, args.alert_id, by=args.by, note=args.note)
        if not done:
            raise AlertNotFound(args.alert_id, args.alerts_command)
        conn.execute("INSERT INTO audit_log (actor, action, detail) VALUES (%s, %s, %s)",
                     (args.by, f"{args.alerts_command}_alert",
                      json.dumps({"alert": args.alert_id})))  # fmt: skip
    print(f"alert {args.alert_id}: {args.alerts_command} by {args.by}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    from alerts.evaluate_cli import register as register_evaluate

    register_evaluate(sub)  # `vitalvagt evaluate`, a top-level command
    p = sub.add_parser(
        "alerts", help="the alert engine: limits, missed measurements, life cycle",
        description="Alerts for the acute teams: readings beyond the patient's limits (red, "
        "yellow) and missed measurements (blue), one active alert per patient and rule. Needs "
        "the database (the embedded stack or VV_DATABASE_URL).",
    )  # fmt: skip
    cmds = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    r = cmds.add_parser("run", help="run the engine until stopped",
                        description="LISTEN for new readings from ingest and evaluate those "
                        "patients; check for missed measurements periodically.")  # fmt: skip
    r.add_argument("--missed-hours", type=float, default=36, help="silence that opens a blue alert")
    r.add_argument("--missed-every-s", type=float, default=300, help="missed-check period")
    r.add_argument("--rules", choices=["full", "guideline"], default="full",
                   help="the rule set (docs/clinical-rules.md): full (default: limits with"
                   " persistence, personal trends, weight, NEWS2/TOBS, quality) or guideline"
                   " (each reading against the group's fixed limits)")
    r.set_defaults(handler=_run)
    ls = cmds.add_parser(
        "list",
        help="active alerts, most severe first",
        description="List alerts as JSON lines, red first.",
    )
    ls.add_argument("--team", default=None, help="only this acute team")
    ls.add_argument("--all", action="store_true", help="include resolved alerts")
    ls.set_defaults(handler=_list)
    for name, text in (("ack", "acknowledge an open or snoozed alert"),
                       ("snooze", "snooze an alert: no alert or notification until then"),
                       ("resolve", "resolve an alert")):  # fmt: skip
        c = cmds.add_parser(name, help=text, description=f"{text.capitalize()}; audit-logged.")
        c.add_argument("alert_id", type=int)
        c.add_argument("--by", required=True, help="who (staff id)")
        c.add_argument("--note", default=None, help="what was done, or why")
        if name == "snooze":
            c.add_argument("--minutes", type=float, required=True,
                           help="how long; then the alert is open again")  # fmt: skip
        c.set_defaults(handler=_change)
