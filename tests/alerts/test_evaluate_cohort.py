"""`vitalvagt evaluate --cohort` on a small simulator cohort read from its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerts.evaluate_input import read_cohort
from alerts.replay import replay_findings
from alerts.ruleset import FULL
from simulator.cohort import CohortSpec, write_cohort
from simulator.cohort_format import load_cohort
from vitalvagt.cli import main


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, CohortSpec(patients=12, days=70, seed=5))
    return out


def test_reader_agrees_with_the_simulators_loader(cohort: Path) -> None:
    ours = read_cohort(cohort)
    theirs = load_cohort(cohort)
    assert [p.patient_id for p in ours] == [p.patient_id for p in theirs.patients]
    assert [p.ctx.group for p in ours] == [p.group.value for p in theirs.patients]
    n_obs = json.loads((cohort / "cohort.json").read_text())["counts"]["observations"]
    assert sum(len(p.t) for p in ours) == n_obs
    assert sum(len(p.events) for p in ours) == len(theirs.events)
    assert {e.type for p in ours for e in p.events if e.clinical} <= {
        "copd_exacerbation", "hf_decompensation", "infection", "dehydration"}


def test_per_day_chunks_give_the_findings_of_one_pass(cohort: Path) -> None:
    n_findings = 0
    for p in read_cohort(cohort)[:6]:
        s = p.series()
        whole = [f.key() for f in replay_findings(s, p.ctx, FULL, "all")]
        assert [f.key() for f in replay_findings(s, p.ctx, FULL, "day")] == whole
        n_findings += len(whole)
    assert n_findings > 0


def test_cli_on_a_cohort(cohort: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "alerts.csv"
    assert main(["evaluate", "--cohort", str(cohort), "--rules", "both", "--json",
                 "--alerts-out", str(out)]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert [s["ruleset"] for s in res["scores"]] == ["guideline", "full"]
    assert res["patient_days"] > 12 * 60
    with out.open() as f:
        header = f.readline().strip()
    assert header == "ruleset,patient_id,time,rule,severity,category"
