"""The maps of the code stay true: every path and qualified name docs/design.md gives exists, every path
the README's Layout names exists, and the Layout lists every module of `collector/`."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.quick

#: A path as the docs write it: `collector/sources/logs/tailer.py`, `sources/logs/tailer.py` (inside
#: collector/), `web/`, `bench/run.py`. Not preceded by a path character, so `/webhooks/` (a route) and
#: URLs are not taken for files; `<name>` placeholders are skipped.
_PATH = re.compile(r"(?<![\w./<>-])([A-Za-z_][\w-]*(?:/[\w.-]+)*(?:\.py|/))(?![\w/<>-])")
#: Top-level directories a doc path may start with; anything else is looked up inside `collector/`.
_TOP = ("collector", "tests", "bench", "tools", "deploy", "config", "docs", "requirements")

#: What the docs already describe from branches being merged with this one, absent from this branch:
#: paths and names they add (tolerated while absent) and modules they remove (tolerated while still
#: here). Once an entry is true on the merged tree, `test_nothing_pending_has_landed` asks to delete
#: it, so from then on the docs are checked against it like everything else.
PENDING_ADDED: dict[str, str] = {}
PENDING_REMOVED: dict[str, str] = {}


def doc_paths(text: str) -> list[str]:
    """Every file or directory path `text` names (in prose, code spans and diagrams)."""
    found = []
    for match in _PATH.finditer(text):
        path = match.group(1)
        if "/" not in path and not path.endswith(".py"):
            continue
        found.append(path)
    return sorted(set(found))


def missing(paths: list[str], root: Path = REPO) -> list[str]:
    """The paths that exist neither from the repository root nor inside `collector/`."""
    out = []
    for path in paths:
        top = path.split("/", 1)[0]
        candidates = [root / path] if top in _TOP else [root / "collector" / path, root / path]
        if not any(c.exists() for c in candidates):
            out.append(path)
    return out


#: A code span naming something in the code: `ledger.step`, `LogsSource._restore`, `collector.sources.SOURCES`,
#: `RuleSet` (a class); a trailing call `()` or `(args)` is allowed.
_QUALIFIED = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\([^`]*\))?`")

#: Inside diagrams (fenced blocks) a dotted name needs no backticks: `Tailer.apply(scan)`.
_DOTTED = re.compile(r"(?<![\w./])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?![\w/])")


@cache
def _definitions(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module basename -> top-level names, class name -> its attributes) over `collector/`."""
    modules: dict[str, set[str]] = {}
    classes: dict[str, set[str]] = {}
    for path in (root / "collector").rglob("*.py"):
        tree = ast.parse(path.read_text())
        base = path.parent.name if path.name == "__init__.py" else path.stem
        names = modules.setdefault(base, set())
        for node in tree.body:
            names.update(_bound(node))
            if isinstance(node, ast.ClassDef):
                attrs = classes.setdefault(node.name, set())
                for sub in ast.walk(node):
                    attrs.update(_bound(sub) if sub in node.body else ())
                    if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                        attrs.add(sub.attr)  # self.series = ...
    return modules, classes


def _bound(node: ast.AST) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, ast.ImportFrom):
        return {a.asname or a.name for a in node.names}
    return set()


def unknown_names(text: str, root: Path = REPO) -> list[str]:
    """Code spans that look like a collector name (a module's attribute, a class, a class's attribute)
    but name nothing defined in `collector/`. Spans that are neither (settings, metrics, stdlib) pass."""
    modules, classes = _definitions(root)
    out = []
    spans = list(_QUALIFIED.finditer(text))
    for block in text.split("```")[1::2]:  # diagrams: their dotted names, code span or not
        spans.extend(_DOTTED.finditer(block))
    for match in spans:
        parts = match.group(1).split(".")
        if parts[-1] in ("py", "md", "yaml", "yml", "json", "txt"):
            continue  # a file name: the path checks cover it
        if parts[0] == "collector":
            parts = parts[1:]
            if not parts:
                continue
            # collector.sources.SOURCES: the last module named, then its attribute
            while len(parts) > 1 and parts[1] in modules and parts[0] not in classes:
                parts = parts[1:]
            if parts[0] not in modules and parts[0] not in classes:
                out.append(match.group(1))
                continue
        head = parts[0]
        if len(parts) == 1:
            # a CamelCase name stands for a class (or an alias) we define; other words pass
            camel = head[0].isupper() and head[1:2].islower()
            if camel and head not in classes and not any(head in names for names in modules.values()):
                out.append(match.group(1))
            continue
        attr = parts[1]
        if head in classes:
            known = attr in classes[head]
        elif head in modules:
            known = attr in modules[head] or attr in modules  # a name in it, or a submodule
        else:
            known = True  # not ours: ctx.started(), asyncio.to_thread
        if not known:
            out.append(match.group(1))
    return sorted(set(out))


