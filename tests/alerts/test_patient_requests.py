"""Measure again and reminders (issue 12, point 5) against the real database, with the clock
passed in and a publisher that records what it would send: one request per trigger, the
rate limit, the night rule (red goes, yellow waits for 07:00), a restart that doubles
nothing, a repeat reading linked to its request, and the reminder before the blue alert.

Each test has its own patient and its own day (2027), so the job's look at every patient
sees only that test's alerts and readings."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from alerts.command_publisher import CommandNotPublished, CommandPublisher
from alerts.patient_requests import (
    REPEAT_RESOLVED_NOTE,
    PatientRequests,
    RequestPolicy,
    at_night,
    held_back,
    measure_again_text,
    pending_for,
)
from tests.alerts.delivery_helpers import add_alert, reasons
from tests.ingest.conftest import ensure_team
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.wire import Command, CommandName

CPH = ZoneInfo("Europe/Copenhagen")
M = timedelta(minutes=1)


def cph(*args: int) -> datetime:
    return datetime(*args, tzinfo=CPH)


class RecordingPublisher(CommandPublisher):
    """What would go to the broker; ``down`` makes every publish fail as without a broker."""

    def __init__(self, *, down: bool = False) -> None:
        super().__init__(lambda: None)  # type: ignore[arg-type, return-value]
        self.sent: list[tuple[str, Command]] = []
        self.down = down

    def publish(self, gateway_id: str, command: Command) -> None:
        if self.down:
            raise CommandNotPublished(gateway_id, "no connection to the broker")
        self.sent.append((gateway_id, command))

    def to(self, gateway_id: str) -> list[Command]:
        return [c for gw, c in self.sent if gw == gateway_id]


def job(publisher: CommandPublisher | None = None) -> PatientRequests:
    return PatientRequests(publisher or RecordingPublisher(), zone=CPH)


@pytest.fixture
def home(registry: psycopg.Connection, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(patient, gateway) of this test; deactivated afterwards, so no later test's sweep
    (missed measurements, reminders) counts them."""
    node = request.node.name
    short = "".join(c if c.isalnum() else "-" for c in node.removeprefix("test_"))[:30]
    name = f"{short.strip('-')}-{zlib.crc32(node.encode()):08x}"
    patient, gw = f"p-req-{name}", f"gw-req-{name}"
    ensure_team(registry)
    registry.execute(
        "INSERT INTO patients (id, municipality_id, team_id, patient_group) VALUES"
        " (%s, '0999', 'team-test', 'copd') ON CONFLICT DO NOTHING",
        (patient,),
    )
    provision_gateway(registry, gw, patient_id=patient)
    yield patient, gw
    registry.execute("UPDATE patients SET active = false WHERE id = %s", (patient,))
    registry.execute("UPDATE gateways SET active = false WHERE id = %s", (gw,))


def quality(conn: psycopg.Connection, patient: str, at: datetime, *, kind: str = "spo2",
            severity: str = "yellow", details: dict | None = None,
            category: str = "quality") -> int:  # fmt: skip
    return add_alert(conn, patient, "team-test", rule=f"quality:{kind}" if category == "quality"
                     else f"limit:{kind}", severity=severity, opened_at=at, kind=kind,
                     value=91.0, message="flagged", details=details,
                     category=category)  # fmt: skip


def trigger_again(conn: psycopg.Connection, alert_id: int, at: datetime) -> None:
    conn.execute(
        "UPDATE alerts SET trigger_count = trigger_count + 1, last_triggered_at = %s,"
        " measured_at = %s WHERE id = %s",
        (at, at, alert_id),
    )


def observe(conn: psycopg.Connection, patient: str, gw: str, *, kind: str = "spo2",
            value: float = 96.0, measured_at: datetime, ingested_at: datetime,
            flags: tuple[str, ...] = ()) -> uuid.UUID:  # fmt: skip
    """A stored reading, as ingest writes it (and the patient's last reading with it)."""
    obs_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO observations (id, measured_at, received_at, ingested_at, patient_id,"
        " gateway_id, device_address, kind, value, unit, flags) VALUES (%s, %s, %s, %s, %s,"
        " %s, 'D1:56:56:22:00:01', %s, %s, '%%', %s)",
        (obs_id, measured_at, measured_at, ingested_at, patient, gw, kind, value, list(flags)),
    )
    has_last = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'patients'"
        " AND column_name = 'last_measured_at')"
    ).fetchone()[0]
    if has_last:
        conn.execute(
            "UPDATE patients SET last_measured_at = greatest(last_measured_at, %s) WHERE id = %s",
            (measured_at, patient),
        )
    return obs_id


def states(conn: psycopg.Connection, patient: str) -> list[tuple]:
    return [(r["reason"], r["state"]) for r in reversed(pending_for(conn, patient))]


