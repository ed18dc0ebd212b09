"""The package's layers import one way: agent ← transport ← fleet ← ui / exporter / cli.

Read from the source (every import, `TYPE_CHECKING` ones included), so a back-edge
fails here before anyone has to notice it in a diagram. Third-party frameworks stay in
their layer: Textual in ui/, asyncssh in transport/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qgadash"

# What each layer may import of the others (its own modules always).
ALLOWED: dict[str, set[str]] = {
    "agent": set(),
    "transport": {"agent"},
    "fleet": {"agent", "transport"},
    "sim": {"agent"},
    "ui": {"agent", "fleet"},
    "cli": {"agent", "fleet", "ui", "sim", "exporter"},
    "exporter": {"agent", "fleet"},
    "__main__": {"cli"},
    "__init__": set(),
}
# Back-edges being removed (each names its file); this list may only shrink.
KNOWN: set[str] = set()
FRAMEWORKS = {"textual": {"ui"}, "asyncssh": {"transport"}, "rich": {"ui", "cli"}}


def imports_of(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def layer_of(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 else path.stem


def back_edges(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        layer = layer_of(path, package)
        where = path.relative_to(package.parent)
        for name, line in imports_of(path):
            top, _, rest = name.partition(".")
            if top == "qgadash" and rest:
                target = rest.split(".")[0]
                if target != layer and target not in ALLOWED[layer]:
                    problems.append(f"{where}:{line}: {layer} imports {name}")
            elif top in FRAMEWORKS and layer not in FRAMEWORKS[top]:
                problems.append(f"{where}:{line}: {layer} imports {top}")
    return problems


def test_every_layer_is_known() -> None:
    layers = {layer_of(p) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_no_import_points_back_up_the_layers() -> None:
    found = back_edges()
    unknown = [p for p in found if _without_line(p) not in KNOWN]
    assert unknown == []


def test_the_known_back_edges_are_still_there_or_removed_from_the_list() -> None:
    """KNOWN only shrinks: an entry whose back-edge is gone must leave the list."""
    found = {_without_line(p) for p in back_edges()}
    assert found >= KNOWN, KNOWN - found


def _without_line(problem: str) -> str:
    where, _, what = problem.partition(": ")
    return f"{where.rsplit(':', 1)[0]}: {what}"


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_the_checker_sees_a_planted_back_edge(tmp_path: Path, framework: str) -> None:
    """The check itself can fail: a framework import planted in agent/ is reported."""
    package = tmp_path / "qgadash"
    (package / "agent").mkdir(parents=True)
    planted = package / "agent" / "planted.py"
    planted.write_text(f"import {framework}\nfrom qgadash.fleet import model\n")
    problems = back_edges(package)
    assert any(f"agent imports {framework}" in p for p in problems)
    assert any("agent imports qgadash.fleet" in p for p in problems)


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports (every import, lazy and TYPE_CHECKING
    ones included). `from pkg import sub` is an edge to the submodule `sub`, not to
    `pkg/__init__` (which any import of a submodule runs first anyway)."""
    modules = {
        ".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else known(node.module))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_modules_import_each_other_round_a_circle() -> None:
    """A circle (screens importing the app that builds them, even for typing) means
    neither side can be read or tested alone; screens ask the app with Messages."""
    assert cycles(module_graph()) == []


def test_the_circle_check_sees_a_planted_circle(tmp_path: Path) -> None:
    package = tmp_path / "qgadash"
    (package / "ui").mkdir(parents=True)
    (package / "ui" / "app.py").write_text("from qgadash.ui.screen import Screen\n")
    (package / "ui" / "screen.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from qgadash.ui import app\n"
    )
    assert cycles(module_graph(package)) == [["qgadash.ui.app", "qgadash.ui.screen"]]
