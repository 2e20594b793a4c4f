"""Routing (issue 12, point 1): the team covering and the doctor responsible, with the clock
passed in: every coverage edge, both 2026 daylight-saving changes, a Danish public holiday,
inside and after a post-discharge window; and the job that stores it on new alerts."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from alerts.routing import route_pending
from tests.alerts.delivery_helpers import add_alert, add_patient, add_teams
from vitalvagt.db.routing_data import routing_now
from vitalvagt.routing import (
    Contact,
    DoctorRole,
    PatientCare,
    Team,
    TeamReason,
    covers,
    danish_holiday,
    responsible_doctor,
    responsible_team,
    route,
)
from vitalvagt.stack import Stack

CPH = ZoneInfo("Europe/Copenhagen")
DAY = Team("day", "Akutteam Dag", coverage_start=time(7), coverage_end=time(15),
           coverage_days=(1, 2, 3, 4, 5), handover_team_id="night")  # fmt: skip
NIGHT = Team("night", "Nattevagt", coverage_start=time(15), coverage_end=time(7),
             handover_team_id="weekend")  # fmt: skip
WEEKEND = Team("weekend", "Weekendteam", coverage_days=(6, 7))
TEAMS = {t.id: t for t in (DAY, NIGHT, WEEKEND)}
CARE = PatientCare("p-route", "day", "0751", gp=Contact("Lægerne Søndergade", "86 12 34 56"),
                   out_of_hours=Contact("Lægevagten", "70 11 31 31"),
                   hospital=Contact("AUH Lunge", "78 45 00 00"))  # fmt: skip


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CPH)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def team_at(at: datetime) -> tuple[str, TeamReason]:
    team, reason = responsible_team(TEAMS, "day", at)
    return team.id, reason


@pytest.mark.parametrize(("at", "expected"), [
    # Wednesday 14 January 2026 (winter time): every edge of the day team's 07-15
    (local(2026, 1, 14, 6, 59, 59), ("night", TeamReason.HANDOVER)),
    (local(2026, 1, 14, 7, 0, 0), ("day", TeamReason.COVERAGE)),
    (local(2026, 1, 14, 14, 59, 59), ("day", TeamReason.COVERAGE)),
    (local(2026, 1, 14, 15, 0, 0), ("night", TeamReason.HANDOVER)),
    (local(2026, 1, 14, 23, 59, 59), ("night", TeamReason.HANDOVER)),
    (local(2026, 1, 15, 0, 0, 0), ("night", TeamReason.HANDOVER)),  # across midnight
    # Friday evening to Monday morning: the night team, and the weekend team by day
    (local(2026, 1, 16, 15, 0, 0), ("night", TeamReason.HANDOVER)),
    (local(2026, 1, 17, 6, 59, 59), ("night", TeamReason.HANDOVER)),
    (local(2026, 1, 17, 7, 0, 0), ("weekend", TeamReason.HANDOVER)),  # two hops
    (local(2026, 1, 18, 14, 59, 59), ("weekend", TeamReason.HANDOVER)),
    (local(2026, 1, 19, 6, 59, 59), ("night", TeamReason.HANDOVER)),
    (local(2026, 1, 19, 7, 0, 0), ("day", TeamReason.COVERAGE)),
])  # fmt: skip
def test_coverage_edges_and_handover(at: datetime, expected: tuple[str, TeamReason]) -> None:
    assert team_at(at) == expected


def test_a_shift_over_midnight_belongs_to_the_day_it_starts() -> None:
    weeknights = Team("wn", "Hverdagsnat", coverage_start=time(22), coverage_end=time(7),
                      coverage_days=(1, 2, 3, 4, 5))  # fmt: skip
    assert covers(weeknights, local(2026, 1, 16, 22, 0))  # Friday 22:00
    assert covers(weeknights, local(2026, 1, 17, 6, 59, 59))  # Saturday morning: Friday's shift
    assert not covers(weeknights, local(2026, 1, 18, 22, 0))  # Sunday evening
    assert not covers(weeknights, local(2026, 1, 19, 6, 0))  # Monday morning: Sunday's shift
    assert not covers(weeknights, local(2026, 1, 19, 7, 0))
    assert covers(weeknights, local(2026, 1, 20, 6, 59, 59))  # Tuesday: Monday's shift


def test_start_equal_to_end_is_around_the_clock_on_its_days() -> None:
    assert covers(WEEKEND, local(2026, 1, 17, 0, 0))
    assert covers(WEEKEND, local(2026, 1, 18, 23, 59, 59))
    assert not covers(WEEKEND, local(2026, 1, 16, 23, 59, 59))
    assert not covers(WEEKEND, local(2026, 1, 19, 0, 0))


def test_nobody_covering_falls_back_to_the_own_team_flagged() -> None:
    lonely = {"day": Team("day", "Dag", coverage_start=time(7), coverage_end=time(15),
                          handover_team_id="day-loop"),
              "day-loop": Team("day-loop", "Loop", coverage_start=time(8), coverage_end=time(9),
                               handover_team_id="day")}  # fmt: skip
    team, reason = responsible_team(lonely, "day", local(2026, 1, 14, 20, 0))
    assert (team.id, reason) == ("day", TeamReason.UNCOVERED)
    r = route(CARE, lonely, local(2026, 1, 14, 20, 0))
    assert not r.covering and r.to_json()["team"]["covering"] is False


def test_spring_forward_2026() -> None:
    """29 March 2026, 02:00 CET -> 03:00 CEST: the edges stay at local wall-clock hours."""
    # Friday 27 March (CET, UTC+1): 07:00 local is 06:00 UTC
    assert team_at(utc(2026, 3, 27, 5, 59, 59))[0] == "night"
    assert team_at(utc(2026, 3, 27, 6, 0, 0))[0] == "day"
    # Monday 30 March (CEST, UTC+2): 07:00 local is 05:00 UTC; 15:00 local is 13:00 UTC
    assert team_at(utc(2026, 3, 30, 4, 59, 59))[0] == "night"
    assert team_at(utc(2026, 3, 30, 5, 0, 0))[0] == "day"
    assert team_at(utc(2026, 3, 30, 12, 59, 59))[0] == "day"
    assert team_at(utc(2026, 3, 30, 13, 0, 0))[0] == "night"
    # The night of the change: 01:59:59 CET and 03:00 CEST are one second apart, both night
    assert covers(NIGHT, utc(2026, 3, 29, 0, 59, 59)) and covers(NIGHT, utc(2026, 3, 29, 1, 0))
    assert covers(NIGHT, utc(2026, 3, 29, 4, 59, 59))  # 06:59:59 CEST
    assert not covers(NIGHT, utc(2026, 3, 29, 5, 0, 0))  # 07:00 CEST
    # The GP's hours move too: Monday 08:00 CEST is 06:00 UTC
    assert responsible_doctor(CARE, utc(2026, 3, 30, 5, 59, 59)).role is DoctorRole.OUT_OF_HOURS
    assert responsible_doctor(CARE, utc(2026, 3, 30, 6, 0, 0)).role is DoctorRole.GP
    assert responsible_doctor(CARE, utc(2026, 3, 30, 13, 59, 59)).role is DoctorRole.GP
    assert responsible_doctor(CARE, utc(2026, 3, 30, 14, 0, 0)).role is DoctorRole.OUT_OF_HOURS


def test_fall_back_2026() -> None:
    """25 October 2026, 03:00 CEST -> 02:00 CET: the hour 02:00-03:00 is lived twice."""
    late = Team("late", "Aften", coverage_start=time(18), coverage_end=time(2, 30))
    assert covers(late, utc(2026, 10, 25, 0, 29, 59))  # 02:29:59 CEST
    assert not covers(late, utc(2026, 10, 25, 0, 30))  # 02:30 CEST
    assert covers(late, utc(2026, 10, 25, 1, 0))  # 02:00 CET, the second time round
    assert not covers(late, utc(2026, 10, 25, 1, 30))  # 02:30 CET
    # Monday 26 October (CET): 07:00 local is 06:00 UTC again
    assert team_at(utc(2026, 10, 26, 5, 59, 59))[0] == "night"
    assert team_at(utc(2026, 10, 26, 6, 0, 0))[0] == "day"
    # Friday 23 October (CEST): 07:00 local is 05:00 UTC
    assert team_at(utc(2026, 10, 23, 5, 0, 0))[0] == "day"
    assert responsible_doctor(CARE, utc(2026, 10, 26, 7, 0)).role is DoctorRole.GP  # 08:00 CET
    assert responsible_doctor(CARE, utc(2026, 10, 23, 6, 0)).role is DoctorRole.GP  # 08:00 CEST


@pytest.mark.parametrize(("at", "role"), [
    (local(2026, 1, 14, 7, 59, 59), DoctorRole.OUT_OF_HOURS),
    (local(2026, 1, 14, 8, 0, 0), DoctorRole.GP),
    (local(2026, 1, 14, 15, 59, 59), DoctorRole.GP),
    (local(2026, 1, 14, 16, 0, 0), DoctorRole.OUT_OF_HOURS),
    (local(2026, 1, 17, 10, 0, 0), DoctorRole.OUT_OF_HOURS),  # Saturday
    (local(2026, 1, 18, 10, 0, 0), DoctorRole.OUT_OF_HOURS),  # Sunday
    (local(2026, 5, 13, 10, 0, 0), DoctorRole.GP),  # the Wednesday before Ascension
    (local(2026, 5, 14, 10, 0, 0), DoctorRole.OUT_OF_HOURS),  # Kristi himmelfartsdag
    (local(2026, 5, 15, 10, 0, 0), DoctorRole.GP),
    (local(2026, 4, 2, 10, 0, 0), DoctorRole.OUT_OF_HOURS),  # Skærtorsdag
    (local(2026, 12, 25, 10, 0, 0), DoctorRole.OUT_OF_HOURS),  # Juledag (a Friday)
])  # fmt: skip
def test_responsible_doctor_by_the_clock(at: datetime, role: DoctorRole) -> None:
    doctor = responsible_doctor(CARE, at)
    assert doctor.role is role
    expected = {DoctorRole.GP: CARE.gp, DoctorRole.OUT_OF_HOURS: CARE.out_of_hours}[role]
    assert (doctor.name, doctor.phone) == (expected.name, expected.phone)


def test_public_holidays_come_from_the_holiday_library() -> None:
    assert danish_holiday(local(2026, 5, 14, 10)) == "Kristi himmelfartsdag"
    assert responsible_doctor(CARE, local(2026, 5, 14, 10)).holiday == "Kristi himmelfartsdag"
    # Store bededag was abolished from 2024: an ordinary Friday in 2026 (1 May), not in 2023
    assert danish_holiday(local(2026, 5, 1, 10)) is None
    assert danish_holiday(local(2023, 5, 5, 10)) is not None
    # Ascension Day just after midnight local time is still the holiday (22:30 UTC the day before)
    assert danish_holiday(utc(2026, 5, 13, 22, 30)) == "Kristi himmelfartsdag"


def test_post_discharge_window() -> None:
    until = local(2026, 1, 14, 12, 0)  # discharged on Sunday at noon: 72 hours
    care = PatientCare(**{**{f: getattr(CARE, f) for f in CARE.__slots__},
                          "hospital_responsible_until": until})  # fmt: skip
    for at in (local(2026, 1, 11, 13, 0), local(2026, 1, 12, 3, 0),  # a Sunday, a night
               local(2026, 1, 13, 10, 0), until - timedelta(seconds=1)):
        doctor = responsible_doctor(care, at)
        assert (doctor.role, doctor.name, doctor.until) == (DoctorRole.HOSPITAL, "AUH Lunge", until)
    assert responsible_doctor(care, until).role is DoctorRole.GP  # Wednesday 12:00
    assert responsible_doctor(care, local(2026, 1, 14, 16, 0)).role is DoctorRole.OUT_OF_HOURS


@pytest.mark.stack
def test_job_routes_new_alerts_as_they_opened(stack: Stack, registry: psycopg.Connection) -> None:
    day, night, _ = add_teams(registry, "9101")
    pid = add_patient(registry, "p-routing-job", "9101", day,
                      hospital_until=local(2026, 1, 14, 12, 0))  # fmt: skip
    # Opened Tuesday 13 January 20:00: the night team; the hospital is responsible
    opened = local(2026, 1, 13, 20, 0)
    for kind, value in (("spo2", 86.0), ("pulse", 112.0), ("temperature", 38.4)):
        registry.execute(
            "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
            " device_address, kind, value, unit) VALUES (gen_random_uuid(), %s, %s, %s, 'gw-x',"
            " 'AA', %s, %s, 'x')", (opened - timedelta(minutes=5), opened, pid, kind, value))
    alert_id = add_alert(registry, pid, day, opened_at=opened, value=86.0)
    while route_pending(registry):
        pass
    routing, routed_team, scores = registry.execute(
        "SELECT routing, routed_team_id, scores FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    assert routed_team == night
    assert routing["team"] == {"id": night, "name": "Nattevagt Klynge", "phone": "+45 7000 0002",
                               "reason": "handover", "covering": True}
    assert routing["doctor"]["role"] == "hospital"
    assert routing["doctor"]["phone"] == "78 45 00 00"
    assert scores["news2"]["points"] == {"spo2": 3, "oxygen": 0, "pulse": 2, "temperature": 1}
    assert scores["news2"]["missing"] == ["respiratory_rate", "bp_systolic", "consciousness"]
    assert scores["tobs"]["total"] == 3  # pulse 112 -> 2, temperature 38.4 (tympanic) -> 1
    assert route_pending(registry) == 0  # routed once
    # Shown anew when the nurse opens it on Wednesday at 16:30: the vagtlæge, the night team
    now = routing_now(registry, alert_id, local(2026, 1, 14, 16, 30))
    assert now is not None and now.team.id == night
    assert (now.doctor.role, now.doctor.name) == (DoctorRole.OUT_OF_HOURS,
                                                  "Lægevagten Region Midtjylland")
    stored = registry.execute("SELECT routing FROM alerts WHERE id = %s", (alert_id,)).fetchone()[0]
    assert stored["doctor"]["role"] == "hospital"  # the stored routing is as it opened
    assert routing_now(registry, 10**12, local(2026, 1, 14, 16, 30)) is None
