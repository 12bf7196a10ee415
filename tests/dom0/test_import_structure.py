"""The broker's modules import each other without cycles (issue 19: the
backend interface and the qubesadmin implementation used to import each
other), counting lazy imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

DOM0 = Path(__file__).resolve().parents[2] / "dom0"
PREFIX = "whonix_open.dom0."


def _module(path: Path) -> str:
    return PREFIX + ".".join(path.relative_to(DOM0).with_suffix("").parts).removesuffix(
        ".__init__")


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in DOM0.rglob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps.update(n for n in names if n.startswith(PREFIX))
        graph[_module(path)] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node):], node])
            return
        if node in done:
            return
        for dep in sorted(graph[node]):
            visit(dep, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


def test_no_import_cycles_in_the_broker():
    graph = import_graph()
    assert "whonix_open.dom0.backend" in graph["whonix_open.dom0.qubesadmin_backend"]
    assert cycles(graph) == []
