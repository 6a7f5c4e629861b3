"""The layout's rules, checked from the source: what each part of collector/ may import (no cycles,
I/O-free cores, sources apart), who may touch a metric family's insides, and the test tree's conventions.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.quick

TESTS = REPO / "tests"


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "fixtures" not in p.parts)


def _defines_tests(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            return True
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            return True
    return False


def test_every_test_module_defines_tests_and_helpers_are_named_otherwise() -> None:
    # A helper named test_* is collected by pytest (and its import side effects run twice when a test
    # module imports it under another name): shared code lives in helpers.py-style modules instead.
    modules = _test_modules()
    assert modules
    empty = [str(p.relative_to(REPO)) for p in modules if not _defines_tests(ast.parse(p.read_text()))]
    assert empty == [], f"test_* modules without tests (rename them as helpers): {empty}"


# --- What each part of collector/ may import ------------------------------------------------------
#
# The import graph is read from the source with `ast`, the way Python resolves it:
#   - `import a.b.c` and `from a.b.c import name` depend on the module `a.b.c`;
#   - `from a.b import c` depends on the module `a.b.c` when `c` is a submodule (Python loads it, it
#     does not need `a/b/__init__.py`'s names), else on the package `a.b` (a name its `__init__` defines);
#   - relative imports are resolved against the importing module's package;
#   - imports inside functions count (they run, only later);
#   - importing `a.b.c` also runs `a/b/__init__.py`; that is not an edge here (as in import-linter),
#     which is why a package's `__init__` stays light (`sources/logs/__init__.py` imports its source
#     on first use, so `collector replay` can import the pure `lines` module alone);
#   - imports under `if TYPE_CHECKING:` COUNT for cycles: they never run, but a type-only import is
#     still a dependency a reader follows and mypy checks (the issue's `Runtime` knot between app.py,
#     server.py and web/ is type-only). They do NOT count for the I/O-free rule below, which is about
#     what runs: a core may name an I/O type in an annotation.
#
# The rules:
#   1. No import cycle anywhere in collector/ (a strongly connected component of more than one module).
#   2. The I/O-free cores (`IO_FREE_CORES`), and every collector module they import at run time,
#      import none of `IO_MODULES`: they take data and an explicit `now` and return changes.
#   3. A source imports no other source nor the app layer; nothing imports the entry points.
#   4. Only collector/metrics.py touches a `Family`'s private fields; only the rules' hot loop writes
#      its `series` directly.
#   5. No module under tests/ imports from a `test_*` module: shared code lives in helper modules.

COLLECTOR = REPO / "collector"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module under `root` (the directory of `package`) by dotted name; a package is its `__init__`."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, bool]:
    """The modules (among `modules`) that module `name` imports, each mapped to True if type-only."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            type_only.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    found: dict[str, bool] = {}

    def add(target: str, node: ast.AST) -> None:
        if target in modules and target != name:
            only = id(node) in type_only
            found[target] = found.get(target, True) and only

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in modules else source, node)
    return found


@functools.cache
def import_graph(
    root: Path = COLLECTOR, package: str = "collector", *, type_only: bool = True
) -> dict[str, set[str]]:
    """Module -> the modules it imports (type-only imports included unless `type_only` is False).

    Cached (the tests only read it): the cores' tests share one parse of collector/.
    """
    modules = module_files(root, package)
    return {
        name: {t for t, only in imports_of(name, path, modules).items() if type_only or not only}
        for name, path in modules.items()
    }


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return sorted(out)


def _describe(cycles: list[list[str]], graph: dict[str, set[str]]) -> str:
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle: " + ", ".join(component))
        lines += [f"    {m} -> {', '.join(sorted(graph[m] & members))}" for m in component]
    return "\n".join(lines)


def _in_knot(module: str, knot: tuple[str, ...]) -> bool:
    """True when `module` is one of `knot`'s modules or inside one of its packages."""
    return any(module == k or module.startswith(k + ".") for k in knot)


def test_collector_has_no_import_cycle() -> None:
    graph = import_graph()
    cycles = import_cycles(graph)
    assert cycles == [], "import cycles in collector/ (import from the defining module):\n" + _describe(
        cycles, graph
    )


