"""The cohort directory format: its files and columns, and reading a cohort back.

A cohort directory (format ``vitalvagt-sim-cohort`` version 1, docs/simulation.md) holds:

    cohort.json           format, versions, seed, parameters, file checksums and counts
    patients.jsonl        one patient a line: ids, group, baselines, schedule, devices
    observations.csv.gz   one observation a row, in the wire format's field names
    events.csv            ground truth: clinical events and artefacts

simulator/cohort.py generates and writes cohorts; this module reads them. The loader turns one
home's rows into ``vitalvagt.observation.Observation`` objects and wire batches.
"""

from __future__ import annotations

import csv
import gzip
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from simulator.errors import SimulatorError
from simulator.parameters import EventType, Group
from simulator.physiology import Event
from vitalvagt.devices import DeviceType
from vitalvagt.kinds import Kind
from vitalvagt.observation import BodySite, DeviceRef, Observation, TimeSource
from vitalvagt.quality import Flag
from vitalvagt.wire import ObservationBatch, make_batch

FORMAT = "vitalvagt-sim-cohort"
FORMAT_VERSION = 1
COHORT_FILE = "cohort.json"
PATIENTS_FILE = "patients.jsonl"
OBSERVATIONS_FILE = "observations.csv.gz"
EVENTS_FILE = "events.csv"

OBSERVATION_COLUMNS = (
    "id",
    "patient_id",
    "gateway_id",
    "kind",
    "value",
    "unit",
    "measured_at",
    "received_at",
    "sent_at",
    "time_source",
    "device_address",
    "device_model",
    "flags",
    "reading_id",
    "body_site",
)
EVENT_COLUMNS = (
    "event_id",
    "patient_id",
    "gateway_id",
    "type",
    "clinical",
    "onset",
    "evident_at",
    "end",
    "admitted",
    "magnitude",
    "magnitude_kind",
    "unit",
    "effects",
    "device_address",
)

# Namespace of reading ids (shared by the parts of one oximeter or blood-pressure reading).
READING_NAMESPACE = uuid.UUID("0b8f7c1e-5a4d-5c1b-9e3f-2d6a8b4c7e10")


class CohortFormatError(SimulatorError):
    """A cohort directory that is missing, incomplete or of an unknown format version."""


class GroupChoice(StrEnum):
    COPD = "copd"
    HEART_FAILURE = "heart_failure"
    BOTH = "both"
    MIXED = "mixed"  # each patient's group drawn from the parameters' group mix

    def group(self) -> Group | None:
        return None if self is GroupChoice.MIXED else Group(self.value)


@dataclass(frozen=True, slots=True)
class CohortInfo:
    path: Path
    format_version: int
    generator_version: str
    seed: int
    patients: int
    days: int
    start: date
    timezone: str
    group: GroupChoice
    counts: Mapping[str, int]
    files: Mapping[str, Mapping[str, Any]]
    parameters: Mapping[str, Any] = field(repr=False)
    variant: str = "standard"  # simulator.parameters.VARIANTS; absent in cohort.json: standard


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    type: DeviceType
    address: str
    model: str
    kinds: tuple[Kind, ...]
    user_ids: bool
    has_clock: bool

    def ref(self) -> DeviceRef:
        return DeviceRef(address=self.address, model=self.model)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    patient_id: str
    gateway_id: str
    index: int
    group: Group
    baseline: Mapping[Kind, float]
    morning_local: str
    evening_local: str | None
    miss_fraction: float
    dropout_day: int | None
    devices: tuple[DeviceRecord, ...]
    other_user_weight: float | None


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ObservationRow:
    """One row of observations.csv.gz, typed."""

    id: uuid.UUID
    patient_id: str
    gateway_id: str
    kind: Kind
    value: float
    unit: str
    measured_at: datetime
    received_at: datetime
    sent_at: datetime  # when the gateway published it (late after an uplink outage)
    time_source: TimeSource
    device_address: str
    device_model: str
    flags: tuple[Flag, ...]
    reading_id: uuid.UUID | None
    body_site: BodySite | None

    @classmethod
    def parse(cls, row: Sequence[str]) -> ObservationRow:
        (
            oid,
            pid,
            gw,
            kind,
            value,
            unit,
            measured,
            received,
            sent,
            source,
            address,
            model,
            flags,
            rid,
            site,
        ) = row
        return cls(
            uuid.UUID(oid),
            pid,
            gw,
            Kind(kind),
            float(value),
            unit,
            _utc(measured),
            _utc(received),
            _utc(sent),
            TimeSource(source),
            address,
            model,
            tuple(Flag(f) for f in flags.split(";")) if flags else (),
            uuid.UUID(rid) if rid else None,
            BodySite(site) if site else None,
        )

    def to_observation(self) -> Observation:
        return Observation(
            id=self.id,
            kind=self.kind,
            value=self.value,
            unit=self.unit,
            measured_at=self.measured_at,
            received_at=self.received_at,
            time_source=self.time_source,
            device=DeviceRef(address=self.device_address, model=self.device_model),
            flags=self.flags,
            reading_id=self.reading_id,
            body_site=self.body_site,
        )


