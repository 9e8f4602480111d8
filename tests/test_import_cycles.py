"""No import cycles between dalib's modules: data flows one way, commands → module → records.

The graph is read from the syntax tree of every module: module-level and function-level
imports both (a deferred import still ties two modules together), not those under
``if TYPE_CHECKING:`` (never executed). ``from dalib.x import y`` is an edge to ``dalib.x.y``
when that is a module, else to ``dalib.x``. A package's ``__init__`` importing its own
submodules is an edge like any other; a submodule's implicit import of its parent package is not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "dalib"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_blocks(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return skipped


def imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The dalib modules that module ``name`` (at ``path``) imports."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = type_checking_blocks(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imports(path, name, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_dalib_has_no_import_cycle():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles (modules that import each other):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in found
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a.py": "from pkg import b", "b.py": "def f():\n    import pkg.a"}, [["pkg.a", "pkg.b"]]),
        ({"a.py": "from pkg.b import x", "b.py": "from . import a"}, [["pkg.a", "pkg.b"]]),
        (
            {
                "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b",
                "b.py": "import pkg.a",
            },
            [],
        ),
        ({"a.py": "import pkg.b", "b.py": "import pkg.c", "c.py": "x = 1"}, []),
    ],
)
def test_the_walk_finds_deferred_and_relative_cycles_only(tmp_path, files, expected):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    assert cycles(import_graph(root)) == expected
