"""The shape of the house: which package may import which, read from the source with `ast`.

- The product's packages (what `pyproject.toml` installs) import one another without a cycle, and
  so do broker_auth's parts (its subpackages and top-level modules);
- the product never imports the harness (`testing`) or the suite (`tests`, `bench`);
- only stack/ imports stack/ (it runs the product locally; nothing else depends on it);
- broker_auth does not import the wallet CLI (the tryte helpers are broker_auth/ledger's).

Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = (
    "broker_auth",
    "broker_metrics",
    "ingest",
    "simulator",
    "stack",
    "deploy",
    "devnet",
    "wallet",
)
HARNESS = ("testing", "tests", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    """Every module of the product and the harness: dotted name -> file."""
    found: dict[str, Path] = {}
    for top in (*PRODUCT, *HARNESS):
        for path in sorted((REPO / top).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path) -> Iterator[str]:
    """The modules `name` imports (absolute names; `from a import b` is `a.b` when b is one)."""
    modules = _modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in modules else base


def _graph(unit_of: dict[str, str]) -> dict[str, set[str]]:
    """Edges between units (a unit per module name in `unit_of`), self-edges left out."""
    graph: dict[str, set[str]] = {unit: set() for unit in unit_of.values()}
    for name, unit in unit_of.items():
        for target in _imports(name, _modules()[name]):
            other = _unit(target, unit_of)
            if other is not None and other != unit:
                graph[unit].add(other)
    return graph


def _unit(target: str, unit_of: dict[str, str]) -> str | None:
    while target:
        if target in unit_of:
            return unit_of[target]
        target = target.rpartition(".")[0]
    return None


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for other in sorted(graph[unit]):
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in on_stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == unit:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return found


def _product_modules() -> dict[str, Path]:
    return {n: p for n, p in _modules().items() if n.split(".")[0] in PRODUCT}


def test_the_product_packages_import_one_another_without_a_cycle() -> None:
    unit_of = {name: name.split(".")[0] for name in _product_modules()}
    graph = _graph(unit_of)
    # The reading sees imports at all (a broken parser would pass every check below).
    assert {"deploy", "broker_auth"} <= graph["stack"] and "broker_auth" in graph["wallet"]
    assert _cycles(graph) == set()
    # A cycle is found when there is one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def test_broker_auth_parts_import_one_another_without_a_cycle() -> None:
    """broker_auth's subpackages (api, accounts, catalog, billing, ledger, access, broker, infra,
    portal) and its top-level modules (schemas, service, settings, errors, ...), each one part.
    (Before issue 16 seven parts formed one knot: the domain built its answers with the HTTP
    layer's schemas, and the broker's reconciler read grants that write to the broker.)"""
    unit_of = {
        name: name.split(".")[1] for name in _product_modules() if name.startswith("broker_auth.")
    }
    graph = _graph(unit_of)
    assert {"schemas", "infra"} <= graph["billing"] and "billing" in graph["api"]
    assert _cycles(graph) == set()


def _imports_of(prefixes: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(product module, what it imports) for every import of a module under `prefixes`."""
    for name, path in _product_modules().items():
        for target in _imports(name, path):
            if target.split(".")[0] in prefixes:
                yield name, target


def test_the_product_never_imports_the_harness_or_the_suite() -> None:
    assert list(_imports_of(HARNESS)) == []


def test_only_stack_imports_stack() -> None:
    outside = [(n, t) for n, t in _imports_of(("stack",)) if n.split(".")[0] != "stack"]
    assert outside == []


def test_broker_auth_does_not_import_the_wallet_cli() -> None:
    found = [(n, t) for n, t in _imports_of(("wallet",)) if n.split(".")[0] == "broker_auth"]
    assert found == []


def test_the_harness_is_not_installed_or_shipped() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    installed = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in installed} == set(PRODUCT)
    dockerfile = (REPO / "Dockerfile").read_text()
    for harness in HARNESS:
        assert f"COPY {harness} " not in dockerfile