def _need(path: Path) -> Path:
    if not path.is_file():
        raise CohortFormatError(f"{path} is missing; is {path.parent} a complete cohort directory?")
    return path


def read_info(cohort_dir: Path | str) -> CohortInfo:
    """cohort.json, checked for format and version."""
    path = _need(Path(cohort_dir) / COHORT_FILE)
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        raise CohortFormatError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CohortFormatError(f"{path}: format is not {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CohortFormatError(
            f"{path}: format_version {meta.get('format_version')!r} is not supported; "
            f"this reader knows version {FORMAT_VERSION}"
        )
    try:
        return CohortInfo(
            Path(cohort_dir),
            meta["format_version"],
            meta["generator_version"],
            meta["seed"],
            meta["patients"],
            meta["days"],
            date.fromisoformat(meta["start"]),
            meta["timezone"],
            GroupChoice(meta["group"]),
            meta["counts"],
            meta["files"],
            meta["parameters"],
            meta.get("variant", "standard"),
        )
    except (KeyError, ValueError) as exc:
        raise CohortFormatError(f"{path}: bad or missing field: {exc}") from exc


# Device types as cohorts written before generator 1.1.0 name them (the simulator had its own
# enum then); read as the core's vitalvagt.devices.DeviceType, so old cohorts still load.
LEGACY_DEVICE_TYPES = {"bp_monitor": DeviceType.BP}


def device_type(value: str) -> DeviceType:
    """A device type from patients.jsonl, old names included ("bp_monitor" is now "bp")."""
    legacy = LEGACY_DEVICE_TYPES.get(value)
    return legacy if legacy is not None else DeviceType(value)


def read_patients(cohort_dir: Path | str) -> tuple[PatientRecord, ...]:
    out = []
    with _need(Path(cohort_dir) / PATIENTS_FILE).open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            devices = tuple(
                DeviceRecord(
                    device_type(x["type"]),
                    x["address"],
                    x["model"],
                    tuple(Kind(k) for k in x["kinds"]),
                    x["user_ids"],
                    x["has_clock"],
                )
                for x in d["devices"]
            )
            out.append(
                PatientRecord(
                    d["patient_id"],
                    d["gateway_id"],
                    d["index"],
                    Group(d["group"]),
                    {Kind(k): v for k, v in d["baseline"].items()},
                    d["schedule"]["morning_local"],
                    d["schedule"]["evening_local"],
                    d["adherence"]["miss_fraction"],
                    d["adherence"]["dropout_day"],
                    devices,
                    d["other_user_weight"],
                )
            )
    return tuple(out)


def _csv_reader(path: Path, columns: Sequence[str], text: Iterable[str]) -> Iterator[list[str]]:
    """A csv reader positioned after the header, which must be ``columns``."""
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None or tuple(header) != tuple(columns):
        raise CohortFormatError(f"{path}: header is not {','.join(columns)}")
    return reader


def read_events(cohort_dir: Path | str) -> tuple[Event, ...]:
    """Ground truth, as the Event objects the simulator made (gateway id is the patient's)."""
    path = _need(Path(cohort_dir) / EVENTS_FILE)
    out = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in _csv_reader(path, EVENT_COLUMNS, f):
            (
                eid,
                pid,
                _gw,
                typ,
                _clin,
                onset,
                evident,
                end,
                admitted,
                magnitude,
                mkind,
                _unit,
                effects,
                address,
            ) = row
            eff = tuple(
                (Kind(k), float(v))
                for k, v in (part.split("=") for part in effects.split(";") if part)
            )
            out.append(
                Event(
                    eid,
                    pid,
                    EventType(typ),
                    _utc(onset),
                    _utc(evident) if evident else None,
                    _utc(end),
                    float(magnitude),
                    Kind(mkind),
                    eff,
                    admitted == "true",
                    address or None,
                )
            )
    return tuple(out)


def iter_observation_rows(cohort_dir: Path | str) -> Iterator[ObservationRow]:
    """Every observation, streamed in file order: by patient, then measured time."""
    path = _need(Path(cohort_dir) / OBSERVATIONS_FILE)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in _csv_reader(path, OBSERVATION_COLUMNS, f):
            yield ObservationRow.parse(row)


