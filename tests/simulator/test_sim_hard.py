"""The hard variant of the simulator (docs/simulation.md, "The hard variant"): deterministic
per seed, every hard feature present in ground truth and readings, standard unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from alerts.evaluate_input import read_cohort
from simulator.cohort import CohortSpec, generate, write_cohort
from simulator.cohort_format import COHORT_FILE, EVENTS_FILE, load_cohort, read_info
from simulator.parameters import (
    CLINICAL_EVENTS,
    DEFAULT_PARAMS,
    HARD_PARAMS,
    KIND_INDEX,
    VARIANTS,
    EventType,
)
from simulator.physiology import Calendar, draw_episodes, effect_profile
from vitalvagt.kinds import Kind

FILES = ("cohort.json", "events.csv", "observations.csv.gz", "patients.jsonl")
HARD = CohortSpec(patients=200, days=150, seed=4242)
DAY = 86_400

# A standard cohort of 60 patients x 60 days, seed 7, as written before the hard variant
# existed (generator 1.1.0, numpy 2.4.6): the standard output must not change.
PINNED_NUMPY = "2.4.6"
PINNED = {
    "cohort.json": "0df0e082c22047aaae3b1b360cc459d9d89809d8e467070bcfeb8954300e9cc6",
    "events.csv": "bfa4783fbf67df7182e7075349e64f66820f7df73598ae8b402db26b59462c00",
    "observations.csv.gz": "87e0505fda3eec8da1419419c2c8ee4c13b7f77752eea6dc8e523b453e0e15e1",
    "patients.jsonl": "319f679d62d69f1bf0ef1517a211796b4734b0a244a328d8db95a3e156359079",
}


def _digests(d: Path) -> dict[str, str]:
    return {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in FILES}


@pytest.fixture(scope="module")
def hard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hard") / "c"
    write_cohort(out, HARD, params=HARD_PARAMS)
    return out


@pytest.fixture(scope="module")
def sims():
    return list(generate(HARD, HARD_PARAMS))


def test_standard_output_is_unchanged(tmp_path: Path) -> None:
    if np.__version__ != PINNED_NUMPY:
        pytest.skip(f"pinned with numpy {PINNED_NUMPY}; numpy streams may differ across versions")
    write_cohort(tmp_path / "s", CohortSpec(patients=60, days=60, seed=7))
    assert _digests(tmp_path / "s") == PINNED
    # The default and the explicit standard variant are the same parameters.
    write_cohort(tmp_path / "v", CohortSpec(patients=60, days=60, seed=7),
                 params=VARIANTS["standard"])  # fmt: skip
    assert _digests(tmp_path / "v") == PINNED


def test_standard_cohort_json_has_no_hard_keys(tmp_path: Path) -> None:
    write_cohort(tmp_path / "s", CohortSpec(patients=3, days=5, seed=1))
    meta = json.loads((tmp_path / "s" / COHORT_FILE).read_text())
    assert "variant" not in meta and "noise" not in meta["parameters"]
    assert read_info(tmp_path / "s").variant == "standard"
    patients = (tmp_path / "s" / "patients.jsonl").read_text()
    assert '"noise"' not in patients


def test_hard_is_deterministic_per_seed(tmp_path: Path, hard_dir: Path) -> None:
    again = tmp_path / "again"
    write_cohort(again, HARD, params=HARD_PARAMS)
    assert _digests(again) == _digests(hard_dir)
    other = tmp_path / "other"
    write_cohort(other, CohortSpec(HARD.patients, HARD.days, HARD.seed + 1), params=HARD_PARAMS)
    assert _digests(other)["observations.csv.gz"] != _digests(hard_dir)["observations.csv.gz"]
    # ... and differs from the standard cohort of the same seed.
    std = tmp_path / "std"
    write_cohort(std, HARD)
    assert _digests(std)["observations.csv.gz"] != _digests(hard_dir)["observations.csv.gz"]


def test_hard_cohort_records_its_variant(hard_dir: Path) -> None:
    meta = json.loads((hard_dir / COHORT_FILE).read_text())
    assert meta["variant"] == "hard"
    assert meta["parameters"]["variant"] == "hard"
    assert meta["parameters"]["noise"]["median"] == HARD_PARAMS.noise.median
    assert read_info(hard_dir).variant == "hard"
    rec = json.loads((hard_dir / "patients.jsonl").read_text().splitlines()[0])
    assert set(rec["noise"]) == {"day_variation", "reading"}


def test_noisier_patients(sims) -> None:
    noise = np.array([s.profile.noise for s in sims])
    assert noise.shape == (HARD.patients, 2)
    assert np.median(noise[:, 0]) > 1.0 and np.median(noise[:, 1]) > 1.0
    assert noise.max() > 1.6 and noise.min() < 1.0  # some patients much noisier than others
    for kind in DEFAULT_PARAMS.day_variation:
        assert HARD_PARAMS.day_variation[kind].sd > DEFAULT_PARAMS.day_variation[kind].sd
    # In the readings: the SpO2 scatter of stable days of the noisiest patients is larger
    # than that of the calmest ones.
    spread = []
    for s in sims:
        r = s.readings
        m = (r.kind == KIND_INDEX[Kind.SPO2]) & (r.flags == 0)
        t = r.measured_us / 1e6
        for e in s.events:
            if e.clinical or e.type is EventType.OXIMETER_SPURIOUS_LOW:
                m &= ~((t >= e.onset.timestamp() - 60) & (t <= e.end.timestamp() + 2 * DAY))
        if m.sum() > 40:
            spread.append((s.profile.noise[0] + s.profile.noise[1], float(np.std(r.value[m]))))
    spread.sort()
    third = len(spread) // 3
    calm = np.median([x for _, x in spread[:third]])
    noisy = np.median([x for _, x in spread[-third:]])
    assert noisy > 1.3 * calm


def test_events_with_one_sign_and_varied_onsets(hard_dir: Path) -> None:
    events = load_cohort(hard_dir).events
    copd = [e for e in events if e.type is EventType.COPD_EXACERBATION]
    hf = [e for e in events if e.type is EventType.HF_DECOMPENSATION]
    kinds = lambda e: {k for k, _ in e.effects}  # noqa: E731
    assert any(kinds(e) == {Kind.PULSE} for e in copd)  # only a pulse rise
    assert any(Kind.SPO2 not in kinds(e) and e.magnitude_kind is Kind.PULSE for e in copd)
    assert any(kinds(e) == {Kind.WEIGHT} for e in hf)  # weight, no SpO2 (nor pulse) change
    assert any(Kind.WEIGHT not in kinds(e) for e in hf)  # no weight gain at all
    build = np.array([(e.evident_at - e.onset).total_seconds() / DAY for e in copd])
    assert build.min() < 3 and build.max() > 7  # the standard range is 3-7 days
    hf_build = np.array([(e.evident_at - e.onset).total_seconds() / DAY for e in hf])
    assert hf_build.max() > 14  # standard at most 14
    small = [e for e in copd if Kind.SPO2 in kinds(e) and dict(e.effects)[Kind.SPO2] > -2]
    assert small  # subtler than the standard's 2 points at least


def test_onset_shapes_vary(sims) -> None:
    # The rise is (time share) ** shape, shape log-uniform in 0.4-2.5: fast early rises and
    # slow-then-late ones (episodes drawn from the patient's event generator, k = 3).
    cal = Calendar.make(HARD.start, HARD.days)
    shapes = []
    for s in sims[:80]:
        seq = np.random.SeedSequence(HARD.seed, spawn_key=(s.profile.index, 3))
        episodes = draw_episodes(np.random.default_rng(seq), s.profile.group, cal, HARD_PARAMS)
        shapes += [ep.shape for ep in episodes if ep.type in CLINICAL_EVENTS]
    shapes = np.array(shapes)
    assert shapes.min() < 0.6 and shapes.max() > 1.8
    assert np.all((shapes >= 0.4) & (shapes <= 2.5))
    # The profile itself: at the middle of the rise, a share of 0.5 ** shape of the peak.
    mid = effect_profile(np.array([50.0]), 0, 100, 200, admitted=False, shape=2.0)
    assert mid[0] == pytest.approx(0.25)


def test_benign_look_alikes_are_labelled_and_visible(hard_dir: Path, sims) -> None:
    events = load_cohort(hard_dir).events
    by_type = {t: [e for e in events if e.type is t] for t in EventType}
    for t in (EventType.BENIGN_FEVER, EventType.WEIGHT_DRIFT, EventType.OXIMETER_SPURIOUS_LOW):
        assert by_type[t], t
        assert all(not e.clinical for e in by_type[t])
    text = (hard_dir / EVENTS_FILE).read_text().splitlines()
    for t in ("benign_fever", "weight_drift", "oximeter_spurious_low"):
        rows = [r for r in text if f",{t},false," in r]
        assert rows and all(f",{t},true," not in r for r in text)
    # Drifts are slow (weeks), fevers short.
    drift = [(e.evident_at - e.onset).total_seconds() / DAY
             for e in by_type[EventType.WEIGHT_DRIFT]]  # fmt: skip
    assert min(drift) >= 14
    fever = [(e.end - e.onset).total_seconds() / DAY for e in by_type[EventType.BENIGN_FEVER]]
    assert max(fever) <= 4.5
    # The look-alikes show in the readings: fever near its peak, a drift's weight up, and a
    # spurious low SpO2 reading without any flag.
    hot, heavy, lows = [], [], 0
    for s in sims:
        r, base = s.readings, s.profile.baseline
        t = r.measured_us / 1e6
        for e in s.events:
            if e.type is EventType.BENIGN_FEVER and Kind.TEMPERATURE in dict(e.effects):
                m = ((r.kind == KIND_INDEX[Kind.TEMPERATURE])
                     & (np.abs(t - e.evident_at.timestamp()) < 0.5 * DAY))  # fmt: skip
                hot += list(r.value[m] - base[Kind.TEMPERATURE])
            if e.type is EventType.WEIGHT_DRIFT:
                m = ((r.kind == KIND_INDEX[Kind.WEIGHT]) & (r.flags == 0)
                     & (np.abs(t - e.evident_at.timestamp()) < 2 * DAY))  # fmt: skip
                heavy += list(r.value[m] - base[Kind.WEIGHT])
            if e.type is EventType.OXIMETER_SPURIOUS_LOW:
                m = (r.kind == KIND_INDEX[Kind.SPO2]) & (np.abs(t - e.onset.timestamp()) < 1)
                assert m.sum() == 1 and r.flags[m][0] == 0
                lows += 1
    assert lows > 50
    assert np.median(hot) > 0.4
    assert np.median(heavy) > 0.8


def test_evaluate_reads_look_alikes_as_not_clinical(hard_dir: Path) -> None:
    patients = read_cohort(hard_dir)
    types = {e.type: e.clinical for p in patients for e in p.events}
    assert types["benign_fever"] is False and types["weight_drift"] is False
    assert types["oximeter_spurious_low"] is False
    assert types["copd_exacerbation"] is True


def test_hard_start_and_group_options(tmp_path: Path) -> None:
    spec = CohortSpec(patients=5, days=10, seed=3, start=date(2025, 6, 1))
    write_cohort(tmp_path / "h", spec, params=HARD_PARAMS)
    assert read_info(tmp_path / "h").start == date(2025, 6, 1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vitalvagt.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_variant_option(tmp_path: Path) -> None:
    hard, std = tmp_path / "hard", tmp_path / "std"
    args = ("simulate", "cohort", "--patients", "8", "--days", "20", "--seed", "5")
    done = _cli(*args, "--out", str(hard), "--variant", "hard")
    assert done.returncode == 0, done.stderr
    assert "variant hard" in done.stdout
    assert read_info(hard).variant == "hard"
    write_cohort(tmp_path / "api", CohortSpec(8, 20, 5), params=HARD_PARAMS)
    assert _digests(tmp_path / "api") == _digests(hard)  # the CLI writes the same files
    done = _cli(*args, "--out", str(std))  # default: standard
    assert done.returncode == 0, done.stderr
    write_cohort(tmp_path / "plain", CohortSpec(8, 20, 5))
    assert _digests(tmp_path / "plain") == _digests(std)
    assert _cli(*args, "--out", str(tmp_path / "x"), "--variant", "nasty").returncode == 2
    assert "--variant" in _cli("simulate", "cohort", "--help").stdout
