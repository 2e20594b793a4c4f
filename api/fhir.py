"""A patient's readings as a FHIR R4 Bundle, after the HL7 Personal Health Device IG (pure:
rows in, JSON out; api/routes/fhir.py serves it).

Each reading is an Observation with the MDC code (``urn:iso:std:iso:11073:10101``) and the
LOINC vital-signs code, a UCUM quantity, the meter as ``device`` and the tablet as the
gateway extension; the parts of one blood pressure (same reading id) are one panel
Observation with a component each. The meter and the tablet are Device resources (the meter
with its Bluetooth address and its MDC specialization). Quality flags: ``invalid`` makes the
status ``entered-in-error``, ``early_estimate``/``measurement_ongoing`` ``preliminary``; every
flag is kept as an interpretation coding of the hub's own system (the IG's ASN1ToHL7
mapping of the status bits is not built). Simulated patients' data (``sim-*``) is marked
HTEST in ``meta.security``.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from vitalvagt.kinds import BP_KINDS, BP_PANEL_LOINC, BP_PANEL_MDC, KIND_SPECS, Kind

MDC = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BT_ADDRESS = "http://hl7.org/fhir/sid/eui-48/bluetooth"
GATEWAY_EXT = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
PHD = "http://hl7.org/fhir/uv/phd/StructureDefinition/"
PHD_CATEGORY = "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories"
VITAL = "http://terminology.hl7.org/CodeSystem/observation-category"
FLAG_SYSTEM = "urn:vitalvagt:quality-flag"
PATIENT_SYSTEM = "urn:vitalvagt:patient"
GATEWAY_SYSTEM = "urn:vitalvagt:gateway"
# MDC device specializations (IEEE 11073-104xx) by the kinds a meter sends.
SPECIALIZATION = {
    Kind.SPO2: (528388, "pulse oximeter"),
    Kind.PULSE: (528388, "pulse oximeter"),
    Kind.BP_SYSTOLIC: (528391, "blood pressure monitor"),
    Kind.TEMPERATURE: (528392, "thermometer"),
    Kind.WEIGHT: (528399, "weighing scale"),
}
_NS = uuid.UUID("5c1e0d3a-3f4b-4b7e-9a55-0c9a7e0f2a11")


def _id(*parts: str) -> str:
    """A FHIR id ([A-Za-z0-9.-]{1,64}) that is stable for the same parts."""
    text = "-".join(parts)
    clean = re.sub(r"[^A-Za-z0-9.-]", "-", text)
    return clean if len(clean) <= 64 else str(uuid.uuid5(_NS, text))


def _urn(resource_type: str, resource_id: str) -> str:
    """The entry's fullUrl, which references inside the Bundle point at."""
    return f"urn:uuid:{uuid.uuid5(_NS, resource_type + '/' + resource_id)}"


def _code(kind: Kind) -> dict[str, Any]:
    s = KIND_SPECS[kind]
    codings = [{"system": LOINC, "code": s.loinc, "display": s.display}]
    if s.mdc is not None:
        codings.insert(0, {"system": MDC, "code": str(s.mdc)})
    return {"coding": codings, "text": s.display}


def _quantity(kind: Kind, value: float) -> dict[str, Any]:
    unit = KIND_SPECS[kind].unit
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _status(flags: list[str]) -> str:
    if "invalid" in flags:
        return "entered-in-error"
    if "early_estimate" in flags or "measurement_ongoing" in flags:
        return "preliminary"
    return "final"