@dataclass(frozen=True, slots=True)
class Home:
    """One patient's home: the patient, and the rows its gateway sends, in measured order."""

    patient: PatientRecord
    rows: tuple[ObservationRow, ...]

    @property
    def gateway_id(self) -> str:
        return self.patient.gateway_id

    def observations(self) -> list[Observation]:
        return [r.to_observation() for r in self.rows]

    def batches(self, *, max_observations: int = 500) -> list[ObservationBatch]:
        return home_batches(self.gateway_id, self.rows, max_observations=max_observations)


def iter_homes(cohort_dir: Path | str) -> Iterator[Home]:
    """Every home in patient order with all its rows (one home in memory at a time); homes
    without any observation (a patient who stopped at once) are included with no rows."""
    rows = iter_observation_rows(cohort_dir)
    pending = next(rows, None)
    for patient in read_patients(cohort_dir):
        mine = []
        while pending is not None and pending.patient_id == patient.patient_id:
            mine.append(pending)
            pending = next(rows, None)
        yield Home(patient, tuple(mine))
    if pending is not None:
        raise CohortFormatError(
            f"{cohort_dir}: observation of {pending.patient_id} out of patient order or unknown"
        )


def home_batches(
    gateway_id: str, rows: Iterable[ObservationRow], *, max_observations: int = 500
) -> list[ObservationBatch]:
    """The wire batches a gateway sends: the rows published at the same moment (``sent_at``)
    form one batch, in publishing order, split at ``max_observations`` but never inside a
    reading. 500 keeps a batch well under the wire format's 256 KiB payload limit."""
    ordered = sorted(rows, key=lambda r: r.sent_at)  # stable: keeps measured order inside
    batches: list[ObservationBatch] = []
    i = 0
    while i < len(ordered):
        sent = ordered[i].sent_at
        j = i
        while j < len(ordered) and ordered[j].sent_at == sent:
            j += 1
        group = ordered[i:j]
        chunk: list[ObservationRow] = []
        for k, row in enumerate(group):
            new_reading = row.reading_id is None or row.reading_id != group[k - 1].reading_id
            if len(chunk) >= max_observations and (k == 0 or new_reading):
                batches.append(_batch(gateway_id, chunk, sent))
                chunk = []
            chunk.append(row)
        batches.append(_batch(gateway_id, chunk, sent))
        i = j
    return batches


def _batch(gateway_id: str, rows: Sequence[ObservationRow], sent: datetime) -> ObservationBatch:
    return make_batch(gateway_id, [r.to_observation() for r in rows], sent_at=sent)


@dataclass(frozen=True, slots=True)
class Cohort:
    info: CohortInfo
    patients: tuple[PatientRecord, ...]
    events: tuple[Event, ...]

    @property
    def path(self) -> Path:
        return self.info.path

    def homes(self) -> Iterator[Home]:
        return iter_homes(self.path)


def load_cohort(cohort_dir: Path | str) -> Cohort:
    """Metadata, patients and ground truth; observations stay on disk (see iter_homes)."""
    return Cohort(read_info(cohort_dir), read_patients(cohort_dir), read_events(cohort_dir))


@dataclass(frozen=True, slots=True, eq=False)
class ObservationTable:
    """All observations as numpy columns, for analysis (alert-rule evaluation, tests)."""

    id: np.ndarray  # str
    patient_id: np.ndarray  # str
    kind: np.ndarray  # str (Kind values)
    value: np.ndarray  # float64
    measured_at: np.ndarray  # datetime64[ms], UTC
    received_at: np.ndarray
    sent_at: np.ndarray
    device_address: np.ndarray
    device_model: np.ndarray
    flags: np.ndarray  # str, ';'-separated
    reading_id: np.ndarray  # str, '' when the reading has one part

    def __len__(self) -> int:
        return int(self.value.size)


def read_observation_table(cohort_dir: Path | str) -> ObservationTable:
    path = _need(Path(cohort_dir) / OBSERVATIONS_FILE)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(_csv_reader(path, OBSERVATION_COLUMNS, f))
    if not rows:
        cols: list[list[str]] = [[] for _ in OBSERVATION_COLUMNS]
    else:
        cols = [list(c) for c in zip(*rows, strict=True)]

    def times(col: list[str]) -> np.ndarray:
        return np.array([t[:-1] for t in col], dtype="datetime64[ms]")  # drop the 'Z'

    c = dict(zip(OBSERVATION_COLUMNS, cols, strict=True))
    return ObservationTable(
        id=np.array(c["id"]),
        patient_id=np.array(c["patient_id"]),
        kind=np.array(c["kind"]),
        value=np.array(c["value"], dtype=float),
        measured_at=times(c["measured_at"]),
        received_at=times(c["received_at"]),
        sent_at=times(c["sent_at"]),
        device_address=np.array(c["device_address"]),
        device_model=np.array(c["device_model"]),
        flags=np.array(c["flags"]),
        reading_id=np.array(c["reading_id"]),
    )
