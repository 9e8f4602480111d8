"""dalib uses only the public APIs of torch, Lightning and the other libraries it builds on.

A private name (``_name``) that dalib reads must be one dalib defines itself; otherwise it is
another library's internal, which may change or vanish in any release. The check walks the
syntax tree of every module in the package:

- ``obj._name`` and ``getattr(obj, "_name")``, where ``_name`` is neither defined in the same
  module (a function, class, method, name or an assigned ``x._name = ...`` attribute) nor at the
  top level of another dalib module: ``self._state`` of dalib's own classes passes,
  ``self._trainer`` inherited from Lightning does not;
- ``import torch._x``, ``from pytorch_lightning.x._y import z``, ``from torch.x import _z``:
  imports of private modules or names of other packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "dalib"

#: (module path relative to the repository, private name) → why it is unavoidable.
#: Keep this short: every entry is a dependency on another library's internals.
ALLOWED: dict[tuple[str, str], str] = {}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def defined_names(tree: ast.Module, top_level: bool = False) -> set[str]:
    """The private names a module defines: functions, classes, names, arguments and attributes
    it assigns (``x._name = ...``); with ``top_level``, only what others can import from it."""
    nodes = tree.body if top_level else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and top_level:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {name for name in names if is_private(name)}


def private_uses(tree: ast.Module, own: set[str]) -> Iterator[tuple[int, str, str]]:
    """``(line, name, what)`` for each use of another package's private name or module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr) and node.attr not in own:
            yield node.lineno, node.attr, "attribute"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
            and node.args[1].value not in own
        ):
            yield node.lineno, node.args[1].value, f"{node.func.id}()"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("dalib") and any(
                    is_private(part) for part in alias.name.split(".")
                ):
                    yield node.lineno, alias.name, "private module"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("dalib"):
                continue
            if any(is_private(part) for part in node.module.split(".")):
                yield node.lineno, node.module, "private module"
            for alias in node.names:
                if is_private(alias.name):
                    yield node.lineno, f"{node.module}.{alias.name}", "private name"


def violations(trees: dict[Path, ast.Module]) -> list[str]:
    importable = set().union(*(defined_names(tree, top_level=True) for tree in trees.values()))
    found = []
    for path, tree in trees.items():
        where = str(path.relative_to(REPO))
        for line, name, what in private_uses(tree, importable | defined_names(tree)):
            if (where, name) not in ALLOWED:
                found.append(f"{where}:{line}: {what} {name}")
    return found


def parse(paths: list[Path]) -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in paths}


def test_the_package_uses_no_private_api_of_another_library():
    found = violations(parse(modules()))
    assert not found, "private APIs of other libraries:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("self._trainer.fit_loop", ["attribute _trainer"]),
        ("optimizer._on_before_step()", ["attribute _on_before_step"]),
        ("getattr(cli, '_instantiate_trainer')", ["getattr() _instantiate_trainer"]),
        ("from torch.distributed._functional_collectives import f", ["private module"]),
        ("import torch._dynamo", ["private module torch._dynamo"]),
        ("from torch.utils import _pytree", ["private name torch.utils._pytree"]),
        ("self._mine = 1\nself._mine += 1\ndef _helper(): pass\n_helper()", []),
        ("from dalib._internal import thing\nobj.__class__", []),
    ],
)
def test_the_check_tells_other_libraries_internals_from_dalibs_own(tmp_path, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source)
    tree = ast.parse(source)
    found = [f"{what} {name}" for _, name, what in private_uses(tree, defined_names(tree))]
    assert all(any(e in f for f in found) for e in expected) and len(found) == len(expected)