# What the layers may import. A source (`collector.sources.<name>`, a package or one module) uses the
# core modules (metrics, store, source, settings, logsetup, ...) and the helpers all sources share;
# it never imports another source (they meet only in the registry) nor the app layer that runs them.
_SHARED_BY_SOURCES = {"collector.sources", "collector.sources.http", "collector.sources.storage"}
_APP_LAYER = ("collector.app", "collector.server", "collector.web", "collector.status", "collector.replay")
# The entry points import everything and nothing imports them.
_ENTRY_POINTS = ("collector.__main__", "collector.cli", "collector.demo")


def _source_of(module: str) -> str | None:
    """`collector.sources.stripe` for any module of that source; None outside sources."""
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "sources" or ".".join(parts[:3]) in _SHARED_BY_SOURCES:
        return None
    return ".".join(parts[:3])


def test_a_source_imports_no_other_source_and_not_the_app_layer() -> None:
    graph = import_graph()
    wrong = [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        if (source := _source_of(module)) is not None
        for target in sorted(targets)
        if _source_of(target) not in (None, source) or _in_knot(target, _APP_LAYER + _ENTRY_POINTS)
    ]
    assert wrong == [], "sources meet in the registry and the app runs them:\n" + "\n".join(wrong)


def test_nothing_imports_the_entry_points() -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in sorted(import_graph().items())
        if not _in_knot(module, _ENTRY_POINTS)
        for target in sorted(targets)
        if _in_knot(target, _ENTRY_POINTS)
    ]
    assert wrong == [], "\n".join(wrong)


# The I/O-free cores: data in (and an explicit `now`), changes out; tested without servers or a store.
IO_FREE_CORES = {
    "collector.dora": "DORA maths over a deployment history",
    "collector.metrics": "metric families and their series (plain data)",
    "collector.exposition": "rendering the families as Prometheus text and OpenMetrics",
    "collector.urlmask": "the URL-password mask",
    "collector.sources.logs.lines": "byte chunks -> complete lines",
    "collector.sources.logs.identity": "file identity from device, inode and first bytes",
    "collector.sources.stripe.payload": "Stripe payload decoding and validation",
    "collector.sources.stripe.currency": "currency units",
    "collector.sources.stripe.events": "Stripe event -> effects",
    "collector.sources.stripe.ledger": "the Stripe ledger: effects and state -> state and metric changes",
    "collector.sources.stripe.signature": "Stripe-Signature checks",
    "collector.sources.github.history": "deployment history transitions",
    "collector.sources.websocket.logic": "probe failure classification, reply matching, cert expiry",
    "collector.rules.normalize": "label normalizers",
    "collector.rules.stages": "rule stages (match, extract, label)",
    "collector.rules.checks": "what schema and stages share to validate rules data",
}
# Modules that do I/O or run an event loop: a core imports none of them, directly or through the
# collector modules it imports. (A core returns what happened; its shell logs, stores and sends it.)
IO_MODULES = (
    "aiohttp", "asyncio", "sqlite3", "socket", "ssl", "selectors", "subprocess", "threading",
    "multiprocessing", "concurrent", "http", "urllib.request", "websockets", "watchfiles", "psutil",
    "shutil", "tempfile", "mmap", "fcntl", "signal", "logging", "os", "pathlib", "io",
)  # fmt: skip
# Named exceptions to the rule, each with why it is still I/O-free.
IO_ALLOWED = {
    # Classifies the exceptions the probe's I/O raised (`socket.gaierror`, `ssl.SSLError`, websockets'
    # `InvalidHandshake`) and parses a certificate's notAfter (`ssl.cert_time_to_seconds`): it opens
    # nothing itself.
    "collector.sources.websocket.logic": {"socket", "ssl", "websockets.exceptions"},
}


