"""The test tree's conventions: `test_*` modules hold tests; shared helpers are named otherwise."""

from __future__ import annotations

import ast
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
