"""The routes doing their work: the landed defects fixed, the alert life cycle, thresholds
with their history, the downsampled series, gateways, the admin's dead letters and access
log, security headers, size limits and the OpenAPI description."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import PUBLIC_PATHS
from tests.api.conftest import World, api_config, auth, own_address
from vitalvagt.roles import Role
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack
PROBLEM = "application/problem+json"


def _problem(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"]
    return body


# -- the landed defects -------------------------------------------------------------------


def test_a_nul_in_a_path_or_query_parameter_is_a_400_problem(
    client: TestClient, world: World
) -> None:
    h = auth(client, world.a.users[Role.NURSE])
    _problem(client.get("/patients/p-a%00b", headers=h), 400)
    _problem(client.get("/patients", params={"team": "a\x00b"}, headers=h), 400)
    _problem(
        client.get(
            f"/patients/{world.a.patient}/observations", params={"kind": "spo2\x00"}, headers=h
        ),
        400,
    )
    # and in a JSON body: refused by the field's rule, never a 500
    r = client.post(f"/alerts/{world.a.alert}/resolve", json={"reason": "ok\x00ok"}, headers=h)
    _problem(r, 422)


def test_until_before_since_is_a_422(client: TestClient, world: World) -> None:
    h = auth(client, world.a.users[Role.NURSE])
    now = datetime.now(UTC)
    window = {"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()}
    for path in ("observations", "series"):
        body = _problem(
            client.get(
                f"/patients/{world.a.patient}/{path}", params={"kind": "spo2", **window}, headers=h
            ),
            422,
        )
        assert "until" in str(body["detail"])


def test_a_long_patient_id_is_refused_without_being_echoed(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("httpx2._urlparse.MAX_URL_LENGTH", 200_000)  # the client's own cap
    h = auth(client, world.a.users[Role.NURSE])
    long_id = "p" + "x" * 100_000
    r = client.get(f"/patients/{long_id}", headers=h)
    body = _problem(r, 422)
    assert body["detail"][0]["field"] == "path.patient_id"
    assert len(r.content) < 2000 and "xxxxxxxxxx" not in r.text
    # one of the right shape is echoed (at most 63 characters)
    assert "p-nobody" in _problem(client.get("/patients/p-nobody", headers=h), 404)["detail"]


# -- alerts ---------------------------------------------------------------------------------


def test_triage_list_detail_and_the_life_cycle(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a = world.a
    h = auth(client, a.users[Role.NURSE])
    listed = client.get("/alerts", headers=h).json()
    assert [x["id"] for x in listed] == [a.alert]
    detail = client.get(f"/alerts/{a.alert}", headers=h).json()
    assert [r["id"] for r in detail["readings"]] == [a.observation]
    assert detail["readings"][0]["value"] == 80
    assert [t["reason"] for t in detail["history"]] == ["opened"]
    assert "isbar" not in detail  # its own route: GET /alerts/{id}/isbar (test_web_api.py)
    assert detail["responsible_doctor"]["role"] in ("gp", "out_of_hours", "hospital")

    r = client.post(f"/alerts/{a.alert}/acknowledge", json={"note": "calling her"}, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert r.json()["acknowledged_by"] == a.users[Role.NURSE]
    until = datetime.now(UTC) + timedelta(hours=3)
    r = client.post(f"/alerts/{a.alert}/snooze", json={"until": until.isoformat()}, headers=h)
    assert r.json()["state"] == "snoozed"
    assert client.get("/alerts", headers=h).json() == []  # snoozed ones only when asked for
    assert len(client.get("/alerts", params={"state": "snoozed"}, headers=h).json()) == 1
    _problem(
        client.post(
            f"/alerts/{a.alert}/snooze",
            json={"until": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
            headers=h,
        ),
        422,
    )
    r = client.post(
        f"/alerts/{a.alert}/resolve", json={"reason": "measured again: 95 %"}, headers=h
    )
    assert r.json()["state"] == "resolved"
    assert [(t["to_state"], t["by"]) for t in r.json()["history"]] == [
        ("open", "engine"),
        ("acknowledged", a.users[Role.NURSE]),
        ("snoozed", a.users[Role.NURSE]),
        ("resolved", a.users[Role.NURSE]),
    ]
    # a stale click: a resolved alert cannot be acknowledged
    _problem(client.post(f"/alerts/{a.alert}/acknowledge", json={}, headers=h), 409)
    actions = [
        row[0]
        for row in registry.execute(
            "SELECT action FROM audit_log WHERE actor = %s AND action LIKE '%%ed_alert'"
            " ORDER BY id",
            (a.users[Role.NURSE],),
        )
    ]
    assert actions[-3:] == ["acknowledged_alert", "snoozed_alert", "resolved_alert"]
    # an admin reads, but does not act on alerts
    _problem(
        client.post(
            f"/alerts/{a.alert}/acknowledge", json={}, headers=auth(client, a.users[Role.ADMIN])
        ),
        403,
    )


def test_triage_order_and_filters(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    a = world.a
    for severity, rule in (("blue", "missed"), ("yellow", "limit:pulse")):
        registry.execute(
            "INSERT INTO alerts (patient_id, team_id, rule, severity, message) VALUES"
            " (%s, %s, %s, %s, 'x')",
            (a.patient, a.team, rule, severity),
        )
    h = auth(client, a.users[Role.NURSE])
    assert [x["severity"] for x in client.get("/alerts", headers=h).json()] == [
        "red",
        "yellow",
        "blue",
    ]
    r = client.get("/alerts", params={"severity": ["blue", "yellow"]}, headers=h)
    assert [x["severity"] for x in r.json()] == ["yellow", "blue"]


# -- patients, thresholds, series -----------------------------------------------------------


def test_patient_list_has_latest_readings_and_a_status_colour(
    client: TestClient, world: World
) -> None:
    rows = client.get("/patients", headers=auth(client, world.a.users[Role.NURSE])).json()
    mine = [p for p in rows if p["id"] == world.a.patient]
    assert len(mine) == 1 and len(rows) == 1
    assert mine[0]["status"] == "red"
    assert [x["kind"] for x in mine[0]["latest"]] == ["spo2"]


def test_thresholds_physician_only_with_reason_and_history(
    client: TestClient, world: World
) -> None:
    p = world.a.patient
    nurse, doc = (
        auth(client, world.a.users[Role.NURSE]),
        auth(client, world.a.users[Role.PHYSICIAN]),
    )
    before = {x["kind"]: x for x in client.get(f"/patients/{p}/thresholds", headers=nurse).json()}
    assert before["spo2"]["source"] == "group" and before["spo2"]["alert_low"] == 85
    change = {"alert_low": 82, "warn_low": 86, "reason": "habitual 87-89 % (COPD, GOLD 4)"}
    _problem(client.put(f"/patients/{p}/thresholds/spo2", json=change, headers=nurse), 403)
    _problem(
        client.put(f"/patients/{p}/thresholds/spo2", json={**change, "reason": ""}, headers=doc),
        422,
    )
    _problem(
        client.put(f"/patients/{p}/thresholds/spo2", json={**change, "alert_low": 90}, headers=doc),
        422,
    )  # out of order
    r = client.put(f"/patients/{p}/thresholds/spo2", json=change, headers=doc)
    assert r.status_code == 200, r.text
    now = {x["kind"]: x for x in r.json()}
    assert now["spo2"]["source"] == "patient" and now["spo2"]["alert_low"] == 82
    assert now["pulse"]["source"] == "group"
    r = client.put(
        f"/patients/{p}/thresholds/spo2",
        json={**change, "alert_low": 80, "reason": "lower still"},
        headers=doc,
    )
    history = client.get(f"/patients/{p}/thresholds/history", headers=nurse).json()
    assert [(h["old_limits"], h["new_limits"]["alert_low"], h["reason"]) for h in history] == [
        (None, 82, change["reason"]),
        (
            {"alert_low": 82, "warn_low": 86, "warn_high": None, "alert_high": None},
            80,
            "lower still",
        ),
    ]
    assert history[0]["set_by"] == world.a.users[Role.PHYSICIAN]


def test_series_is_downsampled_with_min_and_max_per_bucket(
    client: TestClient, world: World
) -> None:
    h = auth(client, world.a.users[Role.NURSE])
    now = datetime.now(UTC)
    r = client.get(
        f"/patients/{world.a.patient}/series",
        headers=h,
        params={
            "kind": "spo2",
            "since": (now - timedelta(hours=24)).isoformat(),
            "until": now.isoformat(),
            "points": 4,
        },
    )
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["bucket_s"] == 6 * 3600 and len(s["buckets"]) <= 4
    assert sum(b["n"] for b in s["buckets"]) == 20
    assert min(b["min"] for b in s["buckets"]) == 80  # the dip is not averaged away
    assert all(b["min"] <= b["mean"] <= b["max"] for b in s["buckets"])
    assert s["unreliable"] == []  # no reading is flagged (test_web_api.py has flagged ones)


# -- gateways and admin ---------------------------------------------------------------------


def test_gateway_provision_shows_the_password_once_and_revoke(
    stack: Stack, world: World, registry: psycopg.Connection
) -> None:
    changed: list[int] = []
    app = FastAPI()
    from api.app import create_app

    app = create_app(
        stack.database_url(), config=api_config(), on_gateways_changed=lambda: changed.append(1)
    )
    with TestClient(app, client=own_address()) as client:
        admin = auth(client, world.a.users[Role.ADMIN])
        gw = f"{world.a.gateway}-2"
        r = client.post(
            "/gateways", json={"gateway_id": gw, "patient_id": world.a.patient}, headers=admin
        )
        assert r.status_code == 201, r.text
        assert len(r.json()["mqtt_password"]) >= 20 and changed == [1]
        status = client.get(f"/gateways/{gw}", headers=admin).json()
        assert status["state"] == "unknown" and "mqtt_password" not in status
        # another team's gateway id is not re-keyed from here
        _problem(
            client.post(
                "/gateways",
                json={"gateway_id": world.b.gateway, "patient_id": world.a.patient},
                headers=admin,
            ),
            409,
        )
        r = client.post(f"/gateways/{gw}/revoke", json={"reason": "tablet returned"}, headers=admin)
        assert r.status_code == 200 and r.json()["active"] is False and changed == [1, 1]
    assert registry.execute("SELECT active FROM gateways WHERE id = %s", (gw,)).fetchone() == (
        False,
    )


def test_dead_letters_without_payload_and_one_with_it_audited(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    admin = auth(client, world.a.users[Role.ADMIN])
    _problem(
        client.get("/admin/dead-letters", headers=auth(client, world.a.users[Role.NURSE])), 403
    )
    listed = client.get("/admin/dead-letters", headers=admin).json()
    assert [d["id"] for d in listed] == [world.a.dead_letter]
    assert "payload" not in str(listed[0].keys()).replace("payload_size", "").replace(
        "payload_truncated", ""
    )
    assert "CPR" not in str(listed)
    one = client.get(f"/admin/dead-letters/{world.a.dead_letter}", headers=admin).json()
    assert one["payload_base64"] == "Q1BSIDAxMDE="  # b"CPR 0101"
    log = client.get(f"/admin/audit/{world.a.patient}", headers=admin).json()
    assert log[0]["action"] == "read_dead_letter_payload"
    assert log[0]["actor"] == world.a.users[Role.ADMIN] and log[0]["detail"]["address"]


# -- the HTTP surface -----------------------------------------------------------------------


def test_security_headers_and_the_request_size_limit(stack: Stack, world: World) -> None:
    from api.app import create_app

    with TestClient(
        create_app(stack.database_url(), config=api_config(max_body_bytes=2000)),
        client=own_address(),
    ) as c:
        r = c.get("/healthz")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        h = auth(c, world.a.users[Role.NURSE])
        r = c.post(f"/alerts/{world.a.alert}/resolve", json={"reason": "x" * 5000}, headers=h)
        _problem(r, 413)


def test_openapi_describes_the_security_and_every_problem(app: FastAPI) -> None:
    spec = app.openapi()
    assert spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["type"] == "oauth2"
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status in ("404", "422", "500") if path != "/healthz" else ("500",):
                content = op["responses"][status]["content"]
                assert PROBLEM in content, f"{method} {path} {status}"
            if path not in PUBLIC_PATHS:
                assert op.get("security"), f"{method} {path} has no security requirement"