# --- the pure policy ----------------------------------------------------------------------


def test_night_is_22_to_07_local_time_across_daylight_saving() -> None:
    for day in ((2027, 1, 13), (2027, 3, 28), (2027, 7, 1), (2027, 10, 31)):
        assert not at_night(cph(*day, 21, 59), CPH)
        assert at_night(cph(*day, 22, 0), CPH)
        assert at_night(cph(*day, 6, 59), CPH)
        assert not at_night(cph(*day, 7, 0), CPH)
    # 21:30 UTC is 22:30 in winter, 23:30 in summer: night both times; 05:30 UTC is 06:30
    # in winter (night) and 07:30 in summer (day).
    assert at_night(datetime(2027, 1, 13, 21, 30, tzinfo=UTC), CPH)
    assert not at_night(cph(2027, 1, 13, 23, 0), CPH,
                        RequestPolicy(night_start=time(0), night_end=time(0)))  # fmt: skip
    assert at_night(datetime(2027, 1, 13, 5, 30, tzinfo=UTC), CPH)
    assert not at_night(datetime(2027, 7, 1, 5, 30, tzinfo=UTC), CPH)


def test_held_back_names_the_reason() -> None:
    now = cph(2027, 1, 13, 12, 0)
    assert held_back(now, red=False, recent=[], zone=CPH) is None
    assert held_back(now, red=False, recent=[now - 29 * M], zone=CPH) == "gap"
    assert held_back(now, red=False, recent=[now - 30 * M], zone=CPH) is None
    four = [now - timedelta(hours=h) for h in (1, 5, 9, 23)]
    assert held_back(now, red=False, recent=four, zone=CPH) == "day"
    assert held_back(now, red=False, recent=[*four[:3], now - timedelta(hours=24)],
                     zone=CPH) is None  # fmt: skip
    night = cph(2027, 1, 13, 23, 0)
    assert held_back(night, red=False, recent=[], zone=CPH) == "night"
    assert held_back(night, red=True, recent=[], zone=CPH) is None
    assert held_back(night, red=True, recent=[night - M], zone=CPH) == "gap"


def test_texts_are_plain_danish() -> None:
    assert measure_again_text("spo2").startswith("Mål venligst iltmætningen igen: sid stille")
    assert measure_again_text("bp_systolic").startswith("Mål venligst blodtrykket igen")
    assert measure_again_text("respiratory_rate").startswith("Mål venligst igen")
    assert measure_again_text("spo2", "en").startswith("Please measure your oxygen")
    for kind in ("spo2", "pulse", "bp_systolic", "weight", "temperature", None):
        assert len(measure_again_text(kind)) <= 200


# --- against the database -----------------------------------------------------------------


