"""`StateStore.transaction_inline` against a lock held by another process, across mode switches.

Inline transactions leave the connection set for themselves (busy timeout 0, no autocheckpoint)
from one to the next; the store thread must still wait for another process's lock as configured.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from collector.store import StateStore, StoreBusy
from tests.store_helpers import inline_when_idle, put_k

_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


async def test_after_inline_transactions_the_store_thread_still_waits_for_another_processes_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = StateStore(path, busy_timeout=10.0)
    await store.open()
    loop = asyncio.get_running_loop()
    for round_ in range(2):  # inline -> store thread -> inline: each switch back and forth
        assert await inline_when_idle(store, put_k(b"inline %d" % round_)) == "done"
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _HOLD_LOCK, str(path), "0.5", stdout=asyncio.subprocess.PIPE
        )
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"locked\n"
        began = loop.time()
        with pytest.raises(StoreBusy):  # inline: never waits, nothing ran
            store.transaction_inline(put_k(b"lost"))
        assert loop.time() - began < 0.3
        # The store thread waits for the lock (busy timeout 10 s, not inline's 0) and writes.
        await store.put("t", [("k", b"thread %d" % round_)])
        assert loop.time() - began >= 0.2
        assert await holder.wait() == 0
        assert await store.get("t", "k") == b"thread %d" % round_
        assert await store.call(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == 10000
        assert await store.call(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 1000
    await store.close()
