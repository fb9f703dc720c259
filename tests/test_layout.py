"""The package's layout: no import cycles between modules of bus_runtime, one rule of direction.

Imports are read with `ast` (at module level, inside functions and under TYPE_CHECKING
alike: a cycle hidden in a lazy import is still a cycle of the design). An edge goes to the
module named, or to the submodule when `from package import name` names one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bus_runtime"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the bus_runtime modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_relative_lazy_and_type_checking_imports() -> None:
    graph = import_graph()
    # a lazy import inside a function (the start-up check)
    assert "bus_runtime.reconcile.planner" in graph["bus_runtime.bus.nats_bus"]
    # a relative import two levels up
    assert "bus_runtime.topology.model" in graph["bus_runtime.topology.checks.base"]


def test_no_import_cycle_between_modules_of_bus_runtime() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# Which subpackage may import which: the model knows nothing of servers; the server
# client knows nothing of plans or buses; nothing but the CLI imports the CLI.
ALLOWED = {
    "topology": {"topology"},
    "jetstream": {"jetstream", "topology"},
    "reconcile": {"reconcile", "jetstream", "topology"},
    "bus": {"bus", "jetstream", "topology", "reconcile", "security"},
    "review": {"review", "jetstream", "topology", "reconcile"},
    "cli": {"cli", "bus", "jetstream", "topology", "reconcile", "review", "security"},
    "security": {"security", "topology", "jetstream"},
    "contrib": {"contrib", "bus"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_subpackages_import_only_downwards(package: str) -> None:
    graph = import_graph()
    wrong = []
    for module, targets in graph.items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] != package:
            continue
        for target in targets:
            tparts = target.split(".")
            if len(tparts) >= 2 and tparts[1] in ALLOWED and tparts[1] not in ALLOWED[package]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))
