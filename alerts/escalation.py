"""Escalation: an alert nobody acknowledges in time goes up a level.

Levels: 0 the team the alert was routed to (``alerts.routed_team_id``, else the patient's
team); 1 that team's lead (``acute_teams.lead_name`` / ``lead_phone``); 2 its escalation team
(``escalation_team_id``; without one the chain ends at level 1). A red alert escalates when it
has stayed open and unacknowledged for the team's ``red_ack_deadline`` (default 15 minutes), a
yellow one after ``yellow_ack_deadline`` (default 2 hours); blue (missed) alerts and quality
notices never do.

The clock counts from the latest of: the alert's ``opened_at``, the previous step's due time
(``escalated_at``) and the end of its last snooze (``escalation_resumed_at``, set by a
trigger when a snoozed alert opens again: a snooze pauses the chain). All three are in the
database, so a sweep after a restart in the middle of a deadline escalates exactly when it
would have; a sweep that comes late takes every step that fell due, each at its own due time.
Acknowledging (or resolving) stops the chain: only alerts in state ``open`` escalate. A
severity raised while open keeps the clock: the red deadline then counts from the same start.

Each step is a transition (``reason = 'escalated'``, the note naming the level and whom to
call; the state stays as it is), so it reaches the API's live stream and the webhooks as its
own notification.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg

from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.db.routing_data import load_teams
from vitalvagt.routing import Team

log = logging.getLogger(__name__)

MAX_LEVEL = 2
BATCH = 200


@dataclass(frozen=True, slots=True)
class Step:
    level: int
    due: datetime
    note: str


def clock_start(opened_at: datetime, escalated_at: datetime | None,
                resumed_at: datetime | None) -> datetime:  # fmt: skip
    """Where the current deadline counts from."""
    return max(t for t in (opened_at, escalated_at, resumed_at) if t is not None)


def _who(name: str | None, phone: str | None) -> str:
    parts = [p for p in (name, f"tel. {phone}" if phone else None) if p]
    return f" ({', '.join(parts)})" if parts else ""


def next_step(severity: str, level: int, start: datetime, team: Team,
              teams: dict[str, Team]) -> Step | None:  # fmt: skip
    """The next step of the chain and when it falls due, or None when the chain has ended."""
    deadline = team.deadline(severity)
    if deadline is None or level >= MAX_LEVEL:
        return None
    due = start + deadline
    if level == 0:
        return Step(1, due, f"level 1: team lead of {team.name}"
                            f"{_who(team.lead_name, team.lead_phone or team.phone)}")
    target = teams.get(team.escalation_team_id or "")
    if target is None:
        return None
    return Step(2, due, f"level 2: escalation team {target.name}{_who(None, target.phone)}")


def steps_due(severity: str, level: int, start: datetime, team: Team, teams: dict[str, Team],
              now: datetime) -> list[Step]:  # fmt: skip
    """Every step due at ``now`` (more than one when the sweep comes late), in order."""
    out = []
    while (step := next_step(severity, level, start, team, teams)) is not None and step.due <= now:
        out.append(step)
        level, start = step.level, step.due
    return out


def sweep(conn: psycopg.Connection, *, now: datetime, limit: int = BATCH) -> list[tuple[int, int]]:
    """Escalate every open alert whose deadline has passed at ``now``; returns the steps taken
    as (alert id, level). Two services may sweep: ``SKIP LOCKED`` shares the alerts, and the
    level on the row says which step is next, so no step is taken twice."""
    taken: list[tuple[int, int]] = []
    with conn.transaction():
        rows = conn.execute(
            "SELECT a.id, a.severity, a.escalation_level, a.opened_at, a.escalated_at,"
            " a.escalation_resumed_at, t.id FROM alerts a"
            " JOIN acute_teams t ON t.id = coalesce(a.routed_team_id, a.team_id)"
            " WHERE a.state = 'open' AND a.severity IN ('red', 'yellow')"
            " AND a.category <> 'quality' AND a.escalation_level < %s"
            " AND greatest(a.opened_at, a.escalated_at, a.escalation_resumed_at)"
            "  + CASE a.severity WHEN 'red' THEN t.red_ack_deadline"
            "    ELSE t.yellow_ack_deadline END <= %s"
            " ORDER BY a.id LIMIT %s FOR UPDATE OF a SKIP LOCKED",
            (MAX_LEVEL, now, limit),
        ).fetchall()
        if not rows:
            return taken
        teams = load_teams(conn)
        for alert_id, severity, level, opened_at, escalated_at, resumed_at, team_id in rows:
            start = clock_start(opened_at, escalated_at, resumed_at)
            steps = steps_due(severity, level, start, teams[team_id], teams, now)
            for step in steps:
                lifecycle.record(conn, alert_id, "open", "open", by=lifecycle.ENGINE,
                                 reason="escalated", note=step.note)  # fmt: skip
                taken.append((alert_id, step.level))
                log.warning("alert %d: escalated to %s (due %s)", alert_id, step.note,
                            step.due.isoformat())  # fmt: skip
            if steps:
                conn.execute(
                    "UPDATE alerts SET escalation_level = %s, escalated_at = %s WHERE id = %s",
                    (steps[-1].level, steps[-1].due, alert_id),
                )
    return taken
