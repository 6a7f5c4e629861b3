"""Shared fixtures; helpers live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings come from the environment: keep an operator's COLLECTOR_* out of the tests.
    for key in list(os.environ):
        if key.startswith("COLLECTOR_"):
            monkeypatch.delenv(key)
