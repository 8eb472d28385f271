"""The package's import graph: no circles, and weights/ as one downward line (docs/architecture.md).

Read from the source with `ast`, so a circle hidden behind a function-level import counts as much as one at
the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mma"

# weights/, lowest first: each module may import only those before it.
WEIGHTS_LINE = ("checkpoint", "loading", "hub", "registry", "loaded", "cache")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, *, top_level_only: bool) -> set[str]:
    """The mma modules `name` imports (a `from package import module` counts as the module itself)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return {target for target in found if target in MODULES and target != name}


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle in the graph, as the modules along it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_no_import_circle_between_modules():
    # A package's __init__ re-exports what lies below it; an import of a sibling through the package is an
    # edge to that sibling, so packages themselves are left out of the graph.
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    edges = {
        name: imports_of(name, top_level_only=True) - packages for name in MODULES if name not in packages
    }
    assert find_circle(edges) is None


def test_weights_is_one_downward_line():
    for index, short in enumerate(WEIGHTS_LINE):
        name = f"mma.weights.{short}"
        above = {f"mma.weights.{later}" for later in WEIGHTS_LINE[index:]} - {name}
        upward = imports_of(name, top_level_only=False) & above
        assert not upward, f"{name} imports {sorted(upward)}, which lie above it"


def test_every_weights_module_is_placed_on_the_line():
    on_disk = {path.stem for path in (PACKAGE / "weights").glob("*.py")} - {"__init__", "convert"}
    assert on_disk == set(WEIGHTS_LINE)


@pytest.mark.parametrize("short", WEIGHTS_LINE)
def test_weights_modules_import_nothing_lazily_from_the_package(short):
    """A function-level import of a weights module is how circles hide: none are left."""
    name = f"mma.weights.{short}"
    lazy = imports_of(name, top_level_only=False) - imports_of(name, top_level_only=True)
    assert not {target for target in lazy if target.startswith("mma.weights")}