def _runtime_imports_outside(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for stmt in node.body
        for sub in ast.walk(stmt)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return {name for name in out if name != "collector" and not name.startswith("collector.")}


def io_reached(core: str) -> dict[str, list[str]]:
    """The I/O modules `core` reaches at run time, each with the collector modules that import it."""
    modules = module_files(COLLECTOR, "collector")
    graph = import_graph(type_only=False)
    seen: set[str] = set()
    todo = [core]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    allowed = IO_ALLOWED.get(core, set())
    out: dict[str, list[str]] = {}
    for module in sorted(seen):
        for name in _runtime_imports_outside(modules[module]):
            io = any(name == m or name.startswith(m + ".") for m in IO_MODULES)
            if io and name not in allowed:
                out.setdefault(name, []).append(module)
    return out


@pytest.mark.parametrize("core", list(IO_FREE_CORES))
def test_io_free_core_imports_no_io_module(core: str) -> None:
    assert core in module_files(COLLECTOR, "collector"), f"{core} is gone: update IO_FREE_CORES"
    assert io_reached(core) == {}, f"{core} ({IO_FREE_CORES[core]}) reaches I/O modules (and through which)"


# --- Metric families are changed through their methods ---------------------------------------------
#
# `Family` keeps a render cache (`_text`, `_keys`, `_template`) and change tracking that every update
# must keep right; `collector.exposition` uses `rendered`, `keep_rendered` and `series_template`, and a
# source replaces a computed series with `set`/`set_cells`. Only the compiled rules' hot loop writes
# `series` directly (one `touch()` per batch instead of a method call per line).
_SERIES_WRITERS = ("collector.rules",)
_MUTATORS = {"clear", "pop", "popitem", "setdefault", "update", "__setitem__", "__delitem__"}


def _non_self_attr(node: ast.AST, names: set[str]) -> str | None:
    """`x.name` (x not `self`) at the root of a subscript chain, for `name` in `names`."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute) and node.attr in names and not _is_self(node.value):
        return node.attr
    return None


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _family_misuse(path: Path, private: set[str], may_write_series: bool) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private and not _is_self(node.value):
            out.append(f"{path.relative_to(REPO)}:{node.lineno} uses Family.{node.attr}")
        if may_write_series:
            continue
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _MUTATORS
        ):
            targets = [node.func.value]
        for target in targets:
            if _non_self_attr(target, {"series"}):
                out.append(f"{path.relative_to(REPO)}:{node.lineno} writes a Family's series directly")
    return out


def test_only_metrics_py_touches_a_familys_private_fields_and_series() -> None:
    from collector.metrics import Family

    private = {name for name in Family.__slots__ if name.startswith("_")}
    assert private >= {"_text", "_keys", "_template"}
    misuse = [
        problem
        for name, path in module_files(COLLECTOR, "collector").items()
        if name != "collector.metrics"
        for problem in _family_misuse(path, private, _in_knot(name, _SERIES_WRITERS))
    ]
    assert misuse == [], "use Family's methods:\n" + "\n".join(misuse)


# --- The graph builder itself, on a small package written for the test -----------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_graph_reads_absolute_relative_function_level_and_type_only_imports(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "import pkg.b\n",
            "b.py": "from . import c\n",
            "c.py": "def f():\n    from .sub.d import x\n",
            "sub/__init__.py": "",
            "sub/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import y\nx = 1\n",
        },
    )
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.c"}  # `from . import c` depends on the submodule, not on pkg/__init__
    assert graph["pkg.c"] == {"pkg.sub.d"}
    assert graph["pkg.sub.d"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d"]]
    # Without the type-only import, the chain is open.
    assert import_cycles(import_graph(pkg, "pkg", type_only=False)) == []


def test_a_submodule_importing_a_name_from_its_package_init_is_a_cycle(tmp_path: Path) -> None:
    files = {"__init__.py": "from pkg.core import Thing\n", "core.py": "class Thing: ...\n", "use.py": ""}
    files["use.py"] = "from pkg import core\n"  # the submodule: no cycle
    assert import_cycles(import_graph(_package(tmp_path / "ok", files), "pkg")) == []
    files["core.py"] = "from pkg import Thing as _\nclass Thing: ...\n"  # a name __init__ defines
    assert import_cycles(import_graph(_package(tmp_path / "knot", files), "pkg")) == [["pkg", "pkg.core"]]


# --- Tests -----------------------------------------------------------------------------------------


def test_no_test_module_imports_from_another_test_module() -> None:
    # A test module is collected on its own; importing one runs its module-level code again under
    # another name and hides shared code among tests. Shared code lives in helper modules.
    tests = module_files(TESTS, "tests")
    offenders = []
    for name, path in tests.items():
        if "fixtures" in path.parts:
            continue
        for target in imports_of(name, path, tests):
            if target.rpartition(".")[2].startswith("test_"):
                offenders.append(f"{name} imports {target}")
    assert offenders == [], "move what they share into a helper module (not named test_*):\n" + "\n".join(
        offenders
    )
