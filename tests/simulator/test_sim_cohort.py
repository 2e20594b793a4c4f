"""Cohort files: determinism, independence of cohort size, the loader, and the wire codec."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from simulator.cohort import CohortSpec, write_cohort
from simulator.cohort_format import (
    COHORT_FILE,
    EVENTS_FILE,
    FORMAT_VERSION,
    OBSERVATIONS_FILE,
    PATIENTS_FILE,
    CohortFormatError,
    GroupChoice,
    home_batches,
    iter_homes,
    iter_observation_rows,
    load_cohort,
    read_events,
    read_info,
)
from simulator.errors import SimulatorError
from tests.simulator.conftest import SimData
from vitalvagt.observation import Observation, stable_id
from vitalvagt.wire import (
    MAX_PAYLOAD_BYTES,
    ObservationBatch,
    check_batch,
    decode_batch,
    encode,
    obs_topic,
)

FILES = (COHORT_FILE, PATIENTS_FILE, OBSERVATIONS_FILE, EVENTS_FILE)
SMALL = CohortSpec(patients=25, days=20, seed=11)


def as_of(batch: ObservationBatch) -> datetime:
    """The hub's clock when the batch is sent: its cohort's time, not today's (the codec
    refuses readings from the future and from more than a year ago)."""
    return max(max(o.measured_at, o.received_at) for o in batch.observations)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "cohort"
    write_cohort(path, SMALL)
    return path


def _bytes(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in FILES}


def test_same_seed_gives_byte_identical_files(small: Path, tmp_path: Path) -> None:
    again = write_cohort(tmp_path / "again", SMALL)
    assert _bytes(small) == _bytes(again.path)


def test_different_seed_gives_different_files(small: Path, tmp_path: Path) -> None:
    other = write_cohort(tmp_path / "other", CohortSpec(25, 20, seed=12))
    a, b = _bytes(small), _bytes(other.path)
    for name in (PATIENTS_FILE, OBSERVATIONS_FILE, EVENTS_FILE):
        assert a[name] != b[name], name


def test_patient_does_not_depend_on_cohort_size(small: Path, tmp_path: Path) -> None:
    fewer = write_cohort(tmp_path / "fewer", CohortSpec(7, 20, seed=11)).path
    assert (fewer / PATIENTS_FILE).read_text().splitlines() == (
        small / PATIENTS_FILE
    ).read_text().splitlines()[:7]
    mine = {f"sim-p{i:05d}" for i in range(1, 8)}

    def rows(path: Path, name: str) -> list[str]:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path / name, "rt") as f:
            return [line for line in f if line.split(",")[1] in mine]

    for name in (OBSERVATIONS_FILE, EVENTS_FILE):
        assert rows(fewer, name) == rows(small, name)
        assert rows(fewer, name)


def test_cohort_json_describes_the_files(small: Path) -> None:
    info = read_info(small)
    assert (info.format_version, info.seed, info.patients, info.days, info.start, info.group) == (
        FORMAT_VERSION,
        SMALL.seed,
        SMALL.patients,
        SMALL.days,
        SMALL.start,
        GroupChoice.MIXED,
    )
    assert info.parameters["adherence"]["miss_run_continuation"] == 0.5
    for name, meta in info.files.items():
        assert meta["sha256"] == hashlib.sha256((small / name).read_bytes()).hexdigest()
    rows = sum(1 for _ in iter_observation_rows(small))
    assert rows == info.counts["observations"] == info.files[OBSERVATIONS_FILE]["rows"]
    events = read_events(small)
    assert len(events) == info.counts["events"]
    assert sum(e.clinical for e in events) == info.counts["clinical_events"]


def test_homes_hold_every_patient_and_every_row(small: Path) -> None:
    cohort = load_cohort(small)
    homes = list(cohort.homes())
    assert [h.patient.patient_id for h in homes] == [p.patient_id for p in cohort.patients]
    assert sum(len(h.rows) for h in homes) == cohort.info.counts["observations"]
    for home in homes:
        addresses = {d.address for d in home.patient.devices}
        for row in home.rows:
            assert row.gateway_id == home.gateway_id and row.patient_id == home.patient.patient_id
            assert row.device_address in addresses
        assert [r.measured_at for r in home.rows] == sorted(r.measured_at for r in home.rows)


def test_every_id_is_the_stable_id_and_unique(sim: SimData) -> None:
    tab = sim.table
    assert len(set(tab.id.tolist())) == len(tab)
    gateways = {p.patient_id: p.gateway_id for p in sim.patients}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for i in range(0, len(tab), 23):
        ms = int(tab.measured_at[i].astype("datetime64[ms]").astype("int64"))
        measured = epoch + timedelta(milliseconds=ms)
        expected = stable_id(
            gateways[str(tab.patient_id[i])], str(tab.device_address[i]), str(tab.kind[i]), measured
        )
        assert str(tab.id[i]) == str(expected)


def test_every_observation_passes_the_wire_codec(small: Path) -> None:
    checked = 0
    for home in iter_homes(small):
        for batch in home.batches():
            check_batch(batch, topic_gateway_id=home.gateway_id, now=as_of(batch))
            checked += len(batch.observations)
    assert checked == read_info(small).counts["observations"]


def test_big_cohort_homes_decode_from_bytes(sim: SimData) -> None:
    homes = iter_homes(sim.path)
    for _ in range(40):
        home = next(homes)
        for batch in home.batches():
            raw = encode(batch)
            assert len(raw) <= MAX_PAYLOAD_BYTES
            back = decode_batch(raw, topic_gateway_id=home.gateway_id, now=as_of(batch))
            assert back == batch


def test_observations_keep_reading_ids_flags_and_sites(small: Path) -> None:
    parts: dict[object, list[Observation]] = {}
    for home in iter_homes(small):
        for obs in home.observations():
            if obs.reading_id is not None:
                parts.setdefault(obs.reading_id, []).append(obs)
            if obs.kind == "temperature":
                assert obs.body_site == "tympanum"
    sizes = {frozenset(o.kind.value for o in group) for group in parts.values()}
    assert sizes == {
        frozenset({"spo2", "pulse"}),
        frozenset({"pulse", "bp_systolic", "bp_diastolic", "bp_mean"}),
    }
    for group in parts.values():
        assert len({(o.measured_at, o.device.address, o.flags) for o in group}) == 1


def test_batches_follow_publishing_and_never_split_a_reading(sim: SimData) -> None:
    for home in iter_homes(sim.path):
        held = [r for r in home.rows if r.sent_at - r.received_at > timedelta(hours=1)]
        if len({r.reading_id or r.id for r in held}) >= 3:
            break
    else:
        pytest.fail("no home with an uplink outage holding several readings")
    batches = home.batches()
    assert sum(len(b.observations) for b in batches) == len(home.rows)
    assert [b.sent_at for b in batches] == sorted(b.sent_at for b in batches)
    assert max(len(b.observations) for b in batches) > 4  # the outage's backlog in one batch
    small_batches = home_batches(home.gateway_id, home.rows, max_observations=3)
    for b in small_batches:
        rids = [o.reading_id for o in b.observations if o.reading_id is not None]
        for rid in set(rids):
            whole = [r for r in home.rows if r.reading_id == rid]
            assert rids.count(rid) == len(whole)  # every part of the reading is here


def test_wire_topic_for_generated_gateways(small: Path) -> None:
    for patient in load_cohort(small).patients:
        assert obs_topic(patient.gateway_id) == f"vv/v1/gw/{patient.gateway_id}/obs"


def test_refuses_to_overwrite_without_being_asked(small: Path, tmp_path: Path) -> None:
    target = tmp_path / "c"
    write_cohort(target, CohortSpec(3, 3, seed=1))
    with pytest.raises(SimulatorError, match="already holds a cohort"):
        write_cohort(target, CohortSpec(3, 3, seed=2))
    write_cohort(target, CohortSpec(3, 3, seed=2), overwrite=True)
    assert read_info(target).seed == 2


def test_unknown_format_version_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    path = write_cohort(tmp_path / "c", CohortSpec(2, 2, seed=1)).path
    meta = json.loads((path / COHORT_FILE).read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (path / COHORT_FILE).write_text(json.dumps(meta))
    with pytest.raises(CohortFormatError, match="format_version"):
        read_info(path)
    (path / EVENTS_FILE).unlink()
    with pytest.raises(CohortFormatError, match=r"events\.csv is missing"):
        read_events(path)
    (path / PATIENTS_FILE).write_text("")
    with gzip.open(path / OBSERVATIONS_FILE, "wt") as f:
        f.write("id,kind\n")
    with pytest.raises(CohortFormatError, match="header"):
        next(iter_observation_rows(path))


@pytest.mark.parametrize(("patients", "days", "seed"), [(0, 5, 1), (5, 0, 1), (5, 5, -1)])
def test_bad_cohort_spec(patients: int, days: int, seed: int) -> None:
    with pytest.raises(SimulatorError):
        CohortSpec(patients, days, seed)


def test_device_types_are_the_cores_and_old_cohorts_still_load(small: Path, tmp_path: Path) -> None:
    """The simulator uses vitalvagt.devices.DeviceType (issue 10); cohorts written before
    generator 1.1.0 name the cuff "bp_monitor" in patients.jsonl and still load, as "bp"."""
    from simulator.cohort_format import read_patients
    from vitalvagt.devices import DeviceType

    text = (small / PATIENTS_FILE).read_text()
    assert '"type":"bp"' in text and "bp_monitor" not in text
    old = tmp_path / "old"
    old.mkdir()
    for name in (COHORT_FILE, EVENTS_FILE, OBSERVATIONS_FILE):
        (old / name).write_bytes((small / name).read_bytes())
    (old / PATIENTS_FILE).write_text(text.replace('"type":"bp"', '"type":"bp_monitor"'))
    types = {d.type for p in read_patients(old) for d in p.devices}
    assert DeviceType.BP in types and types <= set(DeviceType)
    assert read_patients(old) == read_patients(small)
    assert sum(1 for _ in iter_homes(old)) == SMALL.patients
