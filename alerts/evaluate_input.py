"""Input for `vitalvagt evaluate`: a simulator cohort directory or plain CSV files.

Read from disk by their documented formats (docs/simulation.md section 3 for a cohort; the
CSV columns in docs/clinical-rules.md), never by importing the simulator. A bad row is an
`InputError` naming the file, the line and the field.

CSV files (header row, comma-separated, UTF-8):
- observations: patient_id, kind, value, unit, measured_at (ISO 8601 with offset), flags
  (the wire format's quality flag names, `;`-separated, may be empty);
- patients: patient_id, group (copd, heart_failure, both), optional on_oxygen and
  spo2_scale2 (true/false, yes/no, 1/0);
- events: patient_id, type (the simulator's event types), onset, evident (empty for
  artefacts), optional end and admitted (used to pause missed-measurement notices).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from alerts.errors import AlertsError
from alerts.series import GROUPS, KIND_CODE, PatientContext, Series
from vitalvagt.kinds import KIND_SPECS, Kind
from vitalvagt.quality import UNRELIABLE, Flag

CLINICAL_TYPES = frozenset({"copd_exacerbation", "hf_decompensation", "infection", "dehydration"})
ARTEFACT_TYPES = frozenset({"oximeter_motion", "oximeter_low_perfusion", "loose_cuff",
                            "clothes_on_scale", "other_user_on_scale",
                            "oximeter_spurious_low"})  # fmt: skip
# Benign look-alikes (the simulator's hard variant): the patient changes but needs nothing;
# not clinical, so an alert during one counts as a false alert.
BENIGN_TYPES = frozenset({"benign_fever", "weight_drift"})
KNOWN_TYPES = CLINICAL_TYPES | ARTEFACT_TYPES | BENIGN_TYPES
COHORT_FORMAT, COHORT_VERSION = "vitalvagt-sim-cohort", 1
_FLAGS = {f.value: f for f in Flag}
_UNRELIABLE = frozenset(f.value for f in UNRELIABLE)
_TRUE, _FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n", ""}
# Within one time stamp the pulse comes last (alerts/quality_rule.py).
_TIE_RANK = np.array([9 if k is Kind.PULSE else i for i, k in enumerate(KIND_CODE)], np.int8)


class InputError(AlertsError):
    """A file for `vitalvagt evaluate` is missing or has a bad row."""


@dataclass(frozen=True)
class Event:
    patient_id: str
    type: str
    clinical: bool
    onset: int  # seconds since the epoch
    evident: int | None
    end: int | None = None
    admitted: bool = False


@dataclass
class PatientData:
    patient_id: str
    ctx: PatientContext
    t: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    reliable: list[bool] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def series(self) -> Series:
        t = np.asarray(self.t, dtype=np.int64)
        k = np.asarray(self.kind, dtype=np.int8)
        order = np.lexsort((_TIE_RANK[k], t)) if len(t) else np.zeros(0, dtype=np.int64)
        return Series(t[order], k[order], np.asarray(self.value, np.float64)[order],
                      np.asarray(self.reliable, dtype=bool)[order])  # fmt: skip


def _where(path: Path, line: int) -> str:
    return f"{path}: line {line}"


def _time(text: str, path: Path, line: int, name: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{_where(path, line)}: {name} {text!r} is not an ISO 8601 time "
                         "(for example 2025-01-07T07:20:40+01:00)") from None  # fmt: skip
    if moment.tzinfo is None:
        raise InputError(f"{_where(path, line)}: {name} {text!r} has no UTC offset "
                         "(add Z or +01:00)")  # fmt: skip
    return int(moment.timestamp())


def _bool(text: str, path: Path, line: int, name: str) -> bool:
    v = text.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InputError(f"{_where(path, line)}: {name} {text!r} is not true or false")


def _rows(path: Path, text: Iterable[str], required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{path}: empty file, expected a header row") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: line 1: missing column(s) {', '.join(missing)} "
                         f"(have {', '.join(header)})")  # fmt: skip
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise InputError(f"{_where(path, line)}: {len(row)} fields, the header has "
                             f"{len(header)}")  # fmt: skip
        yield line, dict(zip(header, row, strict=True))


def _open(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_patients_csv(path: Path) -> dict[str, PatientData]:
    out: dict[str, PatientData] = {}
    with _open(path) as f:
        for line, r in _rows(path, f, ("patient_id", "group")):
            pid, group = r["patient_id"].strip(), r["group"].strip()
            if not pid:
                raise InputError(f"{_where(path, line)}: patient_id is empty")
            if group not in GROUPS:
                raise InputError(f"{_where(path, line)}: group {group!r} is not one of "
                                 f"{', '.join(GROUPS)}")  # fmt: skip
            if pid in out:
                raise InputError(f"{_where(path, line)}: patient {pid!r} appears twice")
            ctx = PatientContext(
                group,
                spo2_scale2=_bool(r.get("spo2_scale2", ""), path, line, "spo2_scale2"),
                on_oxygen=_bool(r.get("on_oxygen", ""), path, line, "on_oxygen"),
            )
            out[pid] = PatientData(pid, ctx)
    return out


def read_observations_csv(path: Path, patients: dict[str, PatientData]) -> None:
    cols = ("patient_id", "kind", "value", "unit", "measured_at", "flags")
    kinds = {k.value: k for k in Kind}
    with _open(path) as f:
        for line, r in _rows(path, f, cols):
            p = patients.get(r["patient_id"].strip())
            if p is None:
                raise InputError(f"{_where(path, line)}: patient {r['patient_id']!r} is not in "
                                 "the patients file")  # fmt: skip
            kind = kinds.get(r["kind"].strip())
            if kind is None:
                raise InputError(f"{_where(path, line)}: kind {r['kind']!r} is not one of "
                                 f"{', '.join(kinds)}")  # fmt: skip
            spec = KIND_SPECS[kind]
            if r["unit"].strip() != spec.unit:
                raise InputError(f"{_where(path, line)}: unit {r['unit']!r} for {kind.value}: "
                                 f"expected {spec.unit!r}")  # fmt: skip
            try:
                value = float(r["value"])
            except ValueError:
                raise InputError(f"{_where(path, line)}: value {r['value']!r} is not a "
                                 "number") from None  # fmt: skip
            if not spec.plausible_min <= value <= spec.plausible_max:
                raise InputError(f"{_where(path, line)}: value {value:g} {spec.unit} is outside "
                                 f"the plausible {spec.plausible_min:g}-{spec.plausible_max:g} "
                                 f"for {kind.value}")  # fmt: skip
            flags = [x.strip() for x in r["flags"].split(";") if x.strip()]
            for name in flags:
                if name not in _FLAGS:
                    raise InputError(f"{_where(path, line)}: flag {name!r} is not a quality "
                                     "flag of the wire format (vitalvagt/quality.py)")
            p.t.append(_time(r["measured_at"], path, line, "measured_at"))
            p.kind.append(KIND_CODE[kind])
            p.value.append(value)
            p.reliable.append(not _UNRELIABLE.intersection(flags))


def read_events_csv(path: Path, patients: dict[str, PatientData], *,
                    evident: str = "evident") -> None:  # fmt: skip
    with _open(path) as f:
        for line, r in _rows(path, f, ("patient_id", "type", "onset", evident)):
            p = patients.get(r["patient_id"].strip())
            if p is None:
                raise InputError(f"{_where(path, line)}: patient {r['patient_id']!r} is not in "
                                 "the patients file")  # fmt: skip
            typ = r["type"].strip()
            if typ not in KNOWN_TYPES:
                raise InputError(f"{_where(path, line)}: event type {typ!r} is not one of "
                                 f"{', '.join(sorted(KNOWN_TYPES))}")
            clinical = typ in CLINICAL_TYPES
            onset = _time(r["onset"], path, line, "onset")
            ev = r[evident].strip()
            if clinical and not ev:
                raise InputError(f"{_where(path, line)}: event type {typ} needs its {evident} time")
            ev_t = _time(ev, path, line, evident) if ev else None
            if ev_t is not None and ev_t < onset:
                raise InputError(f"{_where(path, line)}: {evident} is before onset")
            end = r.get("end", "").strip()
            p.events.append(Event(
                p.patient_id, typ, clinical, onset, ev_t,
                _time(end, path, line, "end") if end else None,
                _bool(r.get("admitted", ""), path, line, "admitted"),
            ))  # fmt: skip


def read_csv_input(observations: Path, patients: Path,
                   events: Path | None) -> list[PatientData]:  # fmt: skip
    data = read_patients_csv(Path(patients))
    read_observations_csv(Path(observations), data)
    if events is not None:
        read_events_csv(Path(events), data)
    return list(data.values())


def read_cohort(directory: Path, *, copd_scale2: bool = False) -> list[PatientData]:
    """A simulator cohort (format vitalvagt-sim-cohort version 1) from its files."""
    d = Path(directory)
    meta_path = d / "cohort.json"
    if not meta_path.is_file():
        raise InputError(f"{d}: no cohort.json (not a cohort, or an incomplete one)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != COHORT_FORMAT or meta.get("format_version") != COHORT_VERSION:
        raise InputError(f"{meta_path}: format {meta.get('format')!r} version "
                         f"{meta.get('format_version')!r}; this reader knows {COHORT_FORMAT!r} "
                         f"version {COHORT_VERSION}")  # fmt: skip
    data: dict[str, PatientData] = {}
    path = d / "patients.jsonl"
    with _open(path) as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
                pid, group = rec["patient_id"], rec["group"]
            except (ValueError, KeyError) as exc:
                raise InputError(f"{_where(path, line)}: {exc}") from None
            scale2 = copd_scale2 and group in ("copd", "both")
            data[pid] = PatientData(pid, PatientContext(group, spo2_scale2=scale2))
    read_observations_csv(d / "observations.csv.gz", data)
    read_events_csv(d / "events.csv", data, evident="evident_at")
    return list(data.values())
