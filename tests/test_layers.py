"""The package's import graph: layers import only the layers below them, and no
module imports itself back through others (no circle).

Read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` of a fastort module counts, inside functions too; only
``if TYPE_CHECKING:`` blocks are left out (annotations, not imports at run time).
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Optional, Set

import pytest

import fastort

#: The source tree when the tests run from a checkout, else the installed package.
_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "fastort")
PACKAGE_DIR = _SOURCE if os.path.isdir(_SOURCE) else os.path.dirname(os.path.abspath(fastort.__file__))

#: The layers, lowest first. A module belongs to the first entry that is its
#: name or a package above it; it may import its own layer and those before it.
#: The facade (``fastort`` itself and ``fastort.__main__``) sits on top.
LAYERS: List[List[str]] = [
    ["fastort._core", "fastort._version", "fastort._format"],  # native module, leaf helpers
    ["fastort.errors"],
    ["fastort.runtime"],
    ["fastort.engine"],
    ["fastort.bench"],
    ["fastort.prepare"],
    ["fastort.tune", "fastort.serve", "fastort.ray"],  # the new rooms (issue #10), each a subpackage
    ["fastort.cli"],
    ["fastort", "fastort.__main__"],
]


def _modules() -> Dict[str, str]:
    """Module name -> source path, for every .py file of the package and every
    native module's stub (.pyi without a .py: it imports nothing of fastort)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            stub = name.endswith(".pyi") and name[:-1] not in files
            if not name.endswith(".py") and not stub:
                continue
            rel = os.path.relpath(os.path.join(folder, name), PACKAGE_DIR).rsplit(".", 1)[0].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            found[".".join(["fastort"] + rel)] = os.path.join(folder, name)
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _resolve(name: str) -> Optional[str]:
    """The fastort module ``name`` is, or is in (an attribute of a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> Set[str]:
    """The fastort modules ``module`` imports."""
    path = MODULES[module]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out: Set[str] = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        else:
            continue
        for name in names:
            if name == "fastort" or name.startswith("fastort."):
                target = _resolve(name)
                if target is not None and target != module:
                    out.add(target)
    return out


def layer_of(module: str) -> int:
    best, where = -1, -1
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, where = len(prefix), index
    assert where >= 0, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return where


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_package_is_found():
    for name in ("fastort.errors", "fastort.runtime.library", "fastort.engine.engine", "fastort.engine.manifest",
                 "fastort.prepare.pipeline", "fastort.cli.dispatch"):
        assert name in MODULES
    assert "fastort.engine.manifest" in GRAPH["fastort.engine.engine"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_downward_only(module):
    mine = layer_of(module)
    upward = sorted(t for t in GRAPH[module] if layer_of(t) > mine)
    assert not upward, (f"{module} (layer {LAYERS[mine]}) imports from higher layers: "
                        + ", ".join(f"{t} ({LAYERS[layer_of(t)]})" for t in upward))


def test_no_import_circle():
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_checker_sees_what_it_must():
    """The checker itself: an upward import inside a function counts, one under
    TYPE_CHECKING does not, and ``from .. import x`` resolves."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..prepare import x\n"
                     "def f():\n    from ..cli import main\n")
    seen = [n for n in _walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [n.module for n in seen] == ["typing", "cli"]
    assert _resolve("fastort.engine.engine.Engine") == "fastort.engine.engine"
