"""Measure again and reminders: the hub's side of the patient's tablet (issue 12, point 5).

A job of the alert service (alerts/delivery_jobs.py, ``vv-patient-requests``), run every few
seconds with the time passed in. Each run, in this order:

1. **Links repeat readings.** A request the broker has (``sent``) is answered by the first
   reading of the kind asked for, measured after the reading that asked and arriving within
   ``repeat_window`` (30 minutes) of the request, once the engine has evaluated it (it is no
   longer in ``alert_work``): the reading is recorded on the request. A reliable repeat of
   a quality notice that the engine left open (quality notices clear themselves only after
   48 hours) resolves it, by the engine, "repeat measurement reliable"; an unreliable one
   has triggered the notice again, which asks again. Without a repeat in time the request
   is ``unanswered``.
2. **Decides new requests.** A quality notice (``quality:<kind>``, a reading the device
   flagged unreliable) opened or triggered again, or an alert whose finding asks for
   confirmation (``details.confirm`` true), asks the patient's gateway to measure again: one
   request per trigger of the alert. A patient silent for ``reminder_fraction`` of the
   missed-measurement threshold (27 of 36 hours) gets a reminder before the blue alert, once
   per silence. Per patient at most one request per ``min_gap`` (30 minutes) and
   ``per_day`` (4) in 24 hours; none at night (22-07 local time) unless the alert is red, so
   a yellow one waits for 07:00 (a trigger not asked about within ``max_wait`` is let go).
   Each request is a row of ``patient_requests`` (migration 0012), written before anything
   is sent; the unique indexes make a second decision for the same trigger or silence a
   no-op, so a restart doubles nothing.
3. **Publishes pending requests** as the wire's ``measure_again`` Command, QoS 1, to
   ``vv/v1/gw/{id}/cmd`` (alerts/command_publisher.py); the row is ``sent`` when the broker
   acknowledged it. A row left ``pending`` (broker down, a crash after the decision) is
   published again with the same command id, which the tablet shows once; one the broker
   has not taken within ``give_up`` is ``dropped``.

The texts are Danish, short and plain; English ones are ready for when patients have a
language (no such column yet). They never carry a name or a number of the reading.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from alerts.command_publisher import SERVICE_USER, CommandNotPublished, CommandPublisher
from alerts.engine import LOCK_SPACE
from vitalvagt.db import alert_lifecycle as lifecycle
from vitalvagt.quality import UNRELIABLE
from vitalvagt.settings import Settings
from vitalvagt.wire import MAX_FUTURE, Command, CommandName

log = logging.getLogger(__name__)

PLAN_LOCK = 0x5650_5251  # advisory lock: one service decides requests at a time ("VPRQ")
MISSED_HOURS = 36.0  # `vitalvagt alerts run --missed-hours`' default
REPEAT_RESOLVED_NOTE = "repeat measurement reliable"
LANGUAGE = "da"  # patients have no language column yet
PUBLISH_BATCH = 100


@dataclass(frozen=True)
class RequestPolicy:
    repeat_window: timedelta = timedelta(minutes=30)  # a repeat reading arrives within this
    min_gap: timedelta = timedelta(minutes=30)  # at most one request per patient in this
    per_day: int = 4  # and this many in 24 hours
    night_start: time = time(22)
    night_end: time = time(7)
    max_wait: timedelta = timedelta(hours=12)  # a trigger not asked about by then is let go
    give_up: timedelta = timedelta(hours=2)  # a request the broker never took is dropped
    missed_hours: float = MISSED_HOURS
    reminder_fraction: float = 0.75  # remind after this share of the missed threshold
    reminder_window: timedelta = timedelta(hours=12)  # a reading after it answers a reminder

    @property
    def reminder_after(self) -> timedelta:
        return timedelta(hours=self.missed_hours * self.reminder_fraction)


# --- pure policy ------------------------------------------------------------------------------


def at_night(now: datetime, zone: ZoneInfo, policy: RequestPolicy = RequestPolicy()) -> bool:
    """22:00-07:00 in the patient's local time (``zone``); never when the policy's night
    starts when it ends (no quiet hours)."""
    if policy.night_start == policy.night_end:
        return False
    t = now.astimezone(zone).time()
    return t >= policy.night_start or t < policy.night_end


def held_back(
    now: datetime,
    *,
    red: bool,
    recent: Sequence[datetime],
    zone: ZoneInfo,
    policy: RequestPolicy = RequestPolicy(),
) -> str | None:
    """Why a request may not go to a patient now: 'night', 'gap' (one in the last
    ``min_gap``) or 'day' (``per_day`` in 24 hours); None: it may. ``recent``: the times of
    the patient's earlier requests."""
    if not red and at_night(now, zone, policy):
        return "night"
    if any(now - policy.min_gap < t <= now for t in recent):
        return "gap"
    if sum(now - timedelta(days=1) < t <= now for t in recent) >= policy.per_day:
        return "day"
    return None


