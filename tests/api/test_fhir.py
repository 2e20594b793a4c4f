"""The FHIR export: Bundles that validate with the ``fhir.resources`` models (R4B, the R4
line those models carry), the PHD codes, the blood-pressure panel, the devices; export only
with a consent in force for the recipient."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from api.fhir import GATEWAY_EXT, LOINC, MDC
from api.users import Role
from tests.api.conftest import RECIPIENT, World, auth

pytestmark = pytest.mark.stack


def _add_bp(conn: psycopg.Connection, world: World) -> str:
    reading = uuid.uuid4()
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    for kind, value in (("bp_systolic", 142), ("bp_diastolic", 88), ("bp_mean", 106)):
        conn.execute(
            "INSERT INTO observations (id, measured_at, received_at, patient_id, gateway_id,"
            " device_address, kind, value, unit, reading_id, flags, device_model)"
            " VALUES (%s, %s, %s, %s, %s, 'AA:BB:CC:DD:EE:FF', %s, %s, 'mm[Hg]', %s,"
            " '{irregular_pulse}', 'UA-651BLE')",
            (uuid.uuid4(), at, at, world.a.patient, world.a.gateway, kind, value, reading),
        )
    return str(reading)


def test_the_bundle_validates_and_follows_the_phd_guide(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    _add_bp(registry, world)
    h = auth(client, world.a.users[Role.NURSE])
    r = client.get(f"/patients/{world.a.patient}/fhir", headers=h)
    assert r.status_code == 200, r.text
    doc = r.json()
    parsed = Bundle.model_validate(doc)
    assert parsed.type == "collection"
    resources = [e["resource"] for e in doc["entry"]]
    full_urls = {e["fullUrl"] for e in doc["entry"]}
    observations = [
        Observation.model_validate(x) for x in resources if x["resourceType"] == "Observation"
    ]
    devices = [Device.model_validate(x) for x in resources if x["resourceType"] == "Device"]
    assert len(observations) == 20 + 1  # 20 SpO2 readings, one BP panel of three parts
    spo2 = [o for o in observations if o.code.coding[-1].code == "59408-5"]
    assert len(spo2) == 20
    assert {(c.system, c.code) for c in spo2[0].code.coding} == {
        (MDC, "150456"),
        (LOINC, "59408-5"),
    }
    assert spo2[0].valueQuantity.system == "http://unitsofmeasure.org"
    assert spo2[0].valueQuantity.code == "%"
    panel = next(o for o in observations if o.component)
    assert {(c.system, c.code) for c in panel.code.coding} == {(MDC, "150020"), (LOINC, "85354-9")}
    parts = {c.code.coding[-1].code: c.valueQuantity.value for c in panel.component}
    assert parts == {"8480-6": 142, "8462-4": 88, "8478-0": 106}
    assert panel.interpretation[0].coding[0].code == "irregular_pulse"
    # the meter and the tablet are in the Bundle, referenced by the readings
    assert panel.device.reference in full_urls
    gateway_ext = next(e for e in panel.extension if e.url == GATEWAY_EXT)
    assert gateway_ext.valueReference.reference in full_urls
    meters = [d for d in devices if d.identifier[0].system.endswith("bluetooth")]
    assert {d.identifier[0].value for d in meters} == {"00:11:22:33:44:55", "AA:BB:CC:DD:EE:FF"}
    bp_meter = next(d for d in meters if d.identifier[0].value == "AA:BB:CC:DD:EE:FF")
    assert bp_meter.modelNumber == "UA-651BLE"
    assert bp_meter.specialization[0].systemType.coding[0].code == "528391"
    assert any(d.id == world.a.gateway for d in devices)


def test_export_needs_a_consent_in_force_for_the_recipient(
    client: TestClient, world: World, registry: psycopg.Connection
) -> None:
    p = world.a.patient
    h = auth(client, world.a.users[Role.NURSE])
    r = client.post(
        f"/patients/{p}/fhir/export", json={"recipient": "Forsikringsselskabet"}, headers=h
    )
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert "no consent" in r.json()["detail"] and "Forsikringsselskabet" in r.json()["detail"]
    r = client.post(f"/patients/{p}/fhir/export", json={"recipient": RECIPIENT}, headers=h)
    assert r.status_code == 200, r.text
    Bundle.model_validate(r.json())
    # a lapsed consent: refused, saying until when it was valid
    registry.execute(
        "INSERT INTO consents (patient_id, recipient, given_at, valid_until,"
        " recorded_by) VALUES (%s, 'Egen læge', current_date - 400,"
        " current_date - 40, 'test')",
        (p,),
    )
    r = client.post(f"/patients/{p}/fhir/export", json={"recipient": "Egen læge"}, headers=h)
    assert r.status_code == 403 and "valid" in r.json()["detail"]
    # a consent over a year is not recorded
    today = date.today()
    r = client.post(
        f"/patients/{p}/consents",
        headers=h,
        json={
            "recipient": "Egen læge",
            "given_at": str(today),
            "valid_until": str(today + timedelta(days=400)),
        },
    )
    assert r.status_code == 422
    r = client.post(
        f"/patients/{p}/consents",
        headers=h,
        json={
            "recipient": "Egen læge",
            "given_at": str(today),
            "valid_until": str(today + timedelta(days=365)),
        },
    )
    assert r.status_code == 201 and r.json()["valid"] is True
    assert (
        client.post(
            f"/patients/{p}/fhir/export", json={"recipient": "Egen læge"}, headers=h
        ).status_code
        == 200
    )
    actions = [
        row[0]
        for row in registry.execute(
            "SELECT action FROM audit_log WHERE patient_id = %s AND action LIKE 'export%%'"
            " ORDER BY id",
            (p,),
        )
    ]
    assert actions == ["export_fhir_refused", "export_fhir", "export_fhir_refused", "export_fhir"]
