"""What the nurses' web view needs of the API: one patient's alerts and those since a time,
each with the patient's group and the doctor responsible now (the care loaded in one query
for the whole list); an alert's ISBAR text; the series with the unreliable readings apart;
the personal baseline band exactly as the trend rules compute it; the meter and tablet of
each latest reading; and logout. Each against the real database, scoped: team B's users
see none of team A's data, and it is a 404 exactly like an unknown id."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts.baseline import baseline, kind_days
from alerts.series import PatientContext, Series
from alerts.weight import plausible_weights
from api.app import create_app
from api.config import OidcConfig
from api.queries import observations as qo
from tests.api.conftest import Team, World, api_config, auth, login, own_address
from vitalvagt.baseline import DEFAULT_WINDOW, SPREAD_FLOORS
from vitalvagt.db import routing_data
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.roles import Role
from vitalvagt.routing import responsible_doctor
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack
PROBLEM = "application/problem+json"
DAY = 86_400
OFFSET = 3_600  # the rules' days start at 00:00 UTC+1


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    return r.json()


def _patient(conn: psycopg.Connection, t: Team, name: str, group: str = "copd") -> str:
    pid = f"{t.patient}-{name}"
    conn.execute(
        "INSERT INTO patients (id, municipality_id, team_id, patient_group)"
        " VALUES (%s, %s, %s, %s)",
        (pid, t.municipality, t.team, group),
    )
    return pid


def _alert(
    conn: psycopg.Connection,
    t: Team,
    patient: str,
    rule: str,
    *,
    opened: datetime | None = None,
    state: str = "open",
    severity: str = "yellow",
) -> int:
    return conn.execute(
        "INSERT INTO alerts (patient_id, team_id, rule, severity, message, opened_at, state,"
        " resolved_at) VALUES (%s, %s, %s, %s, 'test', coalesce(%s, now()), %s,"
        " CASE WHEN %s = 'resolved' THEN now() END) RETURNING id",
        (patient, t.team, rule, severity, opened, state, state),
    ).fetchone()[0]


def _reading(
    conn: psycopg.Connection,
    t: Team,
    patient: str,
    kind: str,
    at: datetime,
    value: float,
    flags: tuple[str, ...] = (),
    model: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
        " device_address, device_model, kind, value, unit, flags)"
        " VALUES (%s, %s, %s, %s, %s, 'AA:BB:CC:DD:EE:01', %s, %s, %s, %s, %s)",
        (uuid.uuid4(), at, at, patient, t.gateway, model, kind, value,
         KIND_SPECS[Kind(kind)].unit, list(flags)),
    )  # fmt: skip


def _ids(r: Any) -> list[int]:
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()]


# -- 1. the alert list: one patient, since, group and the doctor responsible now -----------


def test_the_alerts_of_one_patient_and_those_since_a_time(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a, b = world.a, world.b
    other = _patient(registry, a, "x", "heart_failure")
    theirs = _alert(registry, a, other, "limit:pulse")
    long_ago = datetime.now(UTC) - timedelta(days=10)
    old_open = _alert(registry, a, a.patient, "trend:copd", opened=long_ago)
    old_done = _alert(registry, a, a.patient, "limit:weight", opened=long_ago, state="resolved")
    new_done = _alert(registry, a, a.patient, "news2", state="resolved")
    h = auth(client, a.users[Role.NURSE])
    every = {"state": ["open", "acknowledged", "resolved"]}

    assert sorted(_ids(client.get("/alerts", params={"patient": a.patient}, headers=h))) == [
        a.alert,
        old_open,
    ]
    assert _ids(client.get("/alerts", params={"patient": other}, headers=h)) == [theirs]
    mine = {**every, "patient": a.patient}
    assert sorted(_ids(client.get("/alerts", params=mine, headers=h))) == sorted(
        [a.alert, old_open, old_done, new_done]
    )
    # since: opened then or later, or still active however old (the old resolved one is out)
    since = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    assert sorted(_ids(client.get("/alerts", params={**mine, "since": since}, headers=h))) == (
        sorted([a.alert, old_open, new_done])
    )
    assert sorted(_ids(client.get("/alerts", params={**every, "since": since}, headers=h))) == (
        sorted([a.alert, old_open, new_done, theirs])
    )
    _problem(client.get("/alerts", params={"since": "2026-01-01T00:00:00"}, headers=h), 422)
    _problem(client.get("/alerts", params={"patient": "x"}, headers=h), 422)
    # the read of one patient's alerts is in that patient's access log
    rows = registry.execute(
        "SELECT detail->>'rows' FROM audit_log WHERE actor = %s AND action = 'list_alerts'"
        " AND patient_id = %s ORDER BY id",
        (a.users[Role.NURSE], a.patient),
    ).fetchall()
    assert rows == [("2",), ("4",), ("3",)]

    # team B: nothing of team A's, not even with A's patient named; its own as before
    hb = auth(client, b.users[Role.NURSE])
    assert _ids(client.get("/alerts", params={**every, "patient": a.patient}, headers=hb)) == []
    assert _ids(client.get("/alerts", params={"patient": b.patient}, headers=hb)) == [b.alert]


def test_each_alert_names_the_patients_group_and_the_doctor_responsible_now(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a = world.a
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    registry.execute(
        "UPDATE patients SET gp_name = 'Lægehuset Nord', gp_phone = '+4586000001',"
        " hospital_name = 'AUH Lungemedicin', hospital_phone = '+4578450000',"
        " hospital_responsible_until = %s WHERE id = %s",
        (until, a.patient),
    )
    other = _patient(registry, a, "y", "heart_failure")
    registry.execute(
        "UPDATE patients SET gp_name = 'Lægerne i Byen', gp_phone = '+4586000002' WHERE id = %s",
        (other,),
    )
    registry.execute(
        "INSERT INTO out_of_hours_contacts (municipality_id, name, phone)"
        " VALUES (%s, 'Lægevagten Midt', '+4570113131')",
        (a.municipality,),
    )
    theirs = _alert(registry, a, other, "weight:gain3d")
    care = routing_data.load_care(registry, other)
    assert care is not None

    def doctor_now() -> dict[str, Any]:
        d = responsible_doctor(care, datetime.now(UTC))
        return {"role": d.role.value, "name": d.name, "phone": d.phone, "until": None,
                "holiday": d.holiday}  # fmt: skip

    h = auth(client, a.users[Role.NURSE])
    before = doctor_now()
    listed = {x["id"]: x for x in client.get("/alerts", headers=h).json()}
    detail = client.get(f"/alerts/{theirs}", headers=h).json()
    after = doctor_now()

    hospital = listed[a.alert]["responsible_doctor"]
    assert listed[a.alert]["group"] == "copd"
    assert {k: v for k, v in hospital.items() if k != "until"} == {
        "role": "hospital", "name": "AUH Lungemedicin", "phone": "+4578450000", "holiday": None
    }  # fmt: skip
    assert datetime.fromisoformat(hospital["until"]) == until
    # GP or vagtlæge by the clock (and the Danish holidays) now, as vitalvagt.routing says
    assert listed[theirs]["group"] == "heart_failure"
    assert listed[theirs]["responsible_doctor"] in (before, after)
    assert detail["group"] == "heart_failure"
    assert detail["responsible_doctor"] in (before, after)
    assert client.get(f"/alerts/{a.alert}", headers=h).json()["responsible_doctor"] == hospital


def test_the_list_loads_the_teams_once_and_all_the_care_in_one_query(
    client: TestClient, world: World, registry: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = world.a
    patients = [_patient(registry, a, f"m{i}") for i in range(6)]
    for p in patients:
        _alert(registry, a, p, "limit:spo2")
    calls: dict[str, list[Any]] = {"teams": [], "cares": []}
    load_teams, load_cares = routing_data.load_teams, routing_data.load_cares

    def teams(conn: psycopg.Connection) -> Any:
        calls["teams"].append(1)
        return load_teams(conn)

    def cares(conn: psycopg.Connection, ids: Any) -> Any:
        calls["cares"].append(set(ids))
        return load_cares(conn, ids)

    def one_by_one(*_: Any) -> None:
        raise AssertionError("load_care per alert")

    monkeypatch.setattr(routing_data, "load_teams", teams)
    monkeypatch.setattr(routing_data, "load_cares", cares)
    monkeypatch.setattr(routing_data, "load_care", one_by_one)
    r = client.get("/alerts", headers=auth(client, a.users[Role.NURSE]))
    assert len(_ids(r)) == 7
    assert calls == {"teams": [1], "cares": [{a.patient, *patients}]}
    assert all(x["responsible_doctor"]["role"] for x in r.json())

    # the batch gives what one load_care each gives (the same row -> PatientCare code)
    monkeypatch.undo()
    batch = routing_data.load_cares(registry, [a.patient, *patients, "p-nobody"])
    assert set(batch) == {a.patient, *patients}
    assert all(batch[p] == routing_data.load_care(registry, p) for p in batch)


# -- 2. ISBAR --------------------------------------------------------------------------------


def test_the_isbar_text_of_an_alert_in_danish_or_english(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a, b = world.a, world.b
    h = auth(client, a.users[Role.NURSE])
    da = client.get(f"/alerts/{a.alert}/isbar", headers=h)
    assert da.status_code == 200, da.text
    body = da.json()
    assert set(body) == {"alert_id", "lang", "text"}
    assert body["alert_id"] == a.alert and body["lang"] == "da"
    assert body["text"].startswith("I – Identifikation:") and a.patient in body["text"]
    en = client.get(f"/alerts/{a.alert}/isbar", params={"lang": "en"}, headers=h).json()
    assert en["lang"] == "en" and en["text"].startswith("I – Identify:")
    assert "R – Recommendation:" in en["text"]
    assert _problem(client.get(f"/alerts/{a.alert}/isbar", params={"lang": "fr"}, headers=h), 422)
    row = registry.execute(
        "SELECT patient_id, detail->>'lang' FROM audit_log WHERE actor = %s"
        " AND action = 'read_isbar' ORDER BY id",
        (a.users[Role.NURSE],),
    ).fetchall()
    assert row == [(a.patient, "da"), (a.patient, "en")]

    hb = auth(client, b.users[Role.NURSE])
    foreign = _problem(client.get(f"/alerts/{a.alert}/isbar", headers=hb), 404)
    unknown = _problem(client.get("/alerts/999999999/isbar", headers=hb), 404)
    assert foreign["title"] == unknown["title"] and a.patient not in str(foreign)
    assert client.get(f"/alerts/{b.alert}/isbar", headers=hb).status_code == 200


LIMIT_DETAILS = '{"limit": 85, "below": true, "outside": 1}'


def test_each_alert_says_what_it_is_about_in_the_language_asked_for(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    """The engine's message is English; the list's headline is Danish unless asked otherwise,
    from the alert's own fields: the reading and the limit it crossed."""
    a = world.a
    pid = _patient(registry, a, f"headline-{uuid.uuid4().hex[:6]}")
    alert = registry.execute(
        "INSERT INTO alerts (patient_id, team_id, rule, severity, category, kind, value,"
        " measured_at, message, details) VALUES (%s, %s, 'limit:spo2', 'red', 'clinical',"
        " 'spo2', 84.5, now(), %s, %s) RETURNING id",
        (pid, a.team, "SpO2 84.5 % is below the alert limit 85 %.", LIMIT_DETAILS),
    ).fetchone()[0]
    h = auth(client, a.users[Role.NURSE])

    def listed(**params: str) -> str:
        r = client.get("/alerts", params={"patient": pid, **params}, headers=h)
        assert r.status_code == 200, r.text
        (row,) = r.json()
        assert row["message"].startswith("SpO2 84.5 %")  # the engine's text is kept as it is
        return row["headline"]

    assert listed() == "Iltmætning 84,5 % under 85 %"
    assert listed(lang="en") == "Oxygen saturation 84.5 % below 85 %"
    one = client.get(f"/alerts/{alert}", params={"lang": "en"}, headers=h).json()
    assert one["headline"] == "Oxygen saturation 84.5 % below 85 %"
    assert _problem(client.get("/alerts", params={"lang": "fr"}, headers=h), 422)


