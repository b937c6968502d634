"""The package layout's rules, checked on the source: where a module may live and what it may import.

A newcomer finds code by folder name only if the folders keep their roles, and a cycle kept alive by
an import inside a function is still a cycle (the order of first use decides whether it breaks), so
every import counts here, top-level or lazy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "airflow_provider_dicom"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

# Folders whose modules are Airflow-free: the engine and its model. Users and the CLI run them
# without an Airflow deployment, and they are what the benchmarks measure.
AIRFLOW_FREE = ("dicom", "sources", "export", "filters", "healthcare", "model", "cli")
AIRFLOW_FREE_UTILS = ("utils.redact", "utils.deadlines", "utils.atomic_write", "utils.errors", "utils.text")
# Role folders hold only their role: one kind of Airflow object each (by its base class, imported
# lazily because these are Airflow's).
ROLE_BASES = {
    "hooks": ("airflow.providers.common.compat.sdk", "BaseHook"),
    "operators": ("airflow.providers.common.compat.sdk", "BaseOperator"),
    "sensors": ("airflow.providers.common.compat.sdk", "BaseSensorOperator"),
    "triggers": ("airflow.triggers.base", "BaseTrigger"),
    "links": ("airflow.providers.common.compat.sdk", "BaseOperatorLink"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours this file imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.startswith(PACKAGE + ".") and name != PACKAGE:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = _imports(path, modules) - {name}
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: parents are not edges of interest
        # unless they hold code, and ours are empty, so drop them.
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# Debts being paid: each entry names work in progress and goes when it lands. A new cycle, stray or
# engine -> role import fails the tests below.
KNOWN_CYCLES: list[list[str]] = []
KNOWN_ENGINE_TO_ROLE: dict[str, list[str]] = {}
KNOWN_STRAYS: list[str] = []


def test_no_import_cycles_even_through_lazy_imports():
    assert _cycles(_graph()) == KNOWN_CYCLES


def test_the_cycle_finder_sees_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def _airflow_imports(path: Path) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] == "airflow"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "airflow":
            bad.append(node.module)
    return bad


@pytest.mark.parametrize("folder", AIRFLOW_FREE)
def test_engine_folders_import_no_airflow(folder):
    offenders = {
        name: _airflow_imports(path)
        for name, path in _modules().items()
        if name.startswith(f"{PACKAGE}.{folder}.") and _airflow_imports(path)
    }
    assert offenders == {}


def test_engine_imports_no_role_folder():
    """The engine is used by the CLI without Airflow: it may not reach into hooks or operators."""
    graph = _graph()
    roles = tuple(f"{PACKAGE}.{r}." for r in (*ROLE_BASES, "utils.assets", "utils.lineage"))
    offenders = {
        name: sorted(d for d in deps if d.startswith(roles))
        for name, deps in graph.items()
        if name.startswith(tuple(f"{PACKAGE}.{f}." for f in AIRFLOW_FREE))
        and any(d.startswith(roles) for d in deps)
    }
    assert offenders == KNOWN_ENGINE_TO_ROLE


@pytest.mark.parametrize("name", AIRFLOW_FREE_UTILS)
def test_engine_utils_import_no_airflow(name):
    assert _airflow_imports(_modules()[f"{PACKAGE}.{name}"]) == []


@pytest.mark.parametrize("role", sorted(ROLE_BASES))
def test_role_folders_hold_only_their_role(role):
    """Every public class defined in hooks/ is a hook, in operators/ an operator (or a task group
    building operators), and so on: helpers and data models live elsewhere."""
    import importlib
    import inspect

    base_module, base_name = ROLE_BASES[role]
    base = getattr(importlib.import_module(base_module), base_name)
    allowed: tuple[type, ...] = (base,)
    if role == "operators":
        from airflow.providers.common.compat.sdk import TaskGroup

        allowed += (TaskGroup,)
    strays = []
    for name in _modules():
        if not name.startswith(f"{PACKAGE}.{role}."):
            continue
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or cls_name.startswith("_"):
                continue
            if not issubclass(cls, allowed) and f"{name}.{cls_name}" not in KNOWN_STRAYS:
                strays.append(f"{name}.{cls_name}")
    assert strays == []


def test_no_module_at_the_package_root_but_the_entry_points():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert top == ["__init__.py", "get_provider_info.py"]


def test_stand_ins_are_not_in_the_runtime_package():
    assert not (ROOT / "emulator").exists() and not (ROOT / "testing").exists()
