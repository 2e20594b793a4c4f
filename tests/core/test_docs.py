"""docs/architecture.md stays true to the code: every module of the product has its line."""

from __future__ import annotations

from pathlib import Path

from tests.house import PACKAGES

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_has_its_line_in_the_architecture() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    modules = [
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if p.name != "__init__.py"
    ]
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"not in docs/architecture.md's module list: {missing}"