def test_a_note_to_an_acknowledged_alert_keeps_its_state_and_is_in_its_history(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    """One tap acknowledges from the list; the note comes after, to the same alert."""
    a, b = world.a, world.b
    pid = _patient(registry, a, f"note-{uuid.uuid4().hex[:6]}")
    alert = _alert(registry, a, pid, "limit:pulse")
    h = auth(client, a.users[Role.NURSE])
    assert client.post(f"/alerts/{alert}/acknowledge", json={}, headers=h).status_code == 200
    r = client.post(f"/alerts/{alert}/note", json={"note": "Ringet op: måler igen"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "acknowledged" and body["note"] == "Ringet op: måler igen"
    last = body["history"][-1]
    assert (last["from_state"], last["to_state"], last["reason"], last["note"]) == (
        "acknowledged", "acknowledged", "noted", "Ringet op: måler igen")  # fmt: skip
    assert last["by"] == a.users[Role.NURSE]
    assert _problem(client.post(f"/alerts/{alert}/note", json={"note": "  "}, headers=h), 422)
    assert _problem(client.post(f"/alerts/{alert}/note", json={}, headers=h), 422)
    hb = auth(client, b.users[Role.NURSE])  # another team: the same 404 as an unknown alert
    assert _problem(client.post(f"/alerts/{alert}/note", json={"note": "x"}, headers=hb), 404)
    resolved = {"reason": "målt igen: 72 /min"}
    assert client.post(f"/alerts/{alert}/resolve", json=resolved, headers=h).status_code == 200
    late = _problem(client.post(f"/alerts/{alert}/note", json={"note": "for sent"}, headers=h), 409)
    assert "resolved" in late["detail"]


# -- 3. the series, the unreliable readings apart --------------------------------------------


def test_the_series_keeps_the_unreliable_readings_apart_on_the_same_buckets(
    client: TestClient, world: World, registry: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = world.a
    now = datetime.now(UTC).replace(microsecond=0)
    good = [(1, 70, ()), (2, 72, ("validated",)), (7, 75, ("irregular_pulse",)), (13, 80, ())]
    bad = [(2.5, 140, ("body_movement",)), (19, 150, ("low_perfusion", "validated"))]
    for hours, value, flags in good + bad:
        _reading(registry, a, a.patient, "pulse", now - timedelta(hours=hours), value, flags)
    since = now - timedelta(hours=24)
    params = {"kind": "pulse", "since": since.isoformat(), "until": now.isoformat(), "points": 4}
    statements: list[str] = []
    fetch = qo.fetch

    def counted(conn: psycopg.Connection, sql: str, p: dict[str, Any]) -> Any:
        statements.append(sql)
        return fetch(conn, sql, p)

    monkeypatch.setattr(qo, "fetch", counted)
    r = client.get(
        f"/patients/{a.patient}/series", params=params, headers=auth(client, a.users[Role.NURSE])
    )
    assert r.status_code == 200, r.text
    assert len(statements) == 1  # one query for both
    s = r.json()
    assert sum(x["n"] for x in s["buckets"]) == len(good)
    assert max(x["max"] for x in s["buckets"]) == 80  # no unreliable value among them
    assert sum(x["n"] for x in s["unreliable"]) == len(bad)
    assert sorted(x["max"] for x in s["unreliable"]) == [140, 150]
    # the same grid: every bucket starts a whole number of widths after since
    width = s["bucket_s"]
    assert width == 6 * 3600
    for x in s["buckets"] + s["unreliable"]:
        assert (datetime.fromisoformat(x["bucket"]) - since).total_seconds() % width == 0
    # the 2 h and 2.5 h readings share a bucket: it is in both lists under the same time
    assert {x["bucket"] for x in s["buckets"]} & {x["bucket"] for x in s["unreliable"]}

    hb = auth(client, world.b.users[Role.NURSE])
    _problem(client.get(f"/patients/{a.patient}/series", params=params, headers=hb), 404)


# -- 4. the personal baseline band -------------------------------------------------------------


def _at(day: int, hour: float) -> datetime:
    """An instant of the rules' day ``day``, ``hour`` hours after its start."""
    return datetime.fromtimestamp(day * DAY - OFFSET + round(hour * 3600), UTC)


def _band(values: list[float], floor: float) -> tuple[float, float]:
    m = statistics.median(values)
    dev = [abs(v - m) for v in values]
    return m, max(1.4826 * statistics.median(dev), 1.2533 * statistics.fmean(dev), floor)


def test_the_baseline_band_is_the_trend_rules_own(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a = world.a
    p = _patient(registry, a, "base", "both")
    at = datetime.now(UTC).replace(microsecond=0)
    day = (int(at.timestamp()) + OFFSET) // DAY
    first, gap = day - 35, day - 7  # the window: days first .. gap - 1
    rows: list[tuple[str, datetime, float, tuple[str, ...]]] = []

    spo2 = [94, 95, 93, 94, 96, 94, 95, 94, 93, 91]
    for i, v in enumerate(spo2):
        rows += [("spo2", _at(first + i, 8), v - 1, ()), ("spo2", _at(first + i, 20), v + 1, ())]
    rows += [
        ("spo2", _at(first + 3, 12), 70, ("body_movement",)),  # unreliable: not counted
        ("spo2", _at(first, 0) - timedelta(seconds=60), 80, ()),  # before the window
        ("spo2", _at(gap, 0) - timedelta(seconds=60), 97, ()),  # its last day, 22:59 UTC+1
        ("spo2", _at(gap, 0) + timedelta(seconds=60), 80, ()),  # the gap: left out
        ("spo2", at - timedelta(hours=1), 80, ()),
    ]
    rows += [("pulse", _at(first + i, 9), 80 + i, ()) for i in range(6)]  # 6 days: none yet
    weights = [80.2, 80.0, 80.4, 79.8, 80.1, 80.3, 80.0, 80.2]
    rows += [("weight", _at(first - 5 + i, 7), 80.0, ()) for i in range(5)]  # before it
    rows += [("weight", _at(first + i, 7), w, ()) for i, w in enumerate(weights)]
    # another person on the scale: judged by the weights before it, some before the window
    rows += [("weight", _at(first, 7.5), 95.0, ())]
    bp = [130, 142, 125, 138, 150, 128, 135]
    rows += [("bp_systolic", _at(first + 2 * i, 10), v, ()) for i, v in enumerate(bp)]
    rows += [("temperature", _at(first + i, 8), 38.5, ("questionable",)) for i in range(9)]
    for kind, t, value, flags in rows:
        _reading(registry, a, p, kind, t, value, flags)

    h = auth(client, a.users[Role.NURSE])
    r = client.get(f"/patients/{p}/baseline", params={"at": at.isoformat()}, headers=h)
    assert r.status_code == 200, r.text
    got = {x["kind"]: x for x in r.json()}
    assert list(got) == ["spo2", "weight", "bp_systolic"]  # pulse, temperature: none yet
    since, until = _at(first, 0), _at(gap, 0)
    for kind, values in (("spo2", [*spo2, 97]), ("weight", weights), ("bp_systolic", bp)):
        x = got[kind]
        median, spread = _band(values, SPREAD_FLOORS.get(Kind(kind), 0.0))
        assert x["median"] == pytest.approx(median) and x["spread"] == pytest.approx(spread)
        assert x["low"] == pytest.approx(median - spread)
        assert x["high"] == pytest.approx(median + spread)
        assert x["days"] == len(values) and x["unit"] == KIND_SPECS[Kind(kind)].unit
        assert datetime.fromisoformat(x["since"]) == since
        assert datetime.fromisoformat(x["until"]) == until
    assert got["weight"]["spread"] == 0.4  # steady: the floor

    # the alert engine's own computation over the same readings gives the same numbers
    series = Series.build(
        [int(t.timestamp()) for _, t, _, _ in rows],
        [Kind(k) for k, _, _, _ in rows],
        [v for _, _, v, _ in rows],
        [not f for _, _, _, f in rows],
    )
    ctx = PatientContext("both")
    for kind in (Kind.SPO2, Kind.WEIGHT, Kind.BP_SYSTOLIC, Kind.PULSE):
        keep = plausible_weights(series, ctx) if kind is Kind.WEIGHT else None
        kd = kind_days(series, kind, ctx, keep)
        engine = baseline(kd, np.array([day]), DEFAULT_WINDOW, SPREAD_FLOORS.get(kind, 0.0))
        if kind is Kind.PULSE:
            assert not engine.ready[0]
            continue
        assert got[kind.value]["median"] == pytest.approx(engine.median[0])
        assert got[kind.value]["spread"] == pytest.approx(engine.sd[0])
        assert got[kind.value]["days"] == engine.n[0]

    # at another time, another window: a week later spo2 has fewer days than 7
    later = client.get(
        f"/patients/{p}/baseline", params={"at": (at + timedelta(days=28)).isoformat()}, headers=h
    ).json()
    assert "spo2" not in {x["kind"] for x in later}
    assert client.get(f"/patients/{a.patient}/baseline", headers=h).json() == []  # 20 h only
    audit = registry.execute(
        "SELECT detail->'kinds' FROM audit_log WHERE actor = %s AND action = 'read_baseline'"
        " AND patient_id = %s ORDER BY id",
        (a.users[Role.NURSE], p),
    ).fetchall()
    assert audit[0] == (["spo2", "weight", "bp_systolic"],)

    _problem(client.get(f"/patients/{p}/baseline", params={"at": "2026-01-01T00:00"}, headers=h),
             422)  # fmt: skip
    _problem(
        client.get(f"/patients/{p}/baseline", params={"at": "0001-01-01T00:00Z"}, headers=h), 422
    )
    hb = auth(client, world.b.users[Role.PHYSICIAN])
    foreign = _problem(client.get(f"/patients/{p}/baseline", headers=hb), 404)
    unknown = _problem(client.get("/patients/p-nobody/baseline", headers=hb), 404)
    assert foreign["title"] == unknown["title"]


# -- 5. the meter and the tablet of each latest reading ---------------------------------------


def test_each_latest_reading_names_its_meter_and_tablet(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a = world.a
    at = datetime.now(UTC) - timedelta(minutes=5)
    _reading(registry, a, a.patient, "pulse", at, 77, ("validated",), model="Nonin 3230")
    h = auth(client, a.users[Role.NURSE])
    latest = {
        x["kind"]: x for x in client.get(f"/patients/{a.patient}", headers=h).json()["latest"]
    }
    assert latest["pulse"]["device_model"] == "Nonin 3230"
    assert latest["pulse"]["device_address"] == "AA:BB:CC:DD:EE:01"
    assert latest["pulse"]["gateway_id"] == a.gateway
    assert latest["pulse"]["flags"] == ["validated"]
    assert latest["spo2"]["device_model"] is None  # the meter did not tell
    assert latest["spo2"]["device_address"] == "00:11:22:33:44:55"
    hb = auth(client, world.b.users[Role.NURSE])
    _problem(client.get(f"/patients/{a.patient}", headers=hb), 404)


# -- 6. logout --------------------------------------------------------------------------------


def test_logout_ends_the_whole_chain_of_refresh_tokens(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    nurse = world.a.users[Role.NURSE]
    first = login(client, nurse)
    second = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    other = login(client, world.b.users[Role.NURSE])  # another session, of team B

    # no access token: the refresh token is the credential
    r = client.post("/auth/logout", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 204 and r.content == b""
    for token in (second["refresh_token"], first["refresh_token"]):
        _problem(client.post("/auth/refresh", json={"refresh_token": token}), 401)
    open_ = registry.execute(
        "SELECT count(*) FROM refresh_tokens WHERE user_id = %s AND revoked_at IS NULL", (nurse,)
    ).fetchone()[0]
    assert open_ == 0
    # a second logout changes nothing; the other session is untouched
    assert client.post("/auth/logout", json={"refresh_token": second["refresh_token"]}).status_code
    assert client.post("/auth/refresh", json={"refresh_token": other["refresh_token"]}).is_success
    actions = registry.execute(
        "SELECT action, patient_id FROM audit_log WHERE actor = %s AND action = 'logout'",
        (nurse,),
    ).fetchall()
    assert actions == [("logout", None), ("logout", None)]

    # a token that is no refresh token gets the refresh's own 401
    for bad in ("garbage", first["access_token"]):
        logout = _problem(client.post("/auth/logout", json={"refresh_token": bad}), 401)
        refresh = _problem(client.post("/auth/refresh", json={"refresh_token": bad}), 401)
        assert logout == refresh
    assert client.post("/auth/logout", json={}).status_code == 422


def test_the_new_routes_are_in_the_openapi_description(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    assert set(paths["/auth/logout"]["post"]["responses"]) >= {"204", "401", "422"}
    assert "security" not in paths["/auth/logout"]["post"]
    isbar = paths["/alerts/{alert_id}/isbar"]["get"]
    lang = next(p for p in isbar["parameters"] if p["name"] == "lang")
    assert lang["schema"]["enum"] == ["da", "en"] and lang["schema"]["default"] == "da"
    assert {p["name"] for p in paths["/alerts"]["get"]["parameters"]} >= {"patient", "since"}
    assert "at" in {
        p["name"] for p in paths["/patients/{patient_id}/baseline"]["get"]["parameters"]
    }
    assert {"group", "responsible_doctor"} <= set(schemas["Alert"]["properties"])
    assert {"group", "responsible_doctor"} <= set(schemas["AlertDetail"]["properties"])
    assert set(schemas["ResponsibleDoctor"]["properties"]) == {
        "role", "name", "phone", "until", "holiday"
    }  # fmt: skip
    assert set(schemas["BaselineBand"]["properties"]) == {
        "kind", "unit", "median", "spread", "low", "high", "days", "since", "until"
    }  # fmt: skip
    assert "unreliable" in schemas["Series"]["required"]
    assert {"device_address", "device_model", "gateway_id", "flags"} <= set(
        schemas["LatestReading"]["properties"]
    )


def test_with_an_identity_provider_there_is_no_local_logout(stack: Stack) -> None:
    """The provider's tokens are the provider's to end: 404, as /auth/refresh."""
    oidc = OidcConfig("https://idp.example", "vitalvagt", "http://127.0.0.1:9/jwks")
    app = create_app(stack.database_url(), config=api_config(oidc=oidc))
    with TestClient(app, client=own_address()) as c:
        for path in ("/auth/logout", "/auth/refresh"):
            _problem(c.post(path, json={"refresh_token": "x"}), 404)