def layout_block(readme: str) -> str:
    """The code block of the README's `## Layout` section."""
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def layout_paths(block: str) -> list[str]:
    """The tree's lines as repository paths: two spaces of indent per level, the name first."""
    stack: list[str] = []
    paths = []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"odd indent in the README Layout: {line!r}"
        name = line.split()[0]
        depth = indent // 2
        assert depth <= len(stack), f"README Layout line nested under nothing: {line!r}"
        del stack[depth:]
        paths.append("".join(stack) + name)
        if name.endswith("/"):
            stack.append(name)
    return paths


def test_every_path_in_the_design_doc_exists() -> None:
    text = (REPO / "docs" / "design.md").read_text()
    paths = doc_paths(text)
    assert len(paths) > 40, paths  # the pattern still finds the map's paths
    assert _not_pending(missing(paths)) == [], "docs/design.md names paths that do not exist"


def test_every_qualified_name_in_the_design_doc_is_defined() -> None:
    assert _not_pending(unknown_names((REPO / "docs" / "design.md").read_text())) == [], (
        "docs/design.md names functions, classes or attributes the code does not define"
    )


def test_every_path_in_the_readme_layout_exists() -> None:
    paths = layout_paths(layout_block((REPO / "README.md").read_text()))
    assert "collector/sources/logs/tailer.py" in paths
    assert _not_pending(missing(paths)) == [], "the README's Layout names paths that do not exist"


def test_the_readme_layout_lists_every_module_of_the_package() -> None:
    listed = set(layout_paths(layout_block((REPO / "README.md").read_text())))
    package = REPO / "collector"
    modules = [
        p.relative_to(REPO).as_posix()
        for p in package.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "__pycache__" not in p.parts
    ]
    packages = [p.parent.relative_to(REPO).as_posix() + "/" for p in package.rglob("__init__.py")]
    absent = sorted(m for m in [*modules, *packages] if m not in listed and m not in PENDING_REMOVED)
    assert absent == [], f"add a line for each to the README's Layout: {absent}"


def _not_pending(found: list[str]) -> list[str]:
    return [f for f in found if f not in PENDING_ADDED and f"collector/{f}" not in PENDING_ADDED]


def test_nothing_pending_has_landed() -> None:
    paths = [p for p in PENDING_ADDED if "/" in p or p.endswith(".py")]
    names = [n for n in PENDING_ADDED if n not in paths]
    landed = sorted(
        [p for p in paths if p not in missing([p])]
        + [n for n in names if n not in unknown_names(f"`{n}`")]
        + [p for p in PENDING_REMOVED if not (REPO / p).exists()]
    )
    assert landed == [], f"merged: delete these from PENDING_ADDED / PENDING_REMOVED: {landed}"


def test_the_path_pattern_finds_module_paths_and_skips_routes_and_urls() -> None:
    text = (
        "see `collector/store.py` and sources/logs/tailer.py; web/ guards; bench/run.py prints;\n"
        "POST /webhooks/stripe, GET /health/live, ws://app:3000/ws, https://docs.stripe.com/webhooks,\n"
        "collector/sources/<name>/ is a placeholder, app.log.1 is a file name, state.apply_batch a call"
    )
    assert doc_paths(text) == ["bench/run.py", "collector/store.py", "sources/logs/tailer.py", "web/"]


def test_a_renamed_module_is_reported(tmp_path: Path) -> None:
    (tmp_path / "collector" / "web").mkdir(parents=True)
    (tmp_path / "collector" / "web" / "guard.py").write_text("")
    paths = ["collector/web/guard.py", "web/guard.py", "web/", "collector/web/shield.py", "rules/engine.py"]
    assert missing(paths, tmp_path) == ["collector/web/shield.py", "rules/engine.py"]


def test_the_layout_tree_nests_by_indent() -> None:
    block = "collector/   pkg\n  a.py      x\n  sub/      y\n    b.py    z\n  c.py      w\ntests/  t\n"
    assert layout_paths(block) == [
        "collector/",
        "collector/a.py",
        "collector/sub/",
        "collector/sub/b.py",
        "collector/c.py",
        "tests/",
    ]


def test_a_qualified_name_the_code_no_longer_defines_is_reported() -> None:
    text = (
        "`ledger.step` `ledger.stepped` `Tailer._step` `Tailer._stride` `Family.series` `RuleSet` "
        "`RuleSets` `collector.sources.SOURCES` `collector.sources.REGISTRY` `web.config` "
        "`COLLECTOR_LISTEN` `asyncio.to_thread` `ctx.started()` `app.log.1` `redact.py`"
    )
    assert unknown_names(text) == [
        "RuleSets",
        "Tailer._stride",
        "collector.sources.REGISTRY",
        "ledger.stepped",
    ]
