"""The package's import graph: no cycles, and dependencies pointing down the layers
(models <- convert/param/objectives <- optimize <- sweep/analysis <- report <- cli).

Every import counts, including those inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import jaxvis

PACKAGE = Path(jaxvis.__file__).parent

# (importer prefix, forbidden imported prefixes): what each layer must not know about
LAYERS = [
    ("jaxvis.models", ("jaxvis.convert", "jaxvis.param", "jaxvis.objectives", "jaxvis.optimize",
                       "jaxvis.sweep", "jaxvis.analysis", "jaxvis.io.report", "jaxvis.weights", "jaxvis.cli")),
    ("jaxvis.convert", ("jaxvis.optimize", "jaxvis.sweep", "jaxvis.analysis", "jaxvis.io.report",
                        "jaxvis.weights", "jaxvis.cli")),
    ("jaxvis.param", ("jaxvis.optimize", "jaxvis.sweep", "jaxvis.analysis", "jaxvis.io.report", "jaxvis.cli")),
    ("jaxvis.objectives", ("jaxvis.optimize", "jaxvis.sweep", "jaxvis.analysis", "jaxvis.io.report", "jaxvis.cli")),
    ("jaxvis.optimize", ("jaxvis.sweep", "jaxvis.analysis", "jaxvis.io.report", "jaxvis.cli")),
    ("jaxvis.sweep", ("jaxvis.analysis", "jaxvis.io.report", "jaxvis.cli")),
    ("jaxvis.analysis", ("jaxvis.io.report", "jaxvis.sweep", "jaxvis.cli")),
    ("jaxvis.io", ("jaxvis.cli",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from jaxvis.analysis import metrics` imports the module jaxvis.analysis.metrics
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("jaxvis") and target != name and target != "jaxvis":
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    edges = graph()
    assert "jaxvis.optimize.loop" in edges["jaxvis.sweep"]  # a real edge is found
    assert "jaxvis.io.results" in edges["jaxvis.sweep"]


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, f"import cycles: {found}"


def test_dependencies_point_down():
    wrong = []
    for name, targets in graph().items():
        for prefix, forbidden in LAYERS:
            if name == prefix or name.startswith(prefix + "."):
                wrong += [f"{name} -> {t}" for t in targets if t.startswith(forbidden)]
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
