"""The kinds of measurement the hub understands, with their units, codes and plausible ranges.

One table, used by every component: the gateway converts to the canonical unit, the wire
codec rejects other units and implausible values, the FHIR export takes the codes from here.
Codes: LOINC, MDC (IEEE 11073-10101) and the Danish NPU/MedCom code where one exists
(docs/clinical-rules.md and ../shared/reference.md section 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    SPO2 = "spo2"
    PULSE = "pulse"
    BP_SYSTOLIC = "bp_systolic"
    BP_DIASTOLIC = "bp_diastolic"
    BP_MEAN = "bp_mean"
    WEIGHT = "weight"
    TEMPERATURE = "temperature"
    RESPIRATORY_RATE = "respiratory_rate"


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: Kind
    unit: str  # canonical UCUM unit; the only unit accepted on the wire
    display: str  # plain Danish-English label for nurses and logs
    loinc: str
    mdc: int | None
    npu: str | None
    # Physiologically possible values (not clinical limits): anything outside is a device or
    # transmission error, never a reading to alert on.
    plausible_min: float
    plausible_max: float


KIND_SPECS: dict[Kind, KindSpec] = {
    s.kind: s
    for s in (
        KindSpec(Kind.SPO2, "%", "oxygen saturation", "59408-5", 150456, "NPU03011", 50, 100),
        KindSpec(Kind.PULSE, "/min", "pulse", "8867-4", 149530, "NPU21692", 20, 250),
        KindSpec(Kind.BP_SYSTOLIC, "mm[Hg]", "systolic BP", "8480-6", 150021, "DNK05472", 50, 280),
        KindSpec(Kind.BP_DIASTOLIC, "mm[Hg]", "diastolic BP", "8462-4", 150022, None, 20, 180),
        KindSpec(Kind.BP_MEAN, "mm[Hg]", "mean arterial pressure", "8478-0", 150023, None, 30, 220),
        KindSpec(Kind.WEIGHT, "kg", "body weight", "29463-7", 188736, None, 20, 300),
        KindSpec(Kind.TEMPERATURE, "Cel", "body temperature", "8310-5", 150364, "NPU08676", 30, 44),
        KindSpec(
            Kind.RESPIRATORY_RATE, "/min", "respiratory rate", "9279-1", None, "MCS88122", 2, 80
        ),
    )
}

# The panel code for a blood-pressure reading whose parts share one reading id.
BP_PANEL_LOINC = "85354-9"
BP_PANEL_MDC = 150020
BP_KINDS = frozenset({Kind.BP_SYSTOLIC, Kind.BP_DIASTOLIC, Kind.BP_MEAN})


def spec(kind: Kind | str) -> KindSpec:
    return KIND_SPECS[Kind(kind)]