def _time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _observation(
    patient_id: str, rows: list[dict[str, Any]], devices: dict[str, str], test: bool
) -> dict[str, Any]:
    first = rows[0]
    flags = sorted({f for r in rows for f in r["flags"]})
    panel = len(rows) > 1 or Kind(first["kind"]) in BP_KINDS
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _id("obs", str(first["reading_id"] or first["id"])),
        "meta": {
            "profile": [
                PHD + ("PhdCompoundNumericObservation" if panel else "PhdNumericObservation")
            ]
        },
        "status": _status(flags),
        "category": [
            {"coding": [{"system": VITAL, "code": "vital-signs"}]},
            {"coding": [{"system": PHD_CATEGORY, "code": "phd"}]},
        ],
        "subject": {"identifier": {"system": PATIENT_SYSTEM, "value": patient_id}},
        "effectiveDateTime": _time(first["measured_at"]),
        "device": {"reference": _urn("Device", devices[first["device_key"]])},
        "extension": [
            {
                "url": GATEWAY_EXT,
                "valueReference": {"reference": _urn("Device", first["gateway_id"])},
            }
        ],
    }
    if test:
        obs["meta"]["security"] = [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}
        ]
    if flags:
        obs["interpretation"] = [{"coding": [{"system": FLAG_SYSTEM, "code": f}]} for f in flags]
    if panel:
        obs["code"] = {
            "coding": [
                {"system": MDC, "code": str(BP_PANEL_MDC)},
                {"system": LOINC, "code": BP_PANEL_LOINC, "display": "Blood pressure panel"},
            ],
            "text": "blood pressure",
        }
        obs["component"] = [
            {
                "code": _code(Kind(r["kind"])),
                "valueQuantity": _quantity(Kind(r["kind"]), r["value"]),
            }
            for r in sorted(rows, key=lambda r: r["kind"], reverse=True)
        ]
    else:
        obs["code"] = _code(Kind(first["kind"]))
        obs["valueQuantity"] = _quantity(Kind(first["kind"]), first["value"])
    return obs


def _meter(row: dict[str, Any], device_id: str, kinds: set[Kind]) -> dict[str, Any]:
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": device_id,
        "meta": {"profile": [PHD + "PhdDevice"]},
        "identifier": [{"system": BT_ADDRESS, "value": row["device_address"]}],
    }
    if row.get("device_model"):
        device["modelNumber"] = row["device_model"]
    if row.get("device_serial"):
        device["serialNumber"] = row["device_serial"]
    specs = sorted({SPECIALIZATION[k] for k in kinds if k in SPECIALIZATION})
    if specs:
        device["specialization"] = [
            {"systemType": {"coding": [{"system": MDC, "code": str(code), "display": name}]}}
            for code, name in specs
        ]
    return device


def bundle(patient_id: str, rows: list[dict[str, Any]], *, recipient: str | None = None) -> dict:
    """Readings (rows of ``observations``) as a Bundle of type collection."""
    test = patient_id.startswith("sim-")
    devices: dict[str, str] = {}
    kinds: dict[str, set[Kind]] = defaultdict(set)
    firsts: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = f"{r['gateway_id']}/{r['device_address']}"
        r = {**r, "device_key": key}
        devices.setdefault(key, _id("dev", r["gateway_id"], r["device_address"]))
        kinds[key].add(Kind(r["kind"]))
        firsts.setdefault(key, r)
        bp = Kind(r["kind"]) in BP_KINDS and r["reading_id"] is not None
        groups[f"bp/{r['reading_id']}" if bp else f"obs/{r['id']}"].append(r)
    entries: list[dict[str, Any]] = []
    for group in groups.values():
        entries.append(_observation(patient_id, group, devices, test))
    for key, device_id in devices.items():
        entries.append(_meter(firsts[key], device_id, kinds[key]))
    for gateway in sorted({r["gateway_id"] for r in rows}):
        entries.append(
            {
                "resourceType": "Device",
                "id": gateway,
                "identifier": [{"system": GATEWAY_SYSTEM, "value": gateway}],
                "deviceName": [{"name": "Vitalvagt home tablet", "type": "user-friendly-name"}],
            }
        )
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "id": str(uuid.uuid4()),
        "timestamp": _time(datetime.now(UTC)),
        "entry": [{"fullUrl": _urn(e["resourceType"], e["id"]), "resource": e} for e in entries],
    }
    if recipient is not None:
        out["meta"] = {"tag": [{"system": "urn:vitalvagt:recipient", "code": recipient[:64]}]}
    return out
