"""State store: WAL mode, atomic writes, corrupt and incompatible files moved aside."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.store import SCHEMA_VERSION, StateStore, StoreError, is_corrupt

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


async def test_values_survive_reopen_and_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    store = StateStore(path)
    await store.open()
    await store.put("logs", [("a", b"1"), ("b", "two")])
    assert await store.call(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    await store.close()

    again = StateStore(path)
    await again.open()
    assert await again.get_all("logs") == {"a": b"1", "b": b"two"}
    assert await again.get("logs", "missing") is None
    await again.delete("logs", ["a"])
    assert await again.get_all("logs") == {"b": b"two"}
    await again.close()


async def test_a_failing_transaction_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    await store.open()
    await store.put("o", [("k", b"old")])

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE kv SET value=? WHERE owner='o' AND key='k'", (b"new",))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.transaction(half_then_fail)
    assert await store.get("o", "k") == b"old"
    await store.close()


async def test_corrupt_file_is_moved_aside_counted_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    resets: list[str] = []
    store = StateStore(path, on_reset=resets.append)
    await store.open()
    assert resets == ["corrupt"]
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert (tmp_path / aside[0]).read_bytes().startswith(b"this is not an sqlite")
    await store.put("o", [("k", b"v")])
    assert await store.get("o", "k") == b"v"
    await store.close()


async def test_damaged_pages_fail_the_check_and_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    await store.open()
    await store.put("o", [(f"k{i}", b"x" * 500) for i in range(200)])
    await store.close()
    data = bytearray(path.read_bytes())
    data[4096 : 4096 * 3] = b"\xff" * (4096 * 2)  # trash two b-tree pages, keep the header valid
    path.write_bytes(bytes(data))
    resets: list[str] = []
    store = StateStore(path, on_reset=resets.append)
    await store.open()
    assert resets == ["corrupt"]
    assert await store.get_all("o") == {}
    await store.close()


async def test_file_from_a_newer_collector_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    resets: list[str] = []
    store = StateStore(path, on_reset=resets.append)
    await store.open()
    assert resets == ["incompatible"]
    assert (
        await store.call(lambda c: c.execute("SELECT version FROM schema_version").fetchone()[0])
        == SCHEMA_VERSION
    )
    await store.close()


async def test_a_store_locked_by_another_process_is_retried_never_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    await store.open()
    await store.put("logs", [("checkpoint", b"precious")])
    await store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    # Another process holds the file locked at start-up (an `sqlite3` shell, a backup tool).
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    resets: list[str] = []
    store = StateStore(path, on_reset=resets.append, busy_timeout=0.2)
    with pytest.raises(StoreError, match="locked"):
        await store.open()
    assert resets == [] and not store.is_open
    assert "locked" in (store.last_error or "")
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == []
    holder.execute("ROLLBACK")
    holder.close()
    await store.open()  # the caller's retry: everything is still there
    assert await store.get("logs", "checkpoint") == b"precious"
    assert resets == []
    await store.close()


async def test_a_store_that_cannot_be_created_is_an_error_to_retry_not_a_reset(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the directory should be")
    resets: list[str] = []
    store = StateStore(tmp_path / "data" / "state.db", on_reset=resets.append)
    for _ in range(3):
        with pytest.raises(StoreError):
            await store.open()
    assert resets == [] and store.resets == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_only_a_bad_file_counts_as_corruption() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELECT * FROM nowhere")
    except sqlite3.Error as exc:
        assert not is_corrupt(exc)  # a plain error (a bug), not a reason to throw state away
    assert not is_corrupt(OSError(28, "No space left on device"))
    assert not is_corrupt(sqlite3.OperationalError("database is locked"))
    assert not is_corrupt(sqlite3.OperationalError("disk I/O error"))
    assert is_corrupt(sqlite3.DatabaseError("file is not a database"))
    assert is_corrupt(sqlite3.DatabaseError("database disk image is malformed"))
