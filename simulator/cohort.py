"""Cohorts on disk: many virtual patients, generated and written deterministically.

A cohort directory (format ``vitalvagt-sim-cohort``, simulator/cohort_format.py and
docs/simulation.md) holds cohort.json, patients.jsonl, observations.csv.gz and events.csv.
The same (seed, patients, days, start, group) and software give byte-identical files. Patient
i's data depend only on the seed and i, not on how many patients the cohort has. Reading a
cohort back (patients, ground truth, homes and their wire batches) is in
simulator/cohort_format.py.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from simulator.cohort_format import (
    COHORT_FILE,
    EVENT_COLUMNS,
    EVENTS_FILE,
    FORMAT,
    FORMAT_VERSION,
    OBSERVATION_COLUMNS,
    OBSERVATIONS_FILE,
    PATIENTS_FILE,
    READING_NAMESPACE,
    GroupChoice,
)
from simulator.errors import SimulatorError
from simulator.parameters import (
    DEFAULT_PARAMS,
    FLAG_ORDER,
    GENERATOR_VERSION,
    KIND_ORDER,
    TIMEZONE,
    SimParams,
)
from simulator.physiology import Calendar, PatientSim, simulate_patient
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.observation import OBSERVATION_NAMESPACE, BodySite, uuid5_bytes

DEFAULT_START = date(2025, 1, 6)  # fixed, so that a command run twice writes the same files

_DECIMALS = {
    Kind.SPO2: 0,
    Kind.PULSE: 0,
    Kind.BP_SYSTOLIC: 0,
    Kind.BP_DIASTOLIC: 0,
    Kind.BP_MEAN: 0,
    Kind.WEIGHT: 2,
    Kind.TEMPERATURE: 1,
}
_KIND_VALUE = [k.value for k in KIND_ORDER]
_KIND_UNIT = [KIND_SPECS[k].unit for k in KIND_ORDER]
_KIND_FMT = [f"{{:.{_DECIMALS[k]}f}}" for k in KIND_ORDER]
# Flag strings for every bit mask, sorted as Observation.create sorts them.
_FLAG_TEXT = [
    ";".join(sorted(f.value for i, f in enumerate(FLAG_ORDER) if mask >> i & 1))
    for mask in range(1 << len(FLAG_ORDER))
]


@dataclass(frozen=True, slots=True)
class CohortSpec:
    patients: int
    days: int
    seed: int
    start: date = DEFAULT_START
    group: GroupChoice = GroupChoice.MIXED

    def __post_init__(self) -> None:
        if self.patients < 1:
            raise SimulatorError(f"patients must be at least 1, not {self.patients}")
        if self.days < 1:
            raise SimulatorError(f"days must be at least 1, not {self.days}")
        if not 0 <= self.seed < 2**63:
            raise SimulatorError(f"seed must be in 0..2**63-1, not {self.seed}")


@dataclass(frozen=True, slots=True)
class CohortSummary:
    path: Path
    spec: CohortSpec
    observations: int
    events: int
    clinical_events: int
    seconds: float

    @property
    def patient_days_per_s(self) -> float:
        return self.spec.patients * self.spec.days / max(self.seconds, 1e-9)


def generate(spec: CohortSpec, params: SimParams = DEFAULT_PARAMS) -> Iterator[PatientSim]:
    """The cohort's patients in order, one at a time (nothing is held for the whole cohort)."""
    calendar = Calendar.make(spec.start, spec.days, TIMEZONE)
    for i in range(spec.patients):
        yield simulate_patient(spec.seed, i, calendar, group=spec.group.group(), params=params)


# ---------------------------------------------------------------------------------------------
# Writing


def _stamps(us: np.ndarray, unit: str) -> np.ndarray:
    return np.char.add(np.datetime_as_string(us.astype("datetime64[us]"), unit=unit), "Z")


def _uuid5(namespace: bytes, name: str) -> str:
    """str(uuid.uuid5(...)) in a third of the time: the cohort computes one per observation."""
    x = uuid5_bytes(namespace, name).hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_OBS_NS = OBSERVATION_NAMESPACE.bytes
_READING_NS = READING_NAMESPACE.bytes


def observation_rows(sim: PatientSim) -> list[tuple[str, ...]]:
    """The patient's observations as CSV rows in OBSERVATION_COLUMNS order."""
    r, prof = sim.readings, sim.profile
    n = len(r)
    if n == 0:
        return []
    gw, pid = prof.gateway_id, prof.patient_id
    id_stamp = np.datetime_as_string(r.measured_us.astype("datetime64[us]"), unit="us").tolist()
    measured = np.where(
        r.gateway_time, _stamps(r.measured_us, "ms"), _stamps(r.measured_us, "s")
    ).tolist()
    received = _stamps(r.received_us, "ms").tolist()
    sent = _stamps(r.sent_us, "ms").tolist()
    addresses = [d.address for d in prof.devices]
    models = [d.model.name for d in prof.devices]
    multi = [len(d.model.kinds) > 1 for d in prof.devices]
    kinds, devs, flags = r.kind.tolist(), r.device.tolist(), r.flags.tolist()
    values, gw_time, reading = r.value.tolist(), r.gateway_time.tolist(), r.reading.tolist()
    rows = []
    reading_ids: dict[int, str] = {}
    temperature = KIND_ORDER.index(Kind.TEMPERATURE)
    for i in range(n):
        k, d = kinds[i], devs[i]
        addr = addresses[d]
        # The recipe of vitalvagt.observation.stable_id, on stamps computed for all rows at once.
        oid = _uuid5(_OBS_NS, f"{gw}|{addr}|{_KIND_VALUE[k]}|{id_stamp[i]}Z")
        rid = ""
        if multi[d]:
            rid = reading_ids.get(reading[i], "")
            if not rid:
                rid = _uuid5(_READING_NS, f"{gw}|{addr}|{id_stamp[i]}Z")
                reading_ids[reading[i]] = rid
        rows.append(
            (
                oid,
                pid,
                gw,
                _KIND_VALUE[k],
                _KIND_FMT[k].format(values[i]),
                _KIND_UNIT[k],
                measured[i],
                received[i],
                sent[i],
                "gateway" if gw_time[i] else "device",
                addr,
                models[d],
                _FLAG_TEXT[flags[i]],
                rid,
                BodySite.TYMPANUM.value if k == temperature else "",
            )
        )
    return rows


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_rows(sim: PatientSim) -> list[tuple[str, ...]]:
    gw = sim.profile.gateway_id
    return [
        (
            e.event_id,
            e.patient_id,
            gw,
            e.type.value,
            "true" if e.clinical else "false",
            _iso(e.onset),
            _iso(e.evident_at),
            _iso(e.end),
            "true" if e.admitted else "false",
            f"{e.magnitude:.2f}",
            e.magnitude_kind.value,
            KIND_SPECS[e.magnitude_kind].unit,
            ";".join(f"{k.value}={v:+.2f}" for k, v in e.effects),
            e.device_address or "",
        )
        for e in sim.events
    ]