_AGAIN = {
    "da": {
        "spo2": "Mål venligst iltmætningen igen: sid stille i 5 minutter, sæt måleren på en"
        " varm finger, og hold hånden i ro, mens den måler.",
        "pulse": "Mål venligst pulsen igen: sid stille i 5 minutter, og hold hånden i ro,"
        " mens den måler.",
        "bp_systolic": "Mål venligst blodtrykket igen: sid stille i 5 minutter med fødderne"
        " i gulvet, sæt manchetten tæt om den bare overarm, og sid stille uden at tale,"
        " mens den måler.",
        "weight": "Vej dig venligst igen: stå stille midt på vægten uden sko.",
        "temperature": "Mål venligst temperaturen igen, sådan som du har lært det.",
        None: "Mål venligst igen: sid stille i 5 minutter, og brug apparatet, sådan som du"
        " har lært det.",
    },
    "en": {
        "spo2": "Please measure your oxygen saturation again: sit still for 5 minutes, put"
        " the meter on a warm finger and keep your hand still while it measures.",
        "pulse": "Please measure your pulse again: sit still for 5 minutes and keep your"
        " hand still while it measures.",
        "bp_systolic": "Please measure your blood pressure again: sit still for 5 minutes"
        " with your feet on the floor, put the cuff snugly on your bare upper arm, and sit"
        " still without talking while it measures.",
        "weight": "Please weigh yourself again: stand still in the middle of the scale,"
        " without shoes.",
        "temperature": "Please take your temperature again, the way you were shown.",
        None: "Please measure again: sit still for 5 minutes and use the device the way you"
        " were shown.",
    },
}
_MONTHS_DA = ("januar", "februar", "marts", "april", "maj", "juni", "juli", "august",
              "september", "oktober", "november", "december")  # fmt: skip


def measure_again_text(kind: str | None, language: str = LANGUAGE) -> str:
    texts = _AGAIN.get(language, _AGAIN["da"])
    return texts.get(kind, texts[None])


def reminder_text(since: datetime, zone: ZoneInfo, language: str = LANGUAGE) -> str:
    local = since.astimezone(zone)
    if language == "en":
        return (f"Remember to measure: we have had no measurements from you since"
                f" {local:%d %B at %H:%M}. Please measure when you can.")  # fmt: skip
    when = f"{local.day}. {_MONTHS_DA[local.month - 1]} kl. {local:%H.%M}"
    return (f"Husk at måle: vi har ikke fået målinger fra dig siden {when}."
            " Mål venligst, så snart du kan.")  # fmt: skip


# --- the job ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    linked: int = 0
    resolved: int = 0
    unanswered: int = 0
    requested: int = 0
    reminders: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    held: dict[str, int] = field(default_factory=dict)

    def busy(self) -> bool:
        return bool(self.linked or self.unanswered or self.requested or self.reminders
                    or self.sent or self.failed or self.dropped)  # fmt: skip


@dataclass(frozen=True)
class _Candidate:
    patient_id: str
    gateway_id: str
    red: bool
    reason: str  # quality, confirm, reminder
    kind: str | None
    severity: str | None
    alert_id: int | None = None
    trigger: int | None = None
    observation_id: uuid.UUID | None = None
    measured_at: datetime | None = None
    silence_since: datetime | None = None


# The patient's gateway: the active one seen last.
_GATEWAY = ("(SELECT g.id FROM gateways g WHERE g.patient_id = p.id AND g.active"
            " ORDER BY g.last_seen_at DESC NULLS LAST, g.created_at DESC LIMIT 1)")  # fmt: skip


