"""Routing job: store on each new alert who answers it, as it was when the alert opened.

The pure routing (team coverage, handover, the responsible doctor) is in the core,
``vitalvagt.routing``, because the API shows the routing anew when a nurse opens an alert and
the API does not import ``alerts/`` (``vitalvagt.db.routing_data.routing_now``). This module
is the scheduled job (``alerts/delivery_jobs.py`` runs it every second): it takes the active
alerts without routing, computes the routing at the alert's ``opened_at``, and writes
``alerts.routing``, ``routed_team_id`` and ``routed_at`` in one transaction. It also stores the
early-warning scores (NEWS2 and TOBS from the latest reliable home readings of the two hours
up to the alert's reading, missing parameters named) for the ISBAR handover
(``vitalvagt.isbar``), which cannot compute them itself.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from alerts.scores import news2, tobs
from vitalvagt.db.routing_data import load_care, load_teams
from vitalvagt.quality import UNRELIABLE
from vitalvagt.routing import LOCAL, Routing, route

log = logging.getLogger(__name__)

BATCH = 200
SCORE_SESSION = timedelta(hours=2)  # as the score rules (alerts/ruleset.py, ScoreRule)
SCORE_KINDS = ("spo2", "pulse", "bp_systolic", "temperature", "respiratory_rate")
UNRELIABLE_FLAGS = sorted(f.value for f in UNRELIABLE)
TEMPERATURE_SITE = "tympanum"  # the home thermometers' site, as the TOBS rule assumes


def scores_at(conn: psycopg.Connection, patient_id: str, at: datetime, *, scale2: bool,
              on_oxygen: bool) -> dict[str, Any]:  # fmt: skip
    """NEWS2 and TOBS from the latest reliable reading of each parameter in the session up to
    ``at``, with the parameters present, their points and those missing."""
    rows = conn.execute(
        "SELECT DISTINCT ON (kind) kind, value, measured_at FROM observations"
        " WHERE patient_id = %s AND kind = ANY(%s) AND measured_at > %s AND measured_at <= %s"
        " AND NOT (flags && %s::text[]) ORDER BY kind, measured_at DESC",
        (patient_id, list(SCORE_KINDS), at - SCORE_SESSION, at, UNRELIABLE_FLAGS),
    ).fetchall()
    values = {kind: float(value) for kind, value, _ in rows}
    out: dict[str, Any] = {"at": at.isoformat(), "values": values}
    for sc in (news2(values, scale2=scale2, on_oxygen=on_oxygen),
               tobs(values, temperature_site=TEMPERATURE_SITE)):  # fmt: skip
        out[sc.name.lower()] = {"total": sc.total, "points": sc.points,
                                "missing": list(sc.missing)}  # fmt: skip
    return out


def route_pending(conn: psycopg.Connection, *, zone: ZoneInfo = LOCAL, limit: int = BATCH) -> int:
    """Route up to ``limit`` active alerts that have no routing yet; returns how many.
    Two services may run it: ``SKIP LOCKED`` shares the alerts, none is routed twice."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT a.id, a.patient_id, a.opened_at, a.measured_at, p.spo2_scale2, p.on_oxygen"
            " FROM alerts a JOIN patients p ON p.id = a.patient_id"
            " WHERE a.routing IS NULL AND a.state <> 'resolved'"
            " ORDER BY a.id LIMIT %s FOR UPDATE OF a SKIP LOCKED",
            (limit,),
        ).fetchall()
        if not rows:
            return 0
        teams = load_teams(conn)
        for alert_id, patient_id, opened_at, measured_at, scale2, oxygen in rows:
            care = load_care(conn, patient_id)
            if care is None or care.team_id not in teams:
                continue
            routing: Routing = route(care, teams, opened_at, zone)
            scores = scores_at(conn, patient_id, measured_at or opened_at, scale2=scale2,
                               on_oxygen=oxygen)  # fmt: skip
            conn.execute(
                "UPDATE alerts SET routing = %s, routed_team_id = %s, routed_at = now(),"
                " scores = %s WHERE id = %s",
                (json.dumps(routing.to_json()), routing.team.id, json.dumps(scores), alert_id),
            )
            log.info("alert %d: routed to team %s (%s), doctor %s", alert_id, routing.team.id,
                     routing.team_reason.value, routing.doctor.role.value)  # fmt: skip
    return len(rows)
