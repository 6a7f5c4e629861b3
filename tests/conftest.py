"""Shared fixtures; helpers live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Settings come from the environment: keep an operator's COLLECTOR_* out of the tests.
    for key in list(os.environ):
        if key.startswith("COLLECTOR_"):
            monkeypatch.delenv(key)
    # replay's cache of parsed rules files (rules/yamlcache.py) goes to a directory of the run's own,
    # not the user's ~/.cache, for every test and every child process it starts.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
