"""What an ISBAR handover of one alert needs, read from the database (vitalvagt/isbar.py
writes the text). The API calls ``isbar_text``; the routing is shown as it is ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from vitalvagt.db.routing_data import routing_now
from vitalvagt.isbar import LOCAL, DayMean, IsbarData, PastAlert, isbar
from vitalvagt.quality import UNRELIABLE

BASELINE_FROM = timedelta(days=35)  # as the rules' baseline window: 28 days ending 7 days back
BASELINE_TO = timedelta(days=7)
TREND_DAYS = 3
RECENT = timedelta(days=14)
_UNRELIABLE = sorted(f.value for f in UNRELIABLE)
_KINDS = ["spo2", "pulse", "weight", "temperature", "bp_systolic"]


def load(conn: psycopg.Connection, alert_id: int, *, now: datetime,
         zone: ZoneInfo = LOCAL) -> IsbarData | None:  # fmt: skip
    row = conn.execute(
        "SELECT a.patient_id, p.patient_group::text, a.rule, a.severity, a.state::text,"
        " a.category, a.kind, a.value, a.measured_at, a.opened_at, a.message, a.details,"
        " a.scores, a.routing, t.name, t.phone FROM alerts a JOIN patients p ON p.id = a.patient_id"
        " JOIN acute_teams t ON t.id = coalesce(a.routed_team_id, a.team_id) WHERE a.id = %s",
        (alert_id,),
    ).fetchone()
    if row is None:
        return None
    (pid, group, rule, severity, state, category, kind, value, measured_at, opened_at, message,
     details, scores, stored, team_name, team_phone) = row  # fmt: skip
    current = routing_now(conn, alert_id, now, zone)
    if current is not None:
        doctor = current.to_json()["doctor"]
        team_name, team_phone = current.team.name, current.team.phone
    else:
        doctor = (stored or {}).get("doctor", {})
    ref = measured_at or opened_at
    escalations = tuple(n for (n,) in conn.execute(
        "SELECT note FROM alert_transitions WHERE alert_id = %s AND reason = 'escalated'"
        " ORDER BY id", (alert_id,)).fetchall())  # fmt: skip
    baseline = dict(conn.execute(
        "SELECT kind, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) FROM observations"
        " WHERE patient_id = %s AND kind = ANY(%s) AND measured_at >= %s AND measured_at < %s"
        " AND NOT (flags && %s::text[]) GROUP BY kind",
        (pid, _KINDS, ref - BASELINE_FROM, ref - BASELINE_TO, _UNRELIABLE)).fetchall())
    local_day = (ref.astimezone(zone) - timedelta(days=TREND_DAYS - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    days = tuple(DayMean(k, d, float(m)) for k, d, m in conn.execute(
        "SELECT kind, (measured_at AT TIME ZONE %s)::date AS day, avg(value) FROM observations"
        " WHERE patient_id = %s AND kind = ANY(%s) AND measured_at >= %s AND measured_at <= %s"
        " AND NOT (flags && %s::text[]) GROUP BY kind, day ORDER BY kind, day",
        (zone.key, pid, _KINDS, local_day, ref, _UNRELIABLE)).fetchall())  # fmt: skip
    recent = tuple(PastAlert(*r) for r in conn.execute(
        "SELECT opened_at, rule, severity FROM alerts WHERE patient_id = %s AND id <> %s"
        " AND opened_at >= %s AND opened_at <= %s ORDER BY opened_at DESC LIMIT 5",
        (pid, alert_id, ref - RECENT, opened_at)).fetchall())  # fmt: skip
    return IsbarData(
        alert_id=alert_id, patient_id=pid, group=group, team_name=team_name,
        team_phone=team_phone, doctor=doctor, rule=rule, severity=severity, state=state,
        category=category, kind=kind, value=value, measured_at=measured_at, opened_at=opened_at,
        message=message, details=details or {}, scores=scores, escalations=escalations,
        baseline={k: float(v) for k, v in baseline.items()}, days=days, recent=recent,
    )  # fmt: skip


def isbar_text(conn: psycopg.Connection, alert_id: int, *, now: datetime, lang: str = "da",
               zone: ZoneInfo = LOCAL) -> str | None:  # fmt: skip
    """The ISBAR handover of alert ``alert_id`` as text (None: no such alert)."""
    data = load(conn, alert_id, now=now, zone=zone)
    return isbar(data, lang, zone).text() if data is not None else None
