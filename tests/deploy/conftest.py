"""Fixtures of the deploy-kit tests: one `collector demo` process shared by the tests that scrape it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.kit import Demo, demo_fixture


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    yield from demo_fixture(tmp_path_factory)