def _clock(minutes: float | None) -> str | None:
    if minutes is None:
        return None
    s = round(minutes * 60)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def patient_record(sim: PatientSim) -> dict[str, Any]:
    p = sim.profile
    return {
        "patient_id": p.patient_id,
        "gateway_id": p.gateway_id,
        "index": p.index,
        "group": p.group.value,
        "baseline": {k.value: v for k, v in p.baseline.items()},
        "schedule": {
            "timezone": TIMEZONE,
            "morning_local": _clock(p.morning_min),
            "evening_local": _clock(p.evening_min),
        },
        "adherence": {"miss_fraction": p.miss_fraction, "dropout_day": p.dropout_day},
        "devices": [
            {
                "type": d.type.value,
                "address": d.address,
                "model": d.model.name,
                "kinds": [k.value for k in d.model.kinds],
                "resolution": {k.value: v for k, v in d.model.resolution.items()},
                "user_ids": d.model.user_ids,
                "has_clock": d.model.has_clock,
            }
            for d in p.devices
        ],
        "other_user_weight": p.other_user_weight,
        **({"noise": {"day_variation": p.noise[0], "reading": p.noise[1]}}
           if p.noise is not None else {}),  # hard variant only
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_cohort(
    out_dir: Path | str,
    spec: CohortSpec,
    *,
    params: SimParams = DEFAULT_PARAMS,
    overwrite: bool = False,
) -> CohortSummary:
    """Generate the cohort and write its directory; cohort.json is written last."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SimulatorError(f"{out} exists and is not a directory")
    ours = [out / n for n in (COHORT_FILE, PATIENTS_FILE, OBSERVATIONS_FILE, EVENTS_FILE)]
    if any(p.exists() for p in ours) and not overwrite:
        raise SimulatorError(
            f"{out} already holds a cohort; choose another directory or overwrite it (--force)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / COHORT_FILE).unlink(missing_ok=True)  # an interrupted rewrite is visibly incomplete
    began = time.perf_counter()
    n_obs = n_events = n_clinical = 0
    # mtime 0 and no file name in the gzip header: the same cohort gives the same bytes.
    with (
        (out / PATIENTS_FILE).open("w", encoding="utf-8", newline="") as pf,
        (out / EVENTS_FILE).open("w", encoding="utf-8", newline="") as ef,
        (out / OBSERVATIONS_FILE).open("wb") as of,
        gzip.GzipFile(filename="", mode="wb", fileobj=of, compresslevel=3, mtime=0) as gz,
        io.TextIOWrapper(gz, encoding="utf-8", newline="") as obs_text,
    ):
        obs_csv = csv.writer(obs_text, lineterminator="\n")
        ev_csv = csv.writer(ef, lineterminator="\n")
        obs_csv.writerow(OBSERVATION_COLUMNS)
        ev_csv.writerow(EVENT_COLUMNS)
        for sim in generate(spec, params):
            pf.write(json.dumps(patient_record(sim), sort_keys=True, separators=(",", ":")))
            pf.write("\n")
            rows = observation_rows(sim)
            obs_csv.writerows(rows)
            ev_csv.writerows(event_rows(sim))
            n_obs += len(rows)
            n_events += len(sim.events)
            n_clinical += sum(e.clinical for e in sim.events)
    counts = {PATIENTS_FILE: spec.patients, OBSERVATIONS_FILE: n_obs, EVENTS_FILE: n_events}
    seconds = time.perf_counter() - began
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": "vitalvagt simulator",
        "generator_version": GENERATOR_VERSION,
        "numpy_version": np.__version__,
        "seed": spec.seed,
        "patients": spec.patients,
        "days": spec.days,
        "start": spec.start.isoformat(),
        "timezone": TIMEZONE,
        "group": spec.group.value,
        "counts": {"observations": n_obs, "events": n_events, "clinical_events": n_clinical},
        "files": {
            name: {"rows": rows, "sha256": _sha256(out / name)} for name, rows in counts.items()
        },
        "parameters": params.to_dict(),
        # Written for other variants only: a cohort without it is standard (as every cohort
        # of earlier versions), and a standard cohort.json stays byte-identical.
        **({"variant": params.variant} if params.variant != "standard" else {}),
    }
    (out / COHORT_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return CohortSummary(out, spec, n_obs, n_events, n_clinical, seconds)
