"""The import rules of issue 19, read from the sources with ``ast`` (nothing is imported): no import
circle among our modules; serve/ reaches handlers/ only from its composition root and the
archiver's built-in check; serve/config.py, the ground floor, imports nothing of serve/ but its
errors. Imports under ``if TYPE_CHECKING:`` run only for the type checker: no circle counts them.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.fixtures.server import REPO

PACKAGES = ("serve", "handlers", "deploy", "bench")
HANDLERS_FROM_SERVE = {"serve.bootstrap", "serve.archive.archiver"}
Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")
}


def _type_checking(node: ast.If) -> bool:
    return ast.unparse(node.test).split(".")[-1] == "TYPE_CHECKING"


def _imports(nodes: Iterable[ast.AST], typing_only: bool = False) -> Iterator[tuple[str, bool]]:
    """Every module named by an import among ``nodes`` and in them (functions too), and whether
    the import is under ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from ((alias.name, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:  # ``from serve.dialect import daemon`` names a module
                submodule = f"{node.module}.{alias.name}"
                yield (submodule if submodule in MODULES else node.module), typing_only
        elif isinstance(node, ast.If) and _type_checking(node):
            yield from _imports(node.body, True)
            yield from _imports(node.orelse, typing_only)
        else:
            yield from _imports(ast.iter_child_nodes(node), typing_only)


@functools.cache
def import_graph(*, with_typing: bool) -> Graph:
    """Module → the modules of ours it imports."""
    graph: Graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {
            target
            for target, typing_only in _imports(tree.body)
            if target in MODULES and target != name and (with_typing or not typing_only)
        }
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_circles_are_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    found = circles(import_graph(with_typing=False))
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_serve_imports_handlers_only_from_its_composition_root() -> None:
    graph = import_graph(with_typing=True)
    reaching = {
        module
        for module, targets in graph.items()
        if module.startswith("serve") and any(t.split(".")[0] == "handlers" for t in targets)
    }
    assert reaching <= HANDLERS_FROM_SERVE, sorted(reaching - HANDLERS_FROM_SERVE)


def test_config_imports_nothing_of_serve_but_its_errors() -> None:
    imported = import_graph(with_typing=True)["serve.config"]
    assert {t for t in imported if t.split(".")[0] == "serve"} <= {"serve.errors"}, imported
