"""Who answers an alert: the acute team covering at that moment, and the doctor responsible.

Pure functions (no I/O, time passed in), in the core so that the alert service, which stores
the routing on the alert when it opens (alerts/routing.py), and the API, which shows it anew
when a nurse opens the alert, give the same answer.

Team. A team covers its ``coverage_start``..``coverage_end`` in the local zone (wall-clock
time, so the edges stay at the same local hour across daylight-saving changes) on its ISO
``coverage_days`` (1 = Monday). ``start == end`` is around the clock. ``start > end`` spans
midnight, and a day in ``coverage_days`` is the day the shift STARTS: a 22-07 team with days
1-5 covers Friday 22:00 to Saturday 07:00 but not Sunday 22:00 to Monday 07:00. Outside its
coverage the alert goes to the team it hands over to (``handover_team_id``), and on along that
chain to the first team that covers; when none does, to the patient's own team, marked
``covering = False`` (a configuration gap an operator must close).

Doctor (Region Midtjylland agreement, reference section 1): the hospital doctor around the
clock while ``at < hospital_responsible_until`` (the post-discharge window); otherwise the
patient's GP on weekdays 08:00-16:00 local time except Danish public holidays (the maintained
``holidays`` library, ``holidays.Denmark``), and the out-of-hours doctor (vagtlæge) 16-08,
weekends and public holidays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import holidays

from vitalvagt.settings import DEFAULT_LOCAL_TZ

LOCAL = ZoneInfo(DEFAULT_LOCAL_TZ)
GP_OPENS = time(8, 0)
GP_CLOSES = time(16, 0)
MAX_HANDOVERS = 8  # a longer chain is a configuration loop
DEFAULT_RED_DEADLINE = timedelta(minutes=15)
DEFAULT_YELLOW_DEADLINE = timedelta(hours=2)


class DoctorRole(StrEnum):
    GP = "gp"  # the patient's own GP (egen læge)
    OUT_OF_HOURS = "out_of_hours"  # vagtlæge
    HOSPITAL = "hospital"  # the discharging hospital's doctor


class TeamReason(StrEnum):
    COVERAGE = "coverage"  # the patient's own team covers now
    HANDOVER = "handover"  # outside its hours: the team it hands over to
    UNCOVERED = "uncovered"  # nobody in the chain covers now: the own team, flagged


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    phone: str | None = None
    coverage_start: time = time(0, 0)
    coverage_end: time = time(0, 0)
    coverage_days: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    handover_team_id: str | None = None
    escalation_team_id: str | None = None
    lead_name: str | None = None
    lead_phone: str | None = None
    red_deadline: timedelta = DEFAULT_RED_DEADLINE
    yellow_deadline: timedelta = DEFAULT_YELLOW_DEADLINE

    def deadline(self, severity: str) -> timedelta | None:
        """How long an alert of ``severity`` may stay unacknowledged (None: never escalates)."""
        return {"red": self.red_deadline, "yellow": self.yellow_deadline}.get(severity)


@dataclass(frozen=True, slots=True)
class Contact:
    name: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class PatientCare:
    """What routing needs to know of a patient (pseudonym only)."""

    patient_id: str
    team_id: str
    municipality_id: str
    gp: Contact
    out_of_hours: Contact | None  # the municipality's or its region's vagtlæge
    hospital: Contact
    hospital_responsible_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Doctor:
    role: DoctorRole
    name: str | None
    phone: str | None
    until: datetime | None = None  # the hospital's responsibility ends then
    holiday: str | None = None  # the public holiday that made it the vagtlæge


@dataclass(frozen=True, slots=True)
class Routing:
    at: datetime
    team: Team
    team_reason: TeamReason
    covering: bool
    primary_team_id: str
    doctor: Doctor

    def to_json(self) -> dict[str, Any]:
        """The routing as stored on the alert (``alerts.routing``) and sent in webhooks."""
        t = self.team
        return {
            "at": self.at.isoformat(),
            "team": {"id": t.id, "name": t.name, "phone": t.phone, "reason": self.team_reason.value,
                     "covering": self.covering},
            "primary_team_id": self.primary_team_id,
            "doctor": {"role": self.doctor.role.value, "name": self.doctor.name,
                       "phone": self.doctor.phone,
                       "until": self.doctor.until.isoformat() if self.doctor.until else None,
                       "holiday": self.doctor.holiday},
        }  # fmt: skip


def covers(team: Team, at: datetime, zone: ZoneInfo = LOCAL) -> bool:
    """Whether ``team`` answers alerts at the instant ``at`` (aware), by its local wall clock."""
    local = at.astimezone(zone)
    now, day = local.time(), local.isoweekday()
    start, end, days = team.coverage_start, team.coverage_end, team.coverage_days
    if start == end:
        return day in days
    if start < end:
        return day in days and start <= now < end
    if now >= start:  # the evening part of a shift that starts today
        return day in days
    yesterday = 7 if day == 1 else day - 1
    return now < end and yesterday in days  # the morning part of yesterday's shift


def responsible_team(
    teams: Mapping[str, Team], team_id: str, at: datetime, zone: ZoneInfo = LOCAL
) -> tuple[Team, TeamReason]:
    """The team that answers at ``at``: the patient's team while it covers, else along its
    handover chain the first team that covers, else the patient's own team (uncovered)."""
    own = teams[team_id]
    team, seen = own, {own.id}
    for hop in range(MAX_HANDOVERS + 1):
        if covers(team, at, zone):
            return team, TeamReason.COVERAGE if hop == 0 else TeamReason.HANDOVER
        nxt = team.handover_team_id
        if nxt is None or nxt in seen or nxt not in teams:
            break
        seen.add(nxt)
        team = teams[nxt]
    return own, TeamReason.UNCOVERED


