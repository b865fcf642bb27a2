"""Issue 15 G: the tool's modules import only downward: no import cycle among ``mhsa_patch`` modules.

The graph is read from the sources with ``ast`` (nothing imported): every ``import`` and ``from ... import``, at
module level or inside a function (a deferred import still ties the two modules together), relative ones resolved.
``from package import name`` counts as an import of ``package.name`` where that is a module. A package's
``__init__`` is not counted as imported by its submodules (Python runs it first, but it is not a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> dict[str, Path]:
    """Every module of the tool by dotted name (the layers' folder ``patches/`` ships as ``mhsa_patch.patches``)."""
    found = {}
    for base, prefix in ((ROOT / "mhsa_patch", "mhsa_patch"), (ROOT / "patches", "mhsa_patch.patches")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [source] + [f"{source}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # ``import a.b.c`` of a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_imports_it_must():
    g = import_graph()
    assert "mhsa_patch.patching.target" in g["mhsa_patch.patching.discover"]
    assert "mhsa_patch.child.compat" in g["mhsa_patch.child.probe"]  # a deferred import inside a function
    assert "mhsa_patch.patches" in g["mhsa_patch.patching.engine"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_among_the_tools_modules():
    assert cycles(import_graph()) == []
