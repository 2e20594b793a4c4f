"""The rules of the house as a test (issue 10): components import only the core and
themselves, the core imports no component, the tablet gateway reaches no server library and
not the stack runner, no import cycle (lazy imports count), no module over 600 lines. The
checker is shown to catch each kind of violation on small trees made to break it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.house import PACKAGES, read_modules, violations

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_project_has_a_place_in_the_rules() -> None:
    """The rules are derived from the package list: a new package must be given its role."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    declared = {p.rstrip("*") for p in find["find"]["include"]}
    on_disk = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} - {"tests", "bench"}
    assert declared == set(PACKAGES) == on_disk


def test_the_project_keeps_the_rules_of_the_house() -> None:
    broken = violations(read_modules(ROOT))
    assert not broken, "\n".join(broken)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


FINE = {
    "vitalvagt/wire.py": "import json\nfrom vitalvagt import kinds\n",
    "vitalvagt/kinds.py": "from enum import StrEnum\n",
    "vitalvagt/stack.py": "import psycopg\n",
    "gateway/app.py": "import bleak\nfrom paho.mqtt import client\nfrom vitalvagt.wire import x\n",
    "ingest/service.py": "import psycopg\nfrom vitalvagt import wire\nfrom . import store\n",
    "ingest/store.py": "import psycopg\n",
    "simulator/home.py": "from gateway.app import GatewayApp\nimport bumble\n",
}

BROKEN = {
    "a component imports another": (
        {"alerts/engine.py": "def f():\n    from ingest.store import Store\n"},
        "alerts.engine imports ingest.store",
    ),
    "the core imports a component": (
        {"vitalvagt/cli.py": "import gateway.app\n"},
        "vitalvagt.cli imports gateway.app: the core imports no component",
    ),
    "a component imports the simulator": (
        {"gateway/cli.py": "from simulator.home import x\n"},
        "gateway.cli imports simulator.home",
    ),
    "the gateway imports a server library": (
        {"gateway/cli.py": "def provision():\n    import psycopg\n"},
        "gateway.cli reaches library psycopg",
    ),
    "the gateway reaches a server library through the core": (
        {"gateway/cli.py": "from vitalvagt.db import gateways\n",
         "vitalvagt/db/__init__.py": "", "vitalvagt/db/gateways.py": "import psycopg\n"},
        "gateway.cli reaches library psycopg (through vitalvagt.db.gateways)",
    ),
    "the gateway imports the stack runner": (
        {"gateway/app.py": "from vitalvagt.stack import Stack\n"},
        "gateway.app reaches vitalvagt.stack",
    ),
    "a cycle hidden by a lazy import": (
        {"ingest/store.py": "def f():\n    from ingest import service\n"},
        "import cycle: ingest.service -> ingest.store",
    ),
    "a module over 600 lines": (
        {"api/app.py": "x = 1\n" * 601},
        "api.app has 601 lines",
    ),
}


def test_a_tree_that_keeps_the_rules_passes(tmp_path: Path) -> None:
    assert violations(read_modules(_tree(tmp_path, FINE))) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_kind_of_violation_is_reported(case: str, tmp_path: Path) -> None:
    files, expected = BROKEN[case]
    broken = violations(read_modules(_tree(tmp_path, {**FINE, **files})))
    assert any(line.startswith(expected) for line in broken), broken
