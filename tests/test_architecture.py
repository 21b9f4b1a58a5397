"""The layering rules of docs/design.md, read from the source (every import, including those
inside functions): the module import graph has no cycle; passes, analysis, precision and
rounding tools never reach the build driver or the CLI; nothing installed imports the test
fixtures."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: packages that the driver and the CLI sit on top of, never the other way round
BELOW_DRIVER = ("ir", "target", "pipeline", "calib", "quant", "passes", "analysis", "precision", "rounding",
                "formats", "lowering", "codegen", "rewrite")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "passes":  # installed as qcompiler.passes
        parts = ["qcompiler", "passes"] + parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    files = list((ROOT / "qcompiler").rglob("*.py")) + list((ROOT / "passes").glob("*.py"))
    return {_module_name(p): p for p in files}


def _imports(mod: str, path: Path, known: dict) -> set:
    """Every module `mod` imports, resolved to the deepest module of `known` (or kept as
    written when it is not ours)."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            resolved = name
            while resolved and resolved not in known:
                resolved = resolved.rpartition(".")[0]
            found.add(resolved or name)
    found.discard(mod)
    return found


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    known = _modules()
    g = nx.DiGraph()
    for mod, path in known.items():
        g.add_node(mod)
        for target in _imports(mod, path, known):
            g.add_edge(mod, target)
    return g


def test_the_scan_sees_function_level_imports(graph):
    # the driver imports the accuracy preparation inside build(): the scan must see it
    assert graph.has_edge("qcompiler.driver.build", "qcompiler.driver.prepare")
    assert graph.has_edge("qcompiler.pipeline.registry", "qcompiler.passes")


def test_module_import_graph_has_no_cycle(graph):
    ours = graph.subgraph([n for n in graph if n.startswith("qcompiler")])
    cycles = list(nx.simple_cycles(ours))
    assert not cycles, f"import cycles: {sorted(cycles, key=len)[:5]}"


@pytest.mark.parametrize("package", BELOW_DRIVER)
def test_lower_layers_never_import_the_driver_or_the_cli(graph, package):
    prefix = f"qcompiler.{package}"
    bad = [(a, b) for a, b in graph.edges if (a == prefix or a.startswith(prefix + "."))
           and (b.startswith("qcompiler.driver") or b.startswith("qcompiler.cli"))]
    assert not bad, f"{package} reaches the driver/CLI: {bad}"


def test_only_the_cli_and_the_entry_points_import_the_cli(graph):
    bad = [(a, b) for a, b in graph.edges if b.startswith("qcompiler.cli")
           and not (a.startswith("qcompiler.cli") or a == "qcompiler.__main__")]
    assert not bad, bad


def test_installed_package_never_imports_test_fixtures(graph):
    bad = [(a, b) for a, b in graph.edges if b.split(".")[0] in ("fixtures", "tests", "conftest")]
    assert not bad, bad


def test_every_package_is_in_the_wheel():
    """pyproject lists packages by hand (passes/ and targets/ are mapped): a new subpackage
    missing there installs without its files."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p) for p in (ROOT / "qcompiler").rglob("__init__.py")} | {"qcompiler.passes"}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
