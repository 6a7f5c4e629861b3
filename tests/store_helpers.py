"""State store test support: a one-row inline write, and an inline transaction once the store thread is idle."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from collector.store import StateStore, StoreBusy

__all__ = ["inline_when_idle", "put_k"]


def put_k(value: bytes) -> Callable[[sqlite3.Connection], str]:
    """A transaction body that sets kv ('t', 'k') to `value` and returns "done"."""

    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT OR REPLACE INTO kv (owner, key, value) VALUES ('t', 'k', ?)", (value,))
        return "done"

    return write


async def inline_when_idle(store: StateStore, fn: Callable[[sqlite3.Connection], str]) -> str:
    """`fn` inline, once the store thread is idle (a queued checkpoint makes it busy for a moment)."""
    for _ in range(400):
        try:
            return store.transaction_inline(fn)
        except StoreBusy:
            await asyncio.sleep(0.005)
    raise AssertionError("the store thread never became idle")
