"""A large cohort generated once per test session, with the per-row facts the tests need.

Sized so that the statistical tests have power (about 90 COPD exacerbations and 40
heart-failure decompensations) and the whole package still runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from simulator.cohort import CohortSpec, write_cohort
from simulator.cohort_format import (
    CohortInfo,
    ObservationTable,
    PatientRecord,
    load_cohort,
    read_observation_table,
)
from simulator.physiology import Calendar, Event, diurnal_offset

# The real ingest, for tests whose gateways delete readings only on the hub's receipt.
from tests.ingest.conftest import ingest  # noqa: F401
from vitalvagt.kinds import Kind

BIG = CohortSpec(patients=400, days=90, seed=20250106)


@dataclass(frozen=True, eq=False)
class SimData:
    path: Path
    info: CohortInfo
    patients: tuple[PatientRecord, ...]
    events: tuple[Event, ...]
    table: ObservationTable
    calendar: Calendar
    pidx: np.ndarray  # row -> patient index
    t: np.ndarray  # row -> measured Unix seconds (float)
    day: np.ndarray  # row -> local day index
    local_min: np.ndarray  # row -> local minutes after midnight
    baseline: np.ndarray  # row -> the patient's baseline of the row's kind (nan for bp_mean)
    artefact: np.ndarray  # row -> its reading is a labelled artefact
    in_event: np.ndarray  # row -> inside a clinical event of its patient (onset .. end + 2 d)
    row_of: dict[tuple[str, int, str], int]  # (device address, measured second, kind) -> row
    patient_rows: tuple[np.ndarray, ...]  # patient index -> its rows, in measured order

    def kind(self, kind: Kind) -> np.ndarray:
        return self.table.kind == kind.value

    def residual(self) -> np.ndarray:
        """Value minus the patient's baseline and the daily rhythm at the reading's hour."""
        out = self.table.value - self.baseline
        for k in Kind:
            m = self.kind(k)
            if m.any():
                out[m] -= diurnal_offset(k, self.local_min[m] / 60)
        return out

    @property
    def clean(self) -> np.ndarray:
        return ~self.artefact & ~self.in_event & (self.table.flags == "")

    def events_of(self, typ: str) -> list[Event]:
        return [e for e in self.events if e.type.value == typ]


def _seconds(moments: np.ndarray) -> np.ndarray:
    return moments.astype("datetime64[ms]").astype(np.int64) / 1000.0


def analyse(path: Path) -> SimData:
    cohort = load_cohort(path)
    table = read_observation_table(path)
    info = cohort.info
    calendar = Calendar.make(info.start, info.days, info.timezone)
    index = {p.patient_id: p.index for p in cohort.patients}
    pidx = np.array([index[p] for p in table.patient_id.tolist()], dtype=np.int64)
    t = _seconds(table.measured_at)
    day = np.searchsorted(calendar.day_start_s, t, side="right") - 1
    local_min = (t - calendar.day_start_s[day]) / 60
    baseline = np.full(len(table), np.nan)
    for k in Kind:
        m = table.kind == k.value
        if m.any() and k is not Kind.BP_MEAN:
            values = np.array([p.baseline.get(k, np.nan) for p in cohort.patients])
            baseline[m] = values[pidx[m]]
    # Artefact readings are labelled with their device and measured second.
    marks = {(e.device_address, int(e.onset.timestamp())) for e in cohort.events if not e.clinical}
    t_int = np.floor(t).astype(np.int64)
    addresses, seconds = table.device_address.tolist(), t_int.tolist()
    artefact = np.array([pair in marks for pair in zip(addresses, seconds, strict=True)], bool)
    row_of = {
        key: i for i, key in enumerate(zip(addresses, seconds, table.kind.tolist(), strict=True))
    }
    in_event = np.zeros(len(table), bool)
    for e in cohort.events:
        if e.clinical:
            rows = pidx == index[e.patient_id]
            in_event |= rows & (t >= e.onset.timestamp()) & (t < e.end.timestamp() + 2 * 86400)
    return SimData(
        path,
        info,
        cohort.patients,
        cohort.events,
        table,
        calendar,
        pidx,
        t,
        day,
        local_min,
        baseline,
        artefact,
        in_event,
        row_of,
        tuple(np.flatnonzero(pidx == p.index) for p in cohort.patients),
    )


@pytest.fixture(scope="session")
def big_cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("sim") / "big"
    write_cohort(path, BIG)
    yield path


@pytest.fixture(scope="session")
def sim(big_cohort_dir: Path) -> SimData:
    return analyse(big_cohort_dir)
