"""The layering, pinned: data -> degrade -> models -> engine -> report -> workflow -> cli.

Every import of every module (module level and inside functions, parsed with ``ast``) may
only reach its own package or a lower floor, and no two modules import each other, directly
or around a cycle. The foundation (errors, scale, config, atomic, stackenv, metrics) is below
every floor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"crfm_bench": ROOT / "platform" / "crfm_bench", "crfm_cli": ROOT / "cli" / "crfm_cli"}

FOUNDATION = ("errors", "scale", "config", "atomic", "stackenv", "cluster", "metrics")
FLOORS = ["data", "degrade", "models", "tracking", "engine", "report", "workflow", "crfm_cli"]

# Known crossings to remove (each a (module, imported module) pair); none today: starting
# Ray (crfm_bench.cluster) is foundation, used by degrade and engine alike.
KNOWN: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    out = {}
    for top, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = modules()


def imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            targets = [
                f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names
            ]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def floor(module: str) -> tuple[int, str]:
    """(rank, unit) of a module: the foundation is -1, then FLOORS in order."""
    parts = module.split(".")
    if parts[0] == "crfm_cli":
        return FLOORS.index("crfm_cli"), "crfm_cli"
    unit = parts[1] if len(parts) > 1 else "__init__"
    if unit in FOUNDATION or unit == "__init__":
        return -1, unit
    return FLOORS.index(unit), unit


def test_every_module_is_on_a_known_floor():
    for name in MODULES:
        floor(name)  # ValueError names an unplaced module


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_only(name):
    rank, unit = floor(name)
    bad = []
    for target in sorted(GRAPH[name]):
        t_rank, t_unit = floor(target)
        if (name, target) in KNOWN or t_unit == unit:
            continue
        if t_rank > rank or (t_rank == rank and rank >= 0):
            bad.append(target)
    assert not bad, f"{name} ({unit}) imports a higher or sibling floor: {bad}"


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module graph: all of size one
    (a package's ``__init__`` re-exporting its own modules is not a cycle between modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []

    def edges(v):
        # a package's own submodules re-exported by its __init__ are not a back edge
        return [w for w in GRAPH[v] if not w.startswith(v + ".")]

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges(v):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_function_level_imports():
    # the run's figures come from the report through a hook, not an import
    assert "crfm_bench.engine.run" in GRAPH["crfm_bench.workflow"]
    assert "crfm_bench.cluster" in GRAPH["crfm_bench.engine.run"]  # inside a method
    assert not any(t.startswith("crfm_bench.report") for t in GRAPH["crfm_bench.engine.evaluate"])
