"""The layers of the code, read from its imports (``ast``: module level, inside functions, under
TYPE_CHECKING, and ``importlib.import_module("...")`` with a literal name).

- The core (``canalflow/``) imports no component; ``canalflow/cli.py`` wires the subcommands and
  may import a component's ``register`` lazily, inside a function, never at module level.
- No product package imports ``testbed`` (test servers, demo, simulated devices, load generator),
  so a gateway install need not carry it; and the product still runs without it.
- ``billing/`` has no import cycle.

The product's packages are pyproject's package list, so a new package is checked without editing this file.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "canalflow"
TESTBED = "testbed"
ENTRY_POINT = ROOT / "canalflow" / "cli.py"


def _packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]


PACKAGES = _packages()
PRODUCT = [p for p in PACKAGES if p != TESTBED]
COMPONENTS = {p for p in PACKAGES if p != CORE}  # testbed included: the core imports it no more than any other


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    target: str  # dotted module name, relative imports resolved
    lazy: bool  # inside a function

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "at module level"
        return f"{self.path.relative_to(ROOT)}:{self.line}: imports {self.target} ({where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _literal_import(node: ast.Call) -> str | None:
    """``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")`` with a literal name."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        return value if isinstance(value, str) else None
    return None


def imports_of(path: Path) -> Iterator[Import]:
    """Every import of a file; ``from X import y`` yields X and X.y (y may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node: ast.AST, lazy: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from (Import(path, child.lineno, alias.name, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(path, child)
                yield Import(path, child.lineno, base, lazy)
                yield from (Import(path, child.lineno, f"{base}.{a.name}", lazy) for a in child.names if a.name != "*")
            elif isinstance(child, ast.Call) and (target := _literal_import(child)):
                yield Import(path, child.lineno, target, lazy)
            yield from walk(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from walk(tree, False)


def files_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_product_packages_are_found() -> None:
    # guards the other tests against passing on nothing (a renamed pyproject key, an empty walk)
    assert CORE in PRODUCT and TESTBED in PACKAGES and {"edge", "ingest", "billing"} <= COMPONENTS
    assert all(files_of(p) for p in PACKAGES), "every package of pyproject has .py files"


def test_the_walk_sees_every_kind_of_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "mod.py"
    source.write_text(textwrap.dedent("""
        import importlib
        from typing import TYPE_CHECKING
        from . import sibling
        if TYPE_CHECKING:
            from billing.run import Bill
        class Holder:
            import edge.agent
        def later():
            from ..other import thing
            return importlib.import_module("testbed.demo"), lambda: __import__("dashboards")
    """))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    seen = {(i.target, i.lazy) for i in imports_of(source)}
    assert {("pkg", False), ("pkg.sibling", False), ("billing.run", False), ("edge.agent", False),
            ("other.thing", True), ("testbed.demo", True), ("dashboards", True)} <= seen


def test_the_core_imports_no_component() -> None:
    """canalflow/* imports none of edge, ingest, billing, dashboards, firmware_sim, testbed;
    cli.py only lazily, to wire each component's subcommands."""
    wrong = [
        str(i) for path in files_of(CORE) for i in imports_of(path)
        if i.top in COMPONENTS and not (path == ENTRY_POINT and i.lazy)
    ]
    assert not wrong, "the core must not depend on a component; move the code down into canalflow/ or up into " \
                      "the component:\n" + "\n".join(wrong)


def test_no_product_package_imports_the_testbed() -> None:
    wrong = [
        str(i) for package in PRODUCT for path in files_of(package) for i in imports_of(path)
        if i.top == TESTBED and not (path == ENTRY_POINT and i.lazy)
    ]
    assert not wrong, "testbed/ is for tests, the demo and benchmarks; the product must run without it:\n" + \
                      "\n".join(wrong)


def import_cycles(package: str) -> list[list[str]]:
    """The strongly connected groups of modules of ``package`` (Tarjan), each with more than one module."""
    modules = {module_name(path): path for path in files_of(package)}
    graph = {m: sorted({i.target for i in imports_of(p) if i.target in modules and i.target != m}) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while (top := stack.pop()) != module:
                group.append(top)
            group.append(module)
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from .a import x\n")
    (package / "c.py").write_text("import pkg.a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert import_cycles("pkg") == [["pkg.a", "pkg.b"]]


def test_billing_has_no_import_cycle() -> None:
    cycles = import_cycles("billing")
    assert not cycles, "modules of billing/ that import each other (imports must point down one way):\n" + \
                       "\n".join(" <-> ".join(group) for group in cycles)


# A Python that cannot import testbed, as on a gateway installed without it.
WITHOUT_TESTBED = textwrap.dedent("""
    import sys
    class NoTestbed:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "testbed":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoTestbed())
    from canalflow.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def run_without_testbed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_TESTBED, *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_the_product_runs_without_the_testbed() -> None:
    for args in (["--help"], ["edge", "run", "--help"], ["ingest", "run", "--help"], ["billing", "--help"]):
        done = run_without_testbed(*args)
        assert done.returncode == 0, f"canalflow {' '.join(args)} without testbed: {done.stderr}"
    assert "demo district (not installed)" in " ".join(run_without_testbed("--help").stdout.split())
    demo = run_without_testbed("demo")
    assert demo.returncode == 2
    assert "canalflow demo: not available in this build (testbed is not installed)" in demo.stderr
