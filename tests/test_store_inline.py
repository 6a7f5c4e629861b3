"""`StateStore.transaction_inline`: a transaction on the loop's thread only when that waits for nothing.

It must never overtake work queued on the store thread, never run while that thread uses the
connection (also when the waiter of that work went away), never wait for another process's lock, and
never checkpoint the WAL itself (a checkpoint fsyncs: it is queued on the store thread instead).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from collector import store as store_module
from collector.store import StateStore, StoreBusy, StoreError
from tests.store_helpers import inline_when_idle, put_k

pytestmark = pytest.mark.quick  # no servers or processes; the store's own thread only


async def test_runs_on_the_callers_thread_and_commits(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    await store.open()
    seen: list[int] = []

    def write(conn: sqlite3.Connection) -> str:
        seen.append(threading.get_ident())
        return put_k(b"1")(conn)

    assert store.transaction_inline(write) == "done"
    assert seen == [threading.get_ident()]
    assert await store.get("t", "k") == b"1"  # committed: the store thread reads it
    await store.close()


async def test_busy_while_work_is_queued_or_running_on_the_store_thread(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    await store.open()
    gate = threading.Event()
    running = threading.Event()

    def hold(_conn: sqlite3.Connection) -> None:
        running.set()
        gate.wait(10)

    waiter = asyncio.ensure_future(store.call(hold))
    queued = store.put_nowait("t", [("k", b"queued")])
    await asyncio.to_thread(running.wait, 10)
    with pytest.raises(StoreBusy):
        store.transaction_inline(put_k(b"inline"))
    # A waiter that goes away does not make the thread idle: its call still runs.
    waiter.cancel()
    await asyncio.sleep(0)
    with pytest.raises(StoreBusy):
        store.transaction_inline(put_k(b"inline"))
    gate.set()
    await queued
    for _ in range(200):  # the thread counts the call as finished right after it returns
        try:
            assert store.transaction_inline(put_k(b"inline")) == "done"
            break
        except StoreBusy:
            await asyncio.sleep(0.005)
    else:
        raise AssertionError("the store thread never became idle")
    assert await store.get("t", "k") == b"inline"  # after the queued write, never before it
    await store.close()


async def test_another_processes_lock_is_not_waited_for_and_nothing_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = StateStore(path, busy_timeout=5.0)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ran: list[bool] = []
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(StoreBusy):
        store.transaction_inline(lambda _c: ran.append(True))
    assert loop.time() - began < 1.0 and ran == []
    other.execute("ROLLBACK")
    other.close()
    # The connection's own busy timeout and autocheckpoint are back for the store thread.
    assert await store.call(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == 5000
    assert await store.call(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 1000
    await store.close()


async def test_a_failing_inline_transaction_rolls_back_and_raises(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    await store.open()
    await store.put("t", [("k", b"old")])

    def half_then_fail(conn: sqlite3.Connection) -> None:
        put_k(b"new")(conn)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        store.transaction_inline(half_then_fail)
    assert await store.get("t", "k") == b"old"
    assert store.transaction_inline(put_k(b"new")) == "done"  # the connection is usable again
    await store.close()
    with pytest.raises(StoreError):
        store.transaction_inline(put_k(b"late"))


async def test_inline_commits_queue_a_passive_checkpoint_on_the_store_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "INLINE_CHECKPOINT_EVERY", 3)
    store = StateStore(tmp_path / "s.db")
    await store.open()
    checkpoints: list[int] = []
    real = store_module._checkpoint

    def spy(conn: sqlite3.Connection) -> None:
        checkpoints.append(threading.get_ident())
        real(conn)

    monkeypatch.setattr(store_module, "_checkpoint", spy)
    for i in range(7):
        for _ in range(200):
            try:
                store.transaction_inline(put_k(b"%d" % i))
                break
            except StoreBusy:
                await asyncio.sleep(0.005)
    await store.call(lambda _c: None)
    assert len(checkpoints) == 2 and threading.get_ident() not in checkpoints
    await store.close()


async def test_an_inline_transaction_after_another_runs_no_pragma(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    await store.open()
    assert await inline_when_idle(store, put_k(b"1")) == "done"  # switches the connection to inline settings
    statements: list[str] = []
    conn = store._conn
    assert conn is not None
    conn.set_trace_callback(statements.append)
    assert await inline_when_idle(store, put_k(b"2")) == "done"
    conn.set_trace_callback(None)
    assert [s.split(" ", 2)[:2] for s in statements] == [["BEGIN", "IMMEDIATE"], ["INSERT", "OR"], ["COMMIT"]]
    await store.close()


async def test_a_long_inline_run_keeps_the_wal_bounded_by_its_queued_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "INLINE_CHECKPOINT_EVERY", 16)
    path = tmp_path / "s.db"
    store = StateStore(path)
    await store.open()
    commits = 600
    sizes = []
    for i in range(commits):
        # A new page-sized row each commit: the WAL gains at least one frame per commit.
        def write(conn: sqlite3.Connection, i: int = i) -> str:
            conn.execute("INSERT INTO kv (owner, key, value) VALUES ('t', ?, ?)", (f"k{i:04d}", bytes(3000)))
            return "done"

        assert await inline_when_idle(store, write) == "done"
        sizes.append(Path(f"{path}-wal").stat().st_size)
    frame = 4096 + 24
    assert sizes[-1] >= frame  # inline commits went to the WAL, not through an autocheckpoint
    # Without the queued checkpoints it would hold every commit's frames (> 600 of them); with them
    # the WAL restarts after each, so it never holds more than a few checkpoint intervals.
    assert max(sizes) < 4 * 16 * 4 * frame < commits * frame
    rows = await store.call(lambda c: c.execute("SELECT count(*) FROM kv WHERE owner='t'").fetchone()[0])
    assert rows == commits
    await store.close()
