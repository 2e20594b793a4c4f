"""The measurement schedule: the pure overdue rule (vitalvagt/schedule.py) with a clock the
test sets, across both daylight-saving changes; and ``GET``/``PUT
/patients/{id}/schedule``: scoped, role-checked (nurse or physician to change), audited
with the reason and the old and new schedule."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import World, auth
from vitalvagt.roles import Role
from vitalvagt.schedule import KindSchedule, ScheduleError, check, first_unmet, overdue


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


START = utc(2026, 1, 1)
TWICE = KindSchedule("spo2", START, local_times=(time(8), time(20)), grace=timedelta(hours=2))


# --- the pure rule ------------------------------------------------------------------------
def test_a_reading_in_time_meets_the_due_time_and_a_missing_one_is_missed_after_the_grace():
    # Winter (CET, UTC+1): 08:00 local is 07:00 UTC.
    last = utc(2026, 1, 10, 6, 40)  # 07:40 local, early within the grace: meets 08:00
    assert first_unmet(TWICE, last) == utc(2026, 1, 10, 19)  # 20:00 local
    assert overdue([TWICE], {"spo2": last}, utc(2026, 1, 10, 20, 59)) == []
    [o] = overdue([TWICE], {"spo2": last}, utc(2026, 1, 10, 21))
    assert (o.kind, o.due_at, o.missed_at, o.last_measured_at) == (
        "spo2",
        utc(2026, 1, 10, 19),
        utc(2026, 1, 10, 21),
        last,
    )


def test_a_reading_too_early_does_not_meet_the_next_due_time():
    last = utc(2026, 1, 10, 4, 30)  # 05:30 local: more than 2 h before 08:00
    [o] = overdue([TWICE], {"spo2": last}, utc(2026, 1, 10, 9))
    assert o.due_at == utc(2026, 1, 10, 7)


def test_missed_since_is_the_first_due_time_missed_not_the_latest():
    last = utc(2026, 1, 10, 7)
    [o] = overdue([TWICE], {"spo2": last}, utc(2026, 1, 14, 12))
    assert o.due_at == utc(2026, 1, 10, 19)


def test_no_reading_ever_counts_from_the_start_of_the_schedule():
    s = KindSchedule("weight", utc(2026, 1, 10, 12), local_times=(time(8),))
    assert overdue([s], {}, utc(2026, 1, 11, 8, 59)) == []
    [o] = overdue([s], {}, utc(2026, 1, 11, 9))
    assert o.due_at == utc(2026, 1, 11, 7) and o.last_measured_at is None


def test_times_per_day_is_elapsed_time_after_the_last_reading():
    s = KindSchedule("pulse", START, times_per_day=3, grace=timedelta(minutes=30))
    last = utc(2026, 1, 10, 6)
    assert overdue([s], {"pulse": last}, utc(2026, 1, 10, 14, 29)) == []
    [o] = overdue([s], {"pulse": last}, utc(2026, 1, 10, 14, 30))
    assert o.due_at == utc(2026, 1, 10, 14)
    # Before any reading: one interval after the start.
    assert overdue([s], {}, START + timedelta(hours=8, minutes=30))[0].due_at == START + timedelta(
        hours=8
    )


def test_local_times_follow_the_wall_clock_across_the_spring_change():
    # 29 March 2026: 02:00 CET becomes 03:00 CEST. 08:00 local: 07:00 UTC on the 28th,
    # 06:00 UTC on the 29th.
    last = utc(2026, 3, 28, 7)  # 08:00 local on the 28th
    s = KindSchedule("spo2", START, local_times=(time(8),), grace=timedelta(hours=1))
    assert first_unmet(s, last) == utc(2026, 3, 29, 6)
    assert overdue([s], {"spo2": last}, utc(2026, 3, 29, 6, 59)) == []
    assert overdue([s], {"spo2": last}, utc(2026, 3, 29, 7))[0].due_at == utc(2026, 3, 29, 6)


def test_local_times_follow_the_wall_clock_across_the_autumn_change():
    # 25 October 2026: 03:00 CEST becomes 02:00 CET. 08:00 local: 06:00 UTC, then 07:00 UTC.
    last = utc(2026, 10, 24, 6)
    s = KindSchedule("spo2", START, local_times=(time(8),), grace=timedelta(hours=1))
    assert first_unmet(s, last) == utc(2026, 10, 25, 7)
    assert overdue([s], {"spo2": last}, utc(2026, 10, 25, 7, 59)) == []
    assert overdue([s], {"spo2": last}, utc(2026, 10, 25, 8))[0].due_at == utc(2026, 10, 25, 7)


def test_a_local_time_in_the_gap_or_the_overlap_of_a_change_is_due_once():
    s = KindSchedule("spo2", START, local_times=(time(2, 30),), grace=timedelta(minutes=30))
    # Spring: 02:30 does not exist on the 29th; due at 01:30 UTC (03:30 CEST).
    assert first_unmet(s, utc(2026, 3, 28, 2)) == utc(2026, 3, 29, 1, 30)
    # Autumn: 02:30 occurs twice on the 25th; due at the first, 00:30 UTC (02:30 CEST).
    assert first_unmet(s, utc(2026, 10, 24, 1)) == utc(2026, 10, 25, 0, 30)
    # ... and once only: the next is 02:30 CET on the 26th.
    assert first_unmet(s, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


def test_a_kind_measured_in_time_is_not_listed_among_several():
    w = KindSchedule("weight", START, local_times=(time(7),))
    last = {"spo2": utc(2026, 1, 10, 19), "weight": utc(2026, 1, 9, 6)}
    assert [o.kind for o in overdue([TWICE, w], last, utc(2026, 1, 10, 22))] == ["weight"]


@pytest.mark.parametrize(
    ("times", "per_day", "grace", "field"),
    [
        ((), None, timedelta(hours=1), "exactly one"),
        ((time(8),), 2, timedelta(hours=1), "exactly one"),
        ((time(20), time(8)), None, timedelta(hours=1), "in order"),
        ((time(8), time(8)), None, timedelta(hours=1), "in order"),
        ((), 25, timedelta(hours=1), "times_per_day"),
        ((time(8),), None, timedelta(minutes=1), "grace"),
        ((time(8, tzinfo=UTC),), None, timedelta(hours=1), "without a time zone"),
    ],
)
def test_a_schedule_that_cannot_be_followed_is_refused_naming_why(times, per_day, grace, field):
    with pytest.raises(ScheduleError, match=field):
        check(times, per_day, grace)


def test_now_without_a_time_zone_is_refused():
    with pytest.raises(ScheduleError, match="now"):
        overdue([TWICE], {}, datetime(2026, 1, 1))


# --- the endpoints ------------------------------------------------------------------------
PLAN = {
    "kinds": [
        {"kind": "spo2", "local_times": ["08:00", "20:00"], "grace_minutes": 90},
        {"kind": "weight", "times_per_day": 1},
    ],
    "reason": "KOL-plan efter udskrivelse",
}


@pytest.mark.stack
def test_a_nurse_sets_the_schedule_and_everyone_of_the_team_reads_it(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a = world.a
    url = f"/patients/{a.patient}/schedule"
    nurse = auth(client, a.users[Role.NURSE])
    r = client.get(url, headers=nurse)
    assert r.status_code == 200, r.text
    assert r.json()["kinds"] == [] and r.json()["overdue"] == []

    r = client.put(url, json=PLAN, headers=nurse)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["time_zone"] == "Europe/Copenhagen"
    spo2, weight = body["kinds"]
    assert (spo2["kind"], spo2["local_times"], spo2["grace_minutes"]) == (
        "spo2",
        ["08:00:00", "20:00:00"],
        90,
    )
    assert (weight["kind"], weight["times_per_day"], weight["grace_minutes"]) == ("weight", 1, 120)
    assert spo2["set_by"] == a.users[Role.NURSE] and spo2["reason"] == PLAN["reason"]
    assert body["overdue"] == []  # just set: nothing is due before its start

    # A physician changes one kind; the unchanged kind keeps its start.
    doctor = auth(client, a.users[Role.PHYSICIAN])
    plan2 = {
        "kinds": [PLAN["kinds"][0], {"kind": "weight", "times_per_day": 2}],
        "reason": "weigh twice",
    }
    r = client.put(url, json=plan2, headers=doctor)
    assert r.status_code == 200, r.text
    spo2b, weight2 = r.json()["kinds"]
    assert spo2b["set_at"] == spo2["set_at"] and weight2["times_per_day"] == 2

    # A team lead reads it, may not change it.
    lead = auth(client, a.users[Role.TEAM_LEAD])
    assert client.get(url, headers=lead).status_code == 200
    r = client.put(url, json=PLAN, headers=lead)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"

    rows = registry.execute(
        "SELECT actor, action, detail FROM audit_log WHERE patient_id = %s"
        " AND action IN ('read_schedule', 'set_schedule') ORDER BY id",
        (a.patient,),
    ).fetchall()
    actions = [(actor, action) for actor, action, _ in rows]
    assert actions == [
        (a.users[Role.NURSE], "read_schedule"),
        (a.users[Role.NURSE], "set_schedule"),
        (a.users[Role.PHYSICIAN], "set_schedule"),
        (a.users[Role.TEAM_LEAD], "read_schedule"),
    ]
    second = rows[2][2]
    assert second["reason"] == "weigh twice"
    assert second["old"][1] == {"kind": "weight", "local_times": [], "times_per_day": 1,
                                "grace_minutes": 120}  # fmt: skip
    assert second["new"][1]["times_per_day"] == 2

    # Cleared.
    r = client.put(url, json={"kinds": [], "reason": "stopped"}, headers=nurse)
    assert r.status_code == 200 and r.json()["kinds"] == []


@pytest.mark.stack
def test_the_overdue_kinds_are_shown_with_the_schedule(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    """The world's readings are spo2 over the last 20 hours; a weight due daily from a
    schedule started two days ago is missed, spo2 every hour is not."""
    a = world.a
    nurse = auth(client, a.users[Role.NURSE])
    plan = {"kinds": [{"kind": "spo2", "times_per_day": 24}, {"kind": "weight",
             "local_times": ["07:00"], "grace_minutes": 60}], "reason": "test"}  # fmt: skip
    assert client.put(f"/patients/{a.patient}/schedule", json=plan, headers=nurse).is_success
    registry.execute(
        "UPDATE measurement_schedules SET set_at = now() - interval '2 days' WHERE patient_id = %s",
        (a.patient,),
    )
    r = client.get(f"/patients/{a.patient}/schedule", headers=nurse)
    [o] = r.json()["overdue"]
    assert o["kind"] == "weight" and o["last_measured_at"] is None
    due = datetime.fromisoformat(o["due_at"])
    assert datetime.now(UTC) - timedelta(days=2, hours=1) < due < datetime.now(UTC)


@pytest.mark.stack
@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"kinds": [{"kind": "spo2"}], "reason": "no times"}, "exactly one"),
        ({"kinds": [{"kind": "spo2", "times_per_day": 1}] * 2, "reason": "twice"}, "once"),
        ({"kinds": [{"kind": "spo2", "local_times": ["20:00", "08:00"]}], "reason": "order"},
         "in order"),
        ({"kinds": [{"kind": "glucose", "times_per_day": 1}], "reason": "kind"}, "kind"),
        ({"kinds": [], "reason": ""}, "reason"),
    ],
)  # fmt: skip
def test_a_bad_schedule_is_a_problem_naming_the_field(
    client: TestClient, world: World, change: dict, where: str
) -> None:
    nurse = auth(client, world.a.users[Role.NURSE])
    r = client.put(f"/patients/{world.a.patient}/schedule", json=change, headers=nurse)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert where in r.text


@pytest.mark.stack
def test_another_teams_patient_has_no_schedule_to_read_or_set(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    nurse_a = auth(client, world.a.users[Role.NURSE])
    url = f"/patients/{world.b.patient}/schedule"
    assert client.get(url, headers=nurse_a).status_code == 404
    assert client.put(url, json=PLAN, headers=nurse_a).status_code == 404
    n = registry.execute(
        "SELECT count(*) FROM measurement_schedules WHERE patient_id = %s", (world.b.patient,)
    ).fetchone()[0]
    assert n == 0
