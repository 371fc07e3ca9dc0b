"""The house's layers, read from the source: every import (module level or inside a function) between
the project's files. Run time (pipelines/) imports nothing from compile time (optimizers/) or
measurement (metrics/); compile time never imports measurement; no file imports itself in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("pipelines", "optimizers", "metrics")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found["cli"] = ROOT / "cli.py"
    return found


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports. `from pkg import sub` counts as pkg.sub when sub is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a module, or an attribute's module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(name: str) -> str:
    return name.split(".")[0]


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "pipelines.artifact" in graph["pipelines"]  # load() imports it lazily
    assert "optimizers.stages" in graph["optimizers.live"] and "pipelines.paths" in graph["pipelines.cache"]
    assert len(graph) > 40


def test_run_time_imports_neither_compile_time_nor_measurement():
    bad = {(src, dst) for src, targets in import_graph().items() if layer(src) == "pipelines"
           for dst in targets if layer(dst) in ("optimizers", "metrics", "cli")}
    assert not bad, f"pipelines/ must import only pipelines/: {sorted(bad)}"


def test_compile_time_does_not_import_measurement():
    bad = {(src, dst) for src, targets in import_graph().items() if layer(src) == "optimizers"
           for dst in targets if layer(dst) in ("metrics", "cli")}
    assert not bad, sorted(bad)


def test_no_import_cycles_between_files_or_packages():
    graph = import_graph()
    assert cycles(graph) == []
    packages = {}
    for src, targets in graph.items():
        packages.setdefault(layer(src), set()).update(layer(t) for t in targets if layer(t) != layer(src))
    assert cycles(packages) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_production_code_catches_tierwise_errors_from_the_package_it_imports():
    """`from pipelines import BudgetExceeded` failed: the classes lived only in pipelines.errors."""
    import pipelines
    from pipelines import errors

    named = {name for name, value in vars(errors).items() if isinstance(value, type)
             and issubclass(value, errors.TierwiseError)}
    assert named <= set(pipelines.__all__) and all(getattr(pipelines, n) is getattr(errors, n) for n in named)
    assert len(named) >= 10
