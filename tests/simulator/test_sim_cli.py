"""`vitalvagt simulate cohort` run as a user runs it: a separate process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulator import cli
from simulator.cohort import DEFAULT_START
from simulator.cohort_format import load_cohort


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vitalvagt.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_writes_a_cohort(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    done = _run("simulate", "cohort", "--patients", "12", "--days", "15", "--seed", "4",
                "--out", str(out), "--start", "2025-03-01", "--group", "heart_failure")
    assert done.returncode == 0, done.stderr
    assert "12 patients x 15 days" in done.stdout
    cohort = load_cohort(out)
    assert (cohort.info.patients, cohort.info.days, cohort.info.seed) == (12, 15, 4)
    assert str(cohort.info.start) == "2025-03-01"
    assert {p.group.value for p in cohort.patients} == {"heart_failure"}
    assert cohort.info.counts["observations"] > 12 * 15 * 3

    again = _run("simulate", "cohort", "--patients", "12", "--days", "15", "--seed", "4",
                 "--out", str(out))
    assert again.returncode == 1
    assert "already holds a cohort" in again.stderr and "--force" in again.stderr


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    done = _run("simulate", "cohort", "--patients", "0", "--days", "5", "--seed", "1",
                "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "--patients" in done.stderr
    done = _run("simulate", "cohort", "--patients", "3", "--days", "5", "--seed", "1",
                "--out", str(tmp_path / "x"), "--start", "01-03-2025")
    assert done.returncode == 2 and "not a date" in done.stderr
    assert not (tmp_path / "x").exists()


def test_help_says_what_it_does_and_needs() -> None:
    for args in (("simulate", "--help"), ("simulate", "cohort", "--help")):
        done = _run(*args)
        assert done.returncode == 0
        assert "needs nothing running" in " ".join(done.stdout.split()).lower()
    assert "--seed S" in _run("simulate", "cohort", "--help").stdout


def test_cli_default_start_is_the_library_default() -> None:
    assert cli.DEFAULT_START == DEFAULT_START