class PatientRequests:
    """The job: ``run(conn, now)``; ``close()`` closes its broker connection."""

    def __init__(self, publisher: CommandPublisher, *, zone: ZoneInfo,
                 policy: RequestPolicy = RequestPolicy()) -> None:  # fmt: skip
        self.publisher = publisher
        self.zone = zone
        self.policy = policy
        self._last_measured: bool | None = None  # patients.last_measured_at exists
        self._broker_down = False

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, zone: ZoneInfo,
                      policy: RequestPolicy = RequestPolicy()) -> PatientRequests:  # fmt: skip
        """Publishing as ``vv-alerts`` on the broker of ``settings`` (VV_*; the embedded
        stack's by default), resolved at the first publish."""
        from vitalvagt.endpoints import mqtt_endpoint

        s = settings if settings is not None else Settings()
        return cls(CommandPublisher(lambda: mqtt_endpoint(s, SERVICE_USER)), zone=zone,
                   policy=policy)  # fmt: skip

    def close(self) -> None:
        self.publisher.close()

    def run(self, conn: psycopg.Connection, now: datetime) -> RunResult:
        result = RunResult()
        self.link_repeats(conn, now, result)
        self.decide(conn, now, result)
        self.publish_pending(conn, now, result)
        if result.busy():
            log.info("patient requests: %d decided (%d reminders), %d sent, %d failed, %d"
                     " dropped, %d repeats linked (%d notices resolved), %d unanswered, held %s",
                     result.requested, result.reminders, result.sent, result.failed,
                     result.dropped, result.linked, result.resolved, result.unanswered,
                     result.held or "none")  # fmt: skip
        return result

    # --- 1. repeat readings ---------------------------------------------------------------
    def link_repeats(self, conn: psycopg.Connection, now: datetime, result: RunResult) -> None:
        p = self.policy
        rows = conn.execute(
            "SELECT r.id, r.patient_id, r.reason, r.kind, r.alert_id, r.created_at,"
            " coalesce(r.first_measured_at, r.silence_since), coalesce(r.sent_at, r.created_at)"
            " FROM patient_requests r WHERE r.state = 'sent' AND r.created_at <= %s ORDER BY r.id",
            (now,),
        ).fetchall()
        for rid, patient, reason, kind, alert_id, created, after, sent in rows:
            window = p.reminder_window if reason == "reminder" else p.repeat_window
            with conn.transaction():
                # The engine's lock on the patient: no evaluation of theirs runs meanwhile.
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                             (LOCK_SPACE, patient))  # fmt: skip
                repeat = conn.execute(
                    "SELECT o.id, o.measured_at, NOT (o.flags && %s::text[]),"
                    " EXISTS (SELECT 1 FROM alert_work w WHERE w.patient_id = o.patient_id"
                    "  AND o.id = ANY(w.observation_ids))"
                    " FROM observations o WHERE o.patient_id = %s"
                    " AND (%s::text IS NULL OR o.kind = %s)"
                    " AND o.measured_at > %s AND o.measured_at <= %s"
                    " AND o.ingested_at >= %s AND o.ingested_at <= %s"
                    " ORDER BY o.measured_at, o.id LIMIT 1",
                    (sorted(UNRELIABLE), patient, kind, kind, after, now + MAX_FUTURE,
                     created, sent + window),
                ).fetchone()  # fmt: skip
                if repeat is None:
                    if now > sent + window:
                        conn.execute("UPDATE patient_requests SET state = 'unanswered',"
                                     " closed_at = %s WHERE id = %s", (now, rid))  # fmt: skip
                        result.unanswered += 1
                    continue
                obs_id, measured_at, reliable, waiting = repeat
                if waiting:
                    continue  # not evaluated yet: linked on a later run
                resolved = False
                if reason == "quality" and reliable:
                    resolved = self._resolve_if_not_again(conn, alert_id, measured_at)
                conn.execute(
                    "UPDATE patient_requests SET state = 'answered', repeat_observation_id = %s,"
                    " repeat_measured_at = %s, repeat_reliable = %s, alert_resolved = %s,"
                    " closed_at = %s WHERE id = %s",
                    (obs_id, measured_at, reliable, resolved, now, rid),
                )
                result.linked += 1
                result.resolved += resolved
                log.info("patient %s: request %d answered by reading %s (%s)%s", patient, rid,
                         obs_id, "reliable" if reliable else "unreliable again",
                         f", alert {alert_id} resolved" if resolved else "")  # fmt: skip

    def _resolve_if_not_again(self, conn: psycopg.Connection, alert_id: int,
                              repeat_at: datetime) -> bool:  # fmt: skip
        """Resolve the quality notice unless it fired on the repeat or a later reading."""
        row = conn.execute(
            "SELECT state::text, measured_at FROM alerts WHERE id = %s FOR UPDATE", (alert_id,)
        ).fetchone()
        if row is None or row[0] not in ("open", "acknowledged"):
            return False  # resolved already (cleared, or by a nurse), or snoozed by a nurse
        if row[1] is not None and row[1] >= repeat_at:
            return False
        return lifecycle.resolve(conn, alert_id, by=lifecycle.ENGINE, note=REPEAT_RESOLVED_NOTE)

    # --- 2. decisions ---------------------------------------------------------------------
    def decide(self, conn: psycopg.Connection, now: datetime, result: RunResult) -> None:
        with conn.transaction():
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PLAN_LOCK,)
                                ).fetchone()[0]:  # fmt: skip
                return  # another alert service decides right now
            found = self._alert_candidates(conn, now) + self._reminder_candidates(conn, now)
            if not found:
                return
            recent: dict[str, list[datetime]] = {}
            for pid, at in conn.execute(
                "SELECT patient_id, created_at FROM patient_requests WHERE patient_id = ANY(%s)"
                " AND created_at > %s AND created_at <= %s AND state <> 'dropped'",
                (sorted({c.patient_id for c in found}), now - timedelta(days=1), now),
            ).fetchall():
                recent.setdefault(pid, []).append(at)
            for c in found:
                times = recent.setdefault(c.patient_id, [])
                why = held_back(now, red=c.red, recent=times, zone=self.zone, policy=self.policy)
                if why is not None:
                    result.held[why] = result.held.get(why, 0) + 1
                    continue
                if self._insert(conn, c, now):
                    times.append(now)
                    if c.reason == "reminder":
                        result.reminders += 1
                    result.requested += 1

    def _alert_candidates(self, conn: psycopg.Connection, now: datetime) -> list[_Candidate]:
        rows = conn.execute(
            "SELECT * FROM (SELECT a.id, a.patient_id, a.trigger_count, a.severity, a.kind,"
            " a.category, a.observation_id, a.measured_at, " + _GATEWAY + " AS gw"
            " FROM alerts a JOIN patients p ON p.id = a.patient_id"
            " WHERE a.state IN ('open', 'acknowledged')"
            " AND (a.category = 'quality' OR a.details->>'confirm' = 'true')"
            " AND a.last_triggered_at > %s AND a.last_triggered_at <= %s"
            " AND p.active AND (p.paused_until IS NULL OR p.paused_until <= %s)"
            " AND NOT EXISTS (SELECT 1 FROM patient_requests r WHERE r.alert_id = a.id"
            "  AND r.alert_trigger = a.trigger_count)) c WHERE c.gw IS NOT NULL"
            " ORDER BY CASE c.severity WHEN 'red' THEN 0 WHEN 'yellow' THEN 1 ELSE 2 END, c.id",
            (now - self.policy.max_wait, now, now),
        ).fetchall()
        out = []
        for aid, pid, trig, sev, kind, cat, oid, at, gw in rows:
            reason = "quality" if cat == "quality" else "confirm"
            out.append(_Candidate(patient_id=pid, gateway_id=gw, red=sev == "red",
                                  reason=reason, kind=kind, severity=sev, alert_id=aid,
                                  trigger=trig, observation_id=oid, measured_at=at))  # fmt: skip
        return out

    def _reminder_candidates(self, conn: psycopg.Connection, now: datetime) -> list[_Candidate]:
        p = self.policy
        if self._last_measured is None:
            self._last_measured = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name ="
                " 'patients' AND column_name = 'last_measured_at')"
            ).fetchone()[0]
        # Ingest keeps patients.last_measured_at (migration 0010); without it, the
        # hypertable is asked per patient (slow with many patients: the sweep's old way).
        last = ("p.last_measured_at" if self._last_measured else
                "(SELECT max(o.measured_at) FROM observations o WHERE o.patient_id = p.id"
                " AND o.measured_at > %(horizon)s AND o.measured_at <= %(now)s)")  # fmt: skip
        rows = conn.execute(
            "SELECT pid, gw, since FROM (SELECT p.id AS pid, g.id AS gw,"
            f" coalesce(CASE WHEN {last} > %(horizon)s THEN {last} END, g.created_at) AS since,"
            " row_number() OVER (PARTITION BY p.id ORDER BY g.last_seen_at DESC NULLS LAST,"
            "  g.created_at DESC) AS n"
            " FROM patients p JOIN gateways g ON g.patient_id = p.id AND g.active"
            " WHERE p.active AND (p.paused_until IS NULL OR p.paused_until <= %(now)s)) s"
            " WHERE n = 1 AND since <= %(remind)s AND since > %(missed)s"
            " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.patient_id = s.pid"
            "  AND a.rule = 'missed' AND a.state <> 'resolved')"
            " AND NOT EXISTS (SELECT 1 FROM patient_requests r WHERE r.patient_id = s.pid"
            "  AND r.reason = 'reminder' AND r.silence_since = s.since)"
            " ORDER BY since, pid",
            {"now": now, "horizon": now - timedelta(days=90), "remind": now - p.reminder_after,
             "missed": now - timedelta(hours=p.missed_hours)},
        ).fetchall()  # fmt: skip
        return [_Candidate(patient_id=pid, gateway_id=gw, red=False, reason="reminder",
                           kind=None, severity=None, silence_since=since)
                for pid, gw, since in rows]  # fmt: skip

    def _insert(self, conn: psycopg.Connection, c: _Candidate, now: datetime) -> bool:
        if c.reason == "reminder":
            assert c.silence_since is not None
            message = reminder_text(c.silence_since, self.zone)
        else:
            message = measure_again_text(c.kind)
        row = conn.execute(
            "INSERT INTO patient_requests (command_id, patient_id, gateway_id, alert_id,"
            " alert_trigger, reason, severity, kind, message, silence_since,"
            " first_observation_id, first_measured_at, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (uuid.uuid4(), c.patient_id, c.gateway_id, c.alert_id, c.trigger, c.reason,
             c.severity, c.kind, message, c.silence_since, c.observation_id, c.measured_at,
             now),
        ).fetchone()  # fmt: skip
        if row is not None:
            log.info("patient %s: request %d (%s, %s) for gateway %s%s", c.patient_id, row[0],
                     c.reason, c.kind or "any", c.gateway_id,
                     f", alert {c.alert_id}" if c.alert_id else "")  # fmt: skip
        return row is not None

    # --- 3. publishing --------------------------------------------------------------------
    def publish_pending(self, conn: psycopg.Connection, now: datetime, result: RunResult) -> None:
        with conn.transaction():
            # Locked while published: a second alert service skips them.
            rows = conn.execute(
                "SELECT id, command_id, gateway_id, patient_id, kind, message, created_at"
                " FROM patient_requests WHERE state = 'pending' AND created_at <= %s"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, PUBLISH_BATCH),
            ).fetchall()
            for rid, command_id, gw, patient, kind, message, created in rows:
                if now - created > self.policy.give_up:
                    conn.execute("UPDATE patient_requests SET state = 'dropped', closed_at = %s"
                                 " WHERE id = %s", (now, rid))  # fmt: skip
                    result.dropped += 1
                    log.warning("patient %s: request %d dropped, the broker did not take it"
                                " within %s", patient, rid, self.policy.give_up)  # fmt: skip
                    continue
                command = Command(id=command_id, command=CommandName.MEASURE_AGAIN,
                                  issued_at=created, kind=kind, message=message)  # fmt: skip
                try:
                    self.publisher.publish(gw, command)
                except CommandNotPublished as exc:
                    conn.execute("UPDATE patient_requests SET publish_attempts ="
                                 " publish_attempts + 1, last_error = %s WHERE id = %s",
                                 (exc.reason[:500], rid))  # fmt: skip
                    result.failed += 1
                    if not self._broker_down:
                        log.warning("patient requests: %s", exc)
                    self._broker_down = True
                    break  # the broker is the problem: the rest waits for the next run
                conn.execute("UPDATE patient_requests SET state = 'sent', sent_at = %s,"
                             " publish_attempts = publish_attempts + 1 WHERE id = %s",
                             (now, rid))  # fmt: skip
                result.sent += 1
                if self._broker_down:
                    log.info("patient requests: the broker takes commands again")
                self._broker_down = False


def pending_for(conn: psycopg.Connection, patient_id: str) -> list[dict[str, Any]]:
    """A patient's requests, newest first (for operators and tests)."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM patient_requests WHERE patient_id = %s ORDER BY id DESC",
            (patient_id,),
        ).fetchall()
