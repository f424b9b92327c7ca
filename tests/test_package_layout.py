"""The package's layering: dependencies point down (config and task constants at the
bottom), no import cycles, nothing imported from experiments/ or tests/, small modules.

Read from the source with `ast`, so the checks see imports inside functions too and
cost no JAX start-up.
"""

from __future__ import annotations

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 400


def _module_name(path: str) -> str:
    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return name.removesuffix(".__init__")


MODULES = {_module_name(p): p
           for p in glob.glob(os.path.join(ROOT, "mnist_plus", "**", "*.py"), recursive=True)}


def _imports(path: str, top_level: bool) -> set[str]:
    """Modules `path` imports: at import time only (`top_level`), or anywhere in it.
    `if TYPE_CHECKING:` blocks are skipped (annotations only)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    nodes = tree.body if top_level else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return found


def _graph(top_level: bool) -> dict[str, set[str]]:
    return {name: {m for m in _imports(path, top_level) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_modules_import_each_other_without_a_cycle():
    assert _cycles(_graph(top_level=True)) == []
    assert _cycles(_graph(top_level=False)) == []  # imports inside functions too


def test_config_and_task_constants_sit_at_the_bottom():
    graph = _graph(top_level=False)
    assert graph["mnist_plus.task"] == set()
    assert graph["mnist_plus.errors"] == set()
    assert graph["mnist_plus.config"] <= {"mnist_plus.errors", "mnist_plus.task"}


def test_no_module_imports_experiments_or_tests():
    offenders = {name: sorted(m for m in _imports(path, top_level=False)
                              if m.split(".")[0] in ("experiments", "tests"))
                 for name, path in MODULES.items()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_is_over_400_lines():
    sizes = {name: sum(1 for _ in open(path, encoding="utf-8")) for name, path in MODULES.items()}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


def test_the_checks_see_a_cycle_and_lazy_imports(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    path = tmp_path / "m.py"
    path.write_text("import os\n\ndef f():\n    from mnist_plus import task\n")
    assert "mnist_plus.task" in _imports(str(path), top_level=False)
    assert "mnist_plus.task" not in _imports(str(path), top_level=True)
