"""The rules of the house, read from the source (docs/architecture.md, "Rules of the house").

Every import statement counts, at the top of a module or inside a function: a lazy import
hides a dependency from the reader, not from these rules. Used by tests/core/test_house.py,
on the project and on small trees made to break a rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CORE = "vitalvagt"
COMPONENTS = ("gateway", "ingest", "alerts", "api")
# The simulator drives everything (emulated homes run the real gateway): it may import any
# component, and none may import it.
TOOLING = ("simulator",)
PACKAGES = (CORE, *COMPONENTS, *TOOLING)
# What the tablet may import besides the standard library and the project's own core: the
# core's and the `gateway` extra's libraries (pyproject.toml).
GATEWAY_LIBRARIES = frozenset({"pydantic", "pydantic_core", "pydantic_settings", "bleak",
                               "bleak_retry_connector", "paho"})  # fmt: skip
# Core modules the tablet must not reach: the embedded stack's process runner.
GATEWAY_FORBIDDEN_CORE = frozenset({"vitalvagt.stack", "vitalvagt.demo"})
MAX_LINES = 600


@dataclass
class Module:
    name: str  # dotted, e.g. "gateway.ble"
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # dotted names as written (absolute)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from pkg import mod` imports the module pkg.mod when there is one.
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def read_modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            name = _module_name(root, path)
            tree = ast.parse(text, filename=str(path))
            m = Module(name, path, text.count("\n"), _imports(tree, name, path.stem == "__init__"))
            modules[name] = m
    # Keep only names that are modules of the project, or the top-level name of a library.
    for m in modules.values():
        m.imports = {
            i if i in modules else i.split(".")[0]
            for i in m.imports
            if i in modules or i.split(".")[0] not in PACKAGES or i.split(".")[0] in modules
        }
        m.imports = {i for i in m.imports if i != m.name and (i in modules or "." not in i)}
    return modules


def _package(name: str) -> str:
    return name.split(".")[0]


def _project_edges(modules: dict[str, Module]) -> dict[str, set[str]]:
    return {n: {i for i in m.imports if i in modules} for n, m in modules.items()}


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Import cycles among the project's modules (Tarjan's strongly connected components)."""
    edges = _project_edges(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            # A package's __init__ importing its own submodules is not a cycle of concepts.
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(edges.get(v, ()))
    return seen


def violations(modules: dict[str, Module]) -> list[str]:
    """Every broken rule, one line each, naming the module and what it imports."""
    out: list[str] = []
    stdlib = sys.stdlib_module_names
    for name, m in sorted(modules.items()):
        pkg = _package(name)
        for i in sorted(m.imports):
            target = _package(i)
            if target == pkg or target not in PACKAGES:
                continue
            if pkg == CORE:
                out.append(f"{name} imports {i}: the core imports no component")
            elif pkg in COMPONENTS and target != CORE:
                out.append(f"{name} imports {i}: a component imports only the core and itself")
    edges = _project_edges(modules)
    for name in sorted(n for n in modules if _package(n) == "gateway"):
        for reached in sorted(_reachable(name, edges)):
            if reached in GATEWAY_FORBIDDEN_CORE:
                out.append(f"{name} reaches {reached}: the tablet does not run the hub's stack")
            for lib in sorted(modules[reached].imports - set(modules)):
                if lib not in stdlib and lib not in GATEWAY_LIBRARIES and lib != "__future__":
                    via = "" if reached == name else f" (through {reached})"
                    out.append(f"{name} reaches library {lib}{via}: not in the gateway extra")
    for cycle in cycles(modules):
        out.append(f"import cycle: {' -> '.join(cycle)}")
    for name, m in sorted(modules.items()):
        if m.lines > MAX_LINES:
            out.append(f"{name} has {m.lines} lines: one concept per module, under {MAX_LINES}")
    return out
