"""Declared storage: each source's tables and migrations are one list, applied once, idempotent."""

from __future__ import annotations

import sqlite3

import pytest

from collector.sources import SOURCES
from collector.sources.storage import AddColumn, Tables, migrate

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_a_database_of_the_first_release_gets_the_added_columns_and_keeps_its_rows() -> None:
    conn = sqlite3.connect(":memory:")
    steps = (
        Tables("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY);"),
        AddColumn("t", "kind", "INTEGER NOT NULL DEFAULT 1"),
    )
    migrate(conn, steps[:1])
    conn.execute("INSERT INTO t VALUES ('old')")
    migrate(conn, steps)
    migrate(conn, steps)  # again: nothing changes
    assert _columns(conn, "t") == ["id", "kind"]
    assert conn.execute("SELECT id, kind FROM t").fetchall() == [("old", 1)]


def test_every_stateful_source_declares_the_tables_it_uses() -> None:
    declared = {name: getattr(ref.load(), "storage", ()) for name, ref in SOURCES.items()}
    tables: dict[str, set[str]] = {}
    for name, steps in declared.items():
        conn = sqlite3.connect(":memory:")
        migrate(conn, steps)
        tables[name] = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables["stripe"] == {
        "stripe_events",
        "stripe_counters",
        "stripe_subscriptions",
        "stripe_charges",
        "stripe_refunds",
    }
    assert (
        tables["github"]
        == tables["deployments"]
        == {"github_deployments", "github_pushes", "github_incidents", "github_deliveries"}
    )
