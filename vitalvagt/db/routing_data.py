"""What routing reads from the database: the teams, a patient's doctors; and the routing of
an alert "now" (what the API shows when a nurse opens an alert; vitalvagt/routing.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from vitalvagt.routing import LOCAL, Contact, PatientCare, Routing, Team, route

TEAM_COLUMNS = (
    "id, name, phone, coverage_start, coverage_end, coverage_days, handover_team_id,"
    " escalation_team_id, lead_name, lead_phone, red_ack_deadline, yellow_ack_deadline"
)


def _team(row: tuple[Any, ...]) -> Team:
    (tid, name, phone, start, end, days, handover, escalation, lead, lead_phone, red,
     yellow) = row  # fmt: skip
    return Team(id=tid, name=name, phone=phone, coverage_start=start, coverage_end=end,
                coverage_days=tuple(days), handover_team_id=handover,
                escalation_team_id=escalation, lead_name=lead, lead_phone=lead_phone,
                red_deadline=red, yellow_deadline=yellow)  # fmt: skip


def load_teams(conn: psycopg.Connection) -> dict[str, Team]:
    """Every team (a deployment has tens): handover chains may cross municipalities."""
    rows = conn.execute(f"SELECT {TEAM_COLUMNS} FROM acute_teams").fetchall()
    return {r[0]: _team(r) for r in rows}


# A patient's care: the doctors and the vagtlæge of the patient's municipality (else region).
_CARE_SQL = (
    "SELECT p.id, p.team_id, p.municipality_id, p.gp_name, p.gp_phone, p.hospital_name,"
    " p.hospital_phone, p.hospital_responsible_until,"
    " coalesce(om.name, orr.name), coalesce(om.phone, orr.phone)"
    " FROM patients p JOIN municipalities m ON m.id = p.municipality_id"
    " LEFT JOIN out_of_hours_contacts om ON om.municipality_id = m.id"
    " LEFT JOIN out_of_hours_contacts orr ON orr.region = m.region"
)


def _care(row: tuple[Any, ...]) -> PatientCare:
    pid, team, muni, gp_name, gp_phone, h_name, h_phone, h_until, o_name, o_phone = row
    ooh = Contact(o_name, o_phone) if o_name or o_phone else None
    return PatientCare(patient_id=pid, team_id=team, municipality_id=muni,
                       gp=Contact(gp_name, gp_phone), out_of_hours=ooh,
                       hospital=Contact(h_name, h_phone),
                       hospital_responsible_until=h_until)  # fmt: skip


def load_care(conn: psycopg.Connection, patient_id: str) -> PatientCare | None:
    row = conn.execute(_CARE_SQL + " WHERE p.id = %s", (patient_id,)).fetchone()
    return _care(row) if row is not None else None


def load_cares(conn: psycopg.Connection, patient_ids: Iterable[str]) -> dict[str, PatientCare]:
    """``load_care`` of many patients in one query, by patient id (the API's alert list has
    hundreds of alerts: one query, not one per alert). Unknown ids are left out."""
    rows = conn.execute(_CARE_SQL + " WHERE p.id = ANY(%s)", (sorted(set(patient_ids)),))
    return {row[0]: _care(row) for row in rows.fetchall()}


def routing_now(
    conn: psycopg.Connection, alert_id: int, now: datetime, zone: ZoneInfo = LOCAL
) -> Routing | None:
    """The routing of alert ``alert_id`` anew at ``now`` (None when there is no such alert).
    The routing as it was when the alert opened is the alert's ``routing`` column."""
    row = conn.execute("SELECT patient_id FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    if row is None:
        return None
    care = load_care(conn, row[0])
    if care is None:
        return None
    return route(care, load_teams(conn), now, zone)