def test_a_quality_notice_asks_once_and_a_restart_doubles_nothing(
    registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    patient, gw = home
    t = cph(2027, 2, 3, 10, 0)
    alert_id = quality(registry, patient, t)
    publisher = RecordingPublisher()
    r = job(publisher).run(registry, t + M)
    assert (r.requested, r.sent) == (1, 1)
    (command,) = publisher.to(gw)
    assert command.command is CommandName.MEASURE_AGAIN
    assert command.kind == "spo2"
    assert command.message == measure_again_text("spo2")
    (row,) = pending_for(registry, patient)
    assert (row["alert_id"], row["alert_trigger"], row["reason"], row["state"]) == (
        alert_id, 1, "quality", "sent")  # fmt: skip
    assert row["command_id"] == command.id and row["sent_at"] == t + M
    # The same job again, and a new one as after a restart: nothing more is sent.
    assert job(publisher).run(registry, t + 2 * M).requested == 0
    again = RecordingPublisher()
    assert job(again).run(registry, t + 40 * M).requested == 0
    assert again.to(gw) == [] and len(pending_for(registry, patient)) == 1


def test_a_request_the_broker_did_not_take_goes_again_with_its_id(
    registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    patient, gw = home
    t = cph(2027, 2, 5, 10, 0)
    quality(registry, patient, t)
    r = job(RecordingPublisher(down=True)).run(registry, t + M)
    assert (r.requested, r.sent, r.failed) == (1, 0, 1)
    (row,) = pending_for(registry, patient)
    assert (row["state"], row["publish_attempts"]) == ("pending", 1)
    # After a restart with the broker back: the recorded request, with the same id, once.
    publisher = RecordingPublisher()
    r = job(publisher).run(registry, t + 3 * M)
    assert (r.requested, r.sent) == (0, 1)
    assert [c.id for c in publisher.to(gw)] == [row["command_id"]]
    assert job(publisher).run(registry, t + 4 * M).sent == 0
    assert len(publisher.to(gw)) == 1
    # One the broker never takes is dropped after the give-up time, and not counted against
    # the patient's rate limit.
    a2 = quality(registry, patient, t + 40 * M, kind="bp_systolic")
    assert job(RecordingPublisher(down=True)).run(registry, t + 41 * M).requested == 1
    late = t + 42 * M + RequestPolicy().give_up
    r = job(RecordingPublisher(down=True)).run(registry, late)
    assert (r.dropped, r.failed) == (1, 0)
    newest = pending_for(registry, patient)[0]
    assert (newest["alert_id"], newest["state"]) == (a2, "dropped")
    quality(registry, patient, late, kind="temperature")
    assert job(publisher).run(registry, late + M).sent == 1


def test_rate_limit_one_per_30_minutes_and_four_a_day(
    registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    patient, gw = home
    t = cph(2027, 2, 9, 8, 0)
    alert_id = quality(registry, patient, t)
    publisher = RecordingPublisher()
    requests = job(publisher)
    assert requests.run(registry, t).sent == 1
    # Triggered again 10 minutes later: held for the gap, sent once the gap has passed.
    trigger_again(registry, alert_id, t + 10 * M)
    r = requests.run(registry, t + 11 * M)
    assert (r.requested, r.held) == (0, {"gap": 1})
    assert requests.run(registry, t + 29 * M).requested == 0
    assert requests.run(registry, t + 30 * M).requested == 1
    # Two more triggers, each asked about after the gap: four in all.
    for n in (1, 2):
        trigger_again(registry, alert_id, t + (30 + 40 * n) * M)
        assert requests.run(registry, t + (31 + 40 * n) * M).requested == 1
    assert len(publisher.to(gw)) == 4
    # The fifth trigger of the day waits a day from the first request (08:00 the next day).
    trigger_again(registry, alert_id, t + 150 * M)
    r = requests.run(registry, t + 151 * M)
    assert (r.requested, r.held) == (0, {"day": 1})
    trigger_again(registry, alert_id, t + timedelta(hours=23, minutes=50))
    assert requests.run(registry, t + timedelta(hours=23, minutes=55)).held == {"day": 1}
    assert requests.run(registry, t + timedelta(hours=24, minutes=1)).requested == 1
    assert len(publisher.to(gw)) == 5
    triggers = [x["alert_trigger"] for x in reversed(pending_for(registry, patient))]
    assert triggers == [1, 2, 3, 4, 6]


def test_at_night_red_goes_and_yellow_waits_for_seven(
    registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    patient, gw = home
    night = cph(2027, 2, 11, 23, 0)
    yellow = quality(registry, patient, night)
    publisher = RecordingPublisher()
    requests = job(publisher)
    assert requests.run(registry, night + M).held == {"night": 1}
    assert requests.run(registry, cph(2027, 2, 12, 6, 59)).held == {"night": 1}
    assert publisher.to(gw) == []
    r = requests.run(registry, cph(2027, 2, 12, 7, 0))
    assert (r.requested, r.sent) == (1, 1)
    # A red finding that asks for confirmation goes at night (its own rate limit permitting).
    night2 = cph(2027, 2, 13, 2, 0)
    red = quality(registry, patient, night2, severity="red", category="clinical",
                  details={"confirm": True})  # fmt: skip
    r = requests.run(registry, night2 + M)
    assert (r.requested, r.sent) == (1, 1)
    assert [(x["alert_id"], x["reason"], x["severity"]) for x in pending_for(registry, patient)
            ] == [(red, "confirm", "red"), (yellow, "quality", "yellow")]  # fmt: skip
    # A clinical alert without the mark asks nothing.
    quality(registry, patient, night2 + 40 * M, kind="pulse", severity="red", category="clinical")
    assert requests.run(registry, night2 + 41 * M).requested == 0


def test_a_reliable_repeat_is_linked_and_resolves_the_notice(
    registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    patient, gw = home
    t = cph(2027, 2, 15, 10, 0)
    alert_id = quality(registry, patient, t)
    requests = job()
    requests.run(registry, t + M)
    # A pulse reading is no repeat of SpO2; the SpO2 reading still in the engine's queue is
    # linked only once the engine has evaluated it.
    observe(registry, patient, gw, kind="pulse", value=70, measured_at=t + 4 * M,
            ingested_at=t + 4 * M)  # fmt: skip
    good = observe(registry, patient, gw, measured_at=t + 5 * M, ingested_at=t + 5 * M)
    work = registry.execute(
        "INSERT INTO alert_work (patient_id, observation_ids, measured_from, measured_to)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (patient, [good], t + 5 * M, t + 5 * M),
    ).fetchone()[0]
    assert requests.run(registry, t + 6 * M).linked == 0
    registry.execute("DELETE FROM alert_work WHERE id = %s", (work,))
    r = requests.run(registry, t + 7 * M)
    assert (r.linked, r.resolved) == (1, 1)
    (row,) = pending_for(registry, patient)
    assert (row["state"], row["repeat_observation_id"], row["repeat_reliable"],
            row["alert_resolved"]) == ("answered", good, True, True)  # fmt: skip
    assert reasons(registry, alert_id)[-1] == ("cleared", REPEAT_RESOLVED_NOTE)
    assert registry.execute("SELECT state::text, resolved_by FROM alerts WHERE id = %s",
                            (alert_id,)).fetchone() == ("resolved", "engine")  # fmt: skip


def test_an_unreliable_repeat_asks_again_and_no_repeat_is_unanswered(
    registry: psycopg.Connection, home: tuple[str, str]
) -> None:
    patient, gw = home
    t = cph(2027, 2, 17, 10, 0)
    alert_id = quality(registry, patient, t)
    publisher = RecordingPublisher()
    requests = job(publisher)
    requests.run(registry, t + M)
    # Flagged again: the engine triggers the notice again on that reading.
    bad = observe(registry, patient, gw, value=90, measured_at=t + 5 * M,
                  ingested_at=t + 5 * M, flags=("body_movement",))  # fmt: skip
    trigger_again(registry, alert_id, t + 5 * M)
    r = requests.run(registry, t + 6 * M)
    assert (r.linked, r.resolved, r.held) == (1, 0, {"gap": 1})
    first = pending_for(registry, patient)[0]
    assert (first["state"], first["repeat_observation_id"], first["repeat_reliable"]) == (
        "answered", bad, False)  # fmt: skip
    assert requests.run(registry, t + 31 * M).requested == 1
    assert len(publisher.to(gw)) == 2
    # No repeat within 30 minutes of the second request: unanswered; the notice stays open.
    assert requests.run(registry, t + 60 * M).unanswered == 0
    assert requests.run(registry, t + 62 * M).unanswered == 1
    assert states(registry, patient) == [("quality", "answered"), ("quality", "unanswered")]
    assert registry.execute("SELECT state::text FROM alerts WHERE id = %s",
                            (alert_id,)).fetchone() == ("open",)  # fmt: skip


@pytest.mark.parametrize("column", [True, False], ids=["last-measured-column", "hypertable"])
def test_a_reminder_comes_before_the_blue_alert_once_per_silence(
    registry: psycopg.Connection, home: tuple[str, str], column: bool
) -> None:
    patient, gw = home
    last = cph(2027, 2, 19, 8, 0) + timedelta(days=0 if column else 7)
    observe(registry, patient, gw, measured_at=last, ingested_at=last)
    publisher = RecordingPublisher()
    requests = job(publisher)
    # patients.last_measured_at (migration 0010), or the readings when it is not there.
    requests._last_measured = None if column else False
    h = timedelta(hours=1)
    assert requests.run(registry, last + 26 * h).reminders == 0
    r = requests.run(registry, last + 27 * h)  # 75 % of the 36 hours, 11:00 the next day
    assert (r.reminders, r.sent) == (1, 1)
    (command,) = publisher.to(gw)
    assert command.kind is None
    assert command.message == (
        f"Husk at måle: vi har ikke fået målinger fra dig siden {last.day}. februar kl. 08.00."
        " Mål venligst, så snart du kan."
    )
    assert requests.run(registry, last + 30 * h).reminders == 0  # once per silence
    # The blue alert at 36 hours (as `check_missed` opens it): no reminder after it.
    add_alert(registry, patient, "team-test", rule="missed", category="missed",
              severity="blue", kind=None, value=None, opened_at=last + 36 * h + M,
              measured_at=last, message="missed")  # fmt: skip
    assert requests.run(registry, last + 37 * h).reminders == 0
    # A reading within 12 hours answers the reminder (and ends the blue alert, the engine's
    # part); the new silence gets its own reminder, at 07:00 when 27 hours fall in the night.
    again = last + 37 * h + 30 * M  # 20 February 21:30
    observe(registry, patient, gw, measured_at=again, ingested_at=again + 30 * M)
    assert requests.run(registry, again + 30 * M).linked == 1
    registry.execute("UPDATE alerts SET state = 'resolved' WHERE patient_id = %s"
                     " AND rule = 'missed'", (patient,))  # fmt: skip
    assert requests.run(registry, again + 27 * h).held == {"night": 1}  # 22 February 00:30
    day3 = cph(2027, 2, 22) + timedelta(days=0 if column else 7)
    assert requests.run(registry, day3 + 6 * 60 * M + 59 * M).held == {"night": 1}
    assert requests.run(registry, day3 + 7 * 60 * M).reminders == 1
    assert states(registry, patient) == [("reminder", "answered"), ("reminder", "sent")]
