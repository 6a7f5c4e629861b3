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


async def test_the_store_applies_registered_storage_at_open_and_to_a_fresh_file_after_a_reset(
    tmp_path,
) -> None:
    from collector.store import StateStore

    steps = (
        Tables("CREATE TABLE IF NOT EXISTS toy (id TEXT PRIMARY KEY);"),
        AddColumn("toy", "n", "INTEGER"),
    )
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.register("toy", steps)
    store.register("twin", steps)  # shared storage declared by two sources: applied once, harmlessly
    await store.open()
    assert await store.call(_columns, "toy") == ["id", "n"]
    with pytest.raises(RuntimeError, match="before the store opens"):
        store.register("late", steps)
    await store.close()
    path.write_bytes(b"not a database" * 100)  # corrupt: moved aside, replaced by a fresh file
    fresh = StateStore(path)
    fresh.register("toy", steps)
    await fresh.open()
    assert fresh.resets == 1
    assert await fresh.call(_columns, "toy") == ["id", "n"]
    await fresh.close()
