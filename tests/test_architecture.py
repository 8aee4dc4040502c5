"""The package's import graph: no cycles, and every import pointing down the floors of
CONTRIBUTING.md ("Layers"), lazy ones included (an import inside a function is still a
dependency); reading, rendering and reporting a results file load no optimiser and no network code;
no function longer than 60 lines."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jaxvis

PACKAGE = Path(jaxvis.__file__).parent

# the floors, lowest first: a module may import its own floor and those below, nothing above
FLOORS = [
    ("jaxvis.errors",),
    ("jaxvis.io",),                          # file-system helpers, photographs, progress lines
    ("jaxvis.models",),
    ("jaxvis.convert", "jaxvis.weights"),
    ("jaxvis.param", "jaxvis.objectives"),   # pure
    ("jaxvis.data",),                        # photos, cached budgets and colour basis, the prior's training
    ("jaxvis.optimize",),
    ("jaxvis.store",),                       # SweepConfig, the HDF5 format, parts, resume, merge
    ("jaxvis.analysis",),                    # metrics, read-out, gratings, phase, shift
    ("jaxvis.run",),                         # sweep, analyze
    ("jaxvis.report",),                      # PNG, HTML, SVG, compare pages, console lines
    ("jaxvis.cli",),
]
# the modules that read a results file and show it; none may load optax or flax
READING = ("jaxvis.store.results", "jaxvis.report.render", "jaxvis.report.pages", "jaxvis.report.compare",
           "jaxvis.report.summary")
LONGEST = 60  # lines of one function, its decorators and docstring included
# functions still over LONGEST, to be split (CONTRIBUTING.md "Layers"); the list only shrinks
KNOWN_LONG: set[str] = set()


def floor(module: str) -> int | None:
    for level, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None

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
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                targets = [node.args[0].value]  # importlib.import_module("jaxvis....")
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


def test_every_module_has_a_floor():
    assert not [m for m in graph() if m != "jaxvis" and floor(m) is None]


def test_the_graph_is_read():
    edges = graph()
    assert "jaxvis.optimize.loop" in edges["jaxvis.run.sweep"]  # a real edge is found
    assert "jaxvis.store.results" in edges["jaxvis.run.sweep"]
    assert "jaxvis.io.images" in edges["jaxvis.data.prior"]  # an import inside a function


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, f"import cycles: {found}"


def test_dependencies_point_down():
    wrong = [f"{name} -> {t}" for name, targets in graph().items() if name != "jaxvis"
             for t in targets if floor(t) > floor(name)]
    assert not wrong, "imports against the floors:\n" + "\n".join(sorted(wrong))


def test_an_upward_edge_would_be_found():
    assert floor("jaxvis.store.config") > floor("jaxvis.optimize.config")
    assert floor("jaxvis.analysis.metrics") > floor("jaxvis.store.results") > floor("jaxvis.data.budget")


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_reading_loads_no_optimiser(tmp_path):
    """Read, render, report and compare a results file in a fresh process: neither optax nor flax
    is imported (the optimiser and the networks are not needed to show what a sweep found)."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tests.helpers import make_results
        from jaxvis.store.results import read_results
        from jaxvis.report.render import render
        from jaxvis.report.pages import report
        from jaxvis.report.compare import compare, format_table
        from jaxvis.report.summary import layer_profiles
        out = Path({str(tmp_path)!r})
        path = make_results(out / "r.h5", {{"conv1_1": 3}})
        read_results(path)
        render(path, out / "png")
        report(path, out / "html")
        format_table(compare(path, path))
        layer_profiles(path)
        loaded = [m for m in ("optax", "flax") if m in sys.modules]
        assert not loaded, loaded
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_long_functions():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                known = f"{path.relative_to(PACKAGE.parent)} {node.name}" in KNOWN_LONG
                if node.end_lineno - first + 1 > LONGEST and not known:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
                                f"({node.end_lineno - first + 1} lines)")
    assert not long, f"functions over {LONGEST} lines:\n" + "\n".join(sorted(long))


LONGEST_FILE = 400  # lines of one module, unless CONTRIBUTING.md ("File lengths") names it and why


def test_long_modules_are_the_ones_contributing_names():
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    listed = set(re.findall(r"^- `([a-z_/]+\.py)`: ", text.split("**File lengths.**")[1].split("\n\n")[1], re.M))
    long = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
            if len(path.read_text().splitlines()) > LONGEST_FILE}
    assert long == listed, f"over {LONGEST_FILE} lines but not in CONTRIBUTING.md: {sorted(long - listed)}; " \
                           f"listed but not that long: {sorted(listed - long)}"