@lru_cache(maxsize=16)
def _danish_holidays(year: int) -> holidays.HolidayBase:
    return holidays.Denmark(years=year, language="da")


def danish_holiday(day: datetime, zone: ZoneInfo = LOCAL) -> str | None:
    """The Danish public holiday on the local date of ``day``, by its Danish name, or None."""
    local = day.astimezone(zone).date()
    return _danish_holidays(local.year).get(local)


def gp_hours(at: datetime, zone: ZoneInfo = LOCAL) -> bool:
    """Weekdays 08:00-16:00 local time, not a Danish public holiday."""
    local = at.astimezone(zone)
    return (local.isoweekday() <= 5 and GP_OPENS <= local.time() < GP_CLOSES
            and danish_holiday(at, zone) is None)  # fmt: skip


def responsible_doctor(care: PatientCare, at: datetime, zone: ZoneInfo = LOCAL) -> Doctor:
    until = care.hospital_responsible_until
    if until is not None and at < until:
        return Doctor(DoctorRole.HOSPITAL, care.hospital.name, care.hospital.phone, until=until)
    if gp_hours(at, zone):
        return Doctor(DoctorRole.GP, care.gp.name, care.gp.phone)
    ooh = care.out_of_hours or Contact(None, None)
    return Doctor(DoctorRole.OUT_OF_HOURS, ooh.name, ooh.phone, holiday=danish_holiday(at, zone))


def route(
    care: PatientCare, teams: Mapping[str, Team], at: datetime, zone: ZoneInfo = LOCAL
) -> Routing:
    """The routing of an alert of this patient at the instant ``at`` (when it opened, or now)."""
    team, reason = responsible_team(teams, care.team_id, at, zone)
    return Routing(at=at, team=team, team_reason=reason, covering=reason != TeamReason.UNCOVERED,
                   primary_team_id=care.team_id,
                   doctor=responsible_doctor(care, at, zone))  # fmt: skip


def team_json(team: Team) -> dict[str, Any]:
    d = asdict(team)
    for key in ("coverage_start", "coverage_end"):
        d[key] = d[key].strftime("%H:%M")
    for key in ("red_deadline", "yellow_deadline"):
        d[key] = d[key].total_seconds()
    d["coverage_days"] = list(team.coverage_days)
    return d
