"""Shared set-up for the routing, escalation, ISBAR and webhook tests (issue 12): a
municipality with a day team, the cluster's night and weekend teams, a patient, alerts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import psycopg

from vitalvagt.db import alert_lifecycle as lifecycle


def add_teams(conn: psycopg.Connection, prefix: str, *, red_min: int = 15,
              yellow_h: int = 2) -> tuple[str, str, str]:  # fmt: skip
    """(day team, night team, weekend team) of a new municipality ``<prefix>``: the day team
    covers weekdays 07-15 and hands over to the night team (15-07 every day), which hands over
    to the weekend team (weekends around the clock); the day team escalates to the weekend
    team."""
    conn.execute(
        "INSERT INTO municipalities (id, name, region) VALUES (%s, %s, 'Midtjylland')"
        " ON CONFLICT DO NOTHING", (prefix, f"Kommune {prefix}"))  # fmt: skip
    day, night, weekend = f"{prefix}-day", f"{prefix}-night", f"{prefix}-weekend"
    conn.execute(
        "INSERT INTO acute_teams (id, municipality_id, name, phone, coverage_start, coverage_end,"
        " coverage_days) VALUES (%s, %s, 'Weekendteam', '+45 7000 0003', '00:00', '00:00',"
        " '{6,7}'), (%s, %s, 'Nattevagt Klynge', '+45 7000 0002', '15:00', '07:00',"
        " '{1,2,3,4,5,6,7}') ON CONFLICT DO NOTHING",
        (weekend, prefix, night, prefix),
    )
    conn.execute("UPDATE acute_teams SET handover_team_id = %s WHERE id = %s", (weekend, night))
    conn.execute(
        "INSERT INTO acute_teams (id, municipality_id, name, phone, coverage_start, coverage_end,"
        " coverage_days, handover_team_id, escalation_team_id, lead_name, lead_phone,"
        " red_ack_deadline, yellow_ack_deadline) VALUES (%s, %s, 'Akutteam Dag',"
        " '+45 7000 0001', '07:00', '15:00', '{1,2,3,4,5}', %s, %s, 'Teamleder Dag',"
        " '+45 7000 0009', %s, %s) ON CONFLICT DO NOTHING",
        (day, prefix, night, weekend, timedelta(minutes=red_min), timedelta(hours=yellow_h)),
    )
    return day, night, weekend


def add_patient(conn: psycopg.Connection, patient: str, municipality: str, team: str, *,
                group: str = "copd", hospital_until: datetime | None = None) -> str:  # fmt: skip
    conn.execute(
        "INSERT INTO out_of_hours_contacts (region, name, phone) VALUES ('Midtjylland',"
        " 'Lægevagten Region Midtjylland', '70 11 31 31') ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO patients (id, municipality_id, team_id, patient_group, gp_name, gp_phone,"
        " hospital_name, hospital_phone, hospital_responsible_until) VALUES (%s, %s, %s, %s,"
        " 'Lægerne Søndergade', '86 12 34 56', 'AUH Lungemedicinsk afd.', '78 45 00 00', %s)"
        " ON CONFLICT DO NOTHING",
        (patient, municipality, team, group, hospital_until),
    )
    return patient


def add_alert(conn: psycopg.Connection, patient: str, team: str, *, rule: str = "limit:spo2",
              severity: str = "red", opened_at: datetime, kind: str | None = "spo2",
              value: float | None = 84.0, message: str = "Oxygen saturation 84 %.",
              details: dict | None = None, category: str = "clinical",
              measured_at: datetime | None = None) -> int:  # fmt: skip
    """An alert as the engine opens it (the row and its 'opened' transition)."""
    with conn.transaction():
        alert_id = conn.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, severity, kind, value, measured_at,"
            " message, opened_at, last_triggered_at, details, category) VALUES (%s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (patient, team, rule, severity, kind, value, measured_at or opened_at, message,
             opened_at, opened_at, json.dumps(details or {}), category),
        ).fetchone()[0]
        lifecycle.record(conn, alert_id, None, "open", by=lifecycle.ENGINE, reason="opened")
    return alert_id


def reasons(conn: psycopg.Connection, alert_id: int) -> list[tuple[str, str | None]]:
    return [(t.reason, t.note) for t in lifecycle.history(conn, alert_id)]
