"""The state store: one SQLite file in WAL mode, used from a single worker thread off the event loop.

Sources keep offsets, de-duplication ids, metric snapshots and histories here. Only a file that is
genuinely unusable (not a database, failing `PRAGMA quick_check`, or of a newer schema) is moved aside
and replaced by a fresh one. Anything that may pass (locked by another process, I/O error, disk full,
read-only or permission denied) raises `StoreError` with the state left as it is; the caller retries.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from collector.sources.storage import Migration, migrate

__all__ = [
    "SCHEMA_VERSION",
    "SeriesDelta",
    "StateStore",
    "StoreBusy",
    "StoreError",
    "WriteChain",
    "is_corrupt",
    "kv_get",
    "kv_put",
]

SCHEMA_VERSION = 1
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    owner TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
-- one row per metric series, so a checkpoint rewrites only the series that changed
CREATE TABLE IF NOT EXISTS series (
    owner  TEXT NOT NULL,
    family TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (owner, family, key)
) WITHOUT ROWID;
"""

log = logging.getLogger("collector.store")


class StoreError(Exception):
    """The state store cannot be used right now (retry later); its file was left untouched."""


class StoreBusy(Exception):
    """`transaction_inline` could not run now (store thread working, or the file locked); nothing ran."""


#: Inline commits between two passive WAL checkpoints queued on the store thread (inline commits do
#: not checkpoint themselves: that fsyncs, and the event loop must not wait for a disk).
INLINE_CHECKPOINT_EVERY = 256


# SQLite result codes (https://www.sqlite.org/rescode.html) that mean the file itself is bad.
_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def is_corrupt(exc: BaseException) -> bool:
    """Whether an error opening the store means its file is unusable, not that opening may work later.

    Locked (`SQLITE_BUSY`/`SQLITE_LOCKED`), `SQLITE_IOERR`, `SQLITE_FULL`, `SQLITE_READONLY`,
    `SQLITE_CANTOPEN` and `SQLITE_PERM` are conditions of the moment: moving the file aside for them
    would throw away every counter's state.
    """
    if isinstance(exc, _Incompatible | _CheckFailed):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name: str | None = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name.startswith(tuple(_CORRUPT_CODES))  # extended codes too: SQLITE_CORRUPT_INDEX
    # Older SQLite bindings without error names: the two messages SQLite gives a bad file.
    text = str(exc)
    return "file is not a database" in text or "malformed" in text


class StateStore:
    """Async facade over one SQLite connection owned by one worker thread.

    Args:
        path: the database file; parents are created.
        on_reset: called with the reason when a corrupt file is moved aside.
        busy_timeout: seconds to wait for a lock held by another process before failing (retried).
    """

    def __init__(
        self, path: Path, on_reset: Callable[[str], None] | None = None, busy_timeout: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.on_reset = on_reset
        self.busy_timeout = busy_timeout  # seconds to wait for another process's lock
        # SQLite connections belong to the thread that made them: one worker does all the I/O.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        self._conn: sqlite3.Connection | None = None
        self.last_error: str | None = None
        self.resets = 0
        # The sources' storage (owner -> its tables and migrations), applied in order at each open.
        self._storage: dict[str, Sequence[Migration]] = {}
        # Calls queued on the store thread, and those it finished: `transaction_inline` runs only
        # when they are equal. Each is written by one thread only (the loop's, the store's).
        self._submitted = 0
        self._finished = 0
        self._inline_commits = 0
        self._autocheckpoint: int | None = None
        # Whether the connection is set for inline transactions (busy timeout 0, no autocheckpoint).
        # Switched only when the other kind of work comes: a PRAGMA pair around every inline
        # transaction cost ~0.5 us of the ~6.5 us per Stripe event of its group commit. Read and set
        # only by whichever thread may use the connection at the time (the loop when the store thread
        # is idle, else the store thread).
        self._inline_mode = False

    def register(self, owner: str, steps: Sequence[Migration]) -> None:
        """Declare `owner`'s tables and migrations; they are applied (idempotently) when the store
        opens, also to the fresh file that replaces a corrupt one, before any source reads.

        Raises:
            RuntimeError: the store is already open (a registration must come before).
        """
        if self._conn is not None:
            raise RuntimeError("register storage before the store opens")
        if steps:
            self._storage[owner] = steps

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on the store thread."""
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(conn, *args)` on the store thread now (calls run in the order they were queued)."""
        return self._on_thread(self._call, fn, args)

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        self._submitted += 1
        return asyncio.get_running_loop().run_in_executor(self._executor, self._counted, fn, args)

    def _counted(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # Counted on the thread when the call ends, not when its asyncio future is done: a cancelled
        # waiter's future is done while the call may still be running.
        try:
            return fn(*args)
        finally:
            self._finished += 1

    def transaction_inline(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`transaction(fn)` run right here, on the event loop's thread, when that costs no waiting.

        Only while nothing is queued on or running in the store thread (so the connection is idle and
        nothing queued before is overtaken), and never waiting for a lock another process holds
        (busy timeout 0) or for a disk: an inline transaction does not checkpoint the WAL
        (autocheckpoint 0; the commit is then a write into the page cache, as durable against a
        crash of the process as the store thread's); a passive checkpoint is queued on the store
        thread every `INLINE_CHECKPOINT_EVERY` inline commits instead. Both settings stay on the
        connection from one inline transaction to the next; the store thread puts its own back
        before its next call (`_call`).

        Why: the hand-off to the store thread and back (a futex wake, the self-pipe, and a GIL
        hand-off at every SQLite call) cost ~20 us per Stripe webhook at 16 events a commit, a sixth
        of its CPU (A/B in one run, 10,000 events x 6 alternating rounds: 118.5 -> 97 us per event).

        Raises:
            StoreBusy: it could not run now; nothing ran (use `transaction`).
            StoreError: the store is not open.
            Exception: what `fn` or the commit raised (rolled back).
        """
        conn = self._conn
        if conn is None:
            raise StoreError("state store is not open")
        if self._finished != self._submitted:
            raise StoreBusy("store thread busy")
        if not self._inline_mode:
            if self._autocheckpoint is None:  # the connection's own setting, for the store thread
                self._autocheckpoint = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._inline_mode = True
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreBusy(str(exc)) from exc  # locked by another process: nothing ran
            result = _commit_after(conn, fn)
        except sqlite3.Error as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = None
        self._inline_commits += 1
        if self._inline_commits % INLINE_CHECKPOINT_EVERY == 0:
            self.submit(_checkpoint).add_done_callback(_quiet)
        return result

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._conn is None:
            raise StoreError("state store is not open")
        if self._inline_mode:  # the store thread waits for locks and autocheckpoints as configured
            self._store_thread_mode(self._conn)
        try:
            result = fn(self._conn, *args)
        except sqlite3.Error as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = None
        return result

    def _store_thread_mode(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        self._inline_mode = False

    # -- open / close ------------------------------------------------------------------------------
    async def open(self) -> None:
        await self._on_thread(self._open)

    def _open(self) -> None:
        self._inline_mode = False  # a new connection has its own settings
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
        except (sqlite3.Error, _Incompatible, _CheckFailed, OSError) as exc:
            if not is_corrupt(exc):
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise StoreError(f"cannot open the state store at {self.path}: {exc}") from exc
            reason = "incompatible" if isinstance(exc, _Incompatible) else "corrupt"
            aside = self._move_aside()
            log.error(
                "state store unusable, moved aside and starting fresh",
                extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc), "reason": reason},
            )
            self.resets += 1
            if self.on_reset is not None:
                self.on_reset(reason)
            try:
                self._conn = self._connect()
            except sqlite3.Error as exc2:
                self.last_error = str(exc2)
                raise StoreError(f"cannot create a fresh state store at {self.path}: {exc2}") from exc2

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                # e.g. a read-only directory: a condition to fix and retry, not a bad file
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
            # NORMAL in WAL mode: a crash of the process never loses a committed transaction.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise _CheckFailed(f"quick_check failed: {check[:3]}")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise _Incompatible(
                    f"schema version {row[0]} is newer than this collector's {SCHEMA_VERSION}"
                )
            applied: set[int] = set()
            for steps in self._storage.values():
                if id(steps) not in applied:  # shared storage (the DORA history) is declared twice
                    applied.add(id(steps))
                    migrate(conn, steps)
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        return aside

    async def close(self) -> None:
        if self._conn is None:
            return
        await self._on_thread(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- key/value ---------------------------------------------------------------------------------
    async def get(self, owner: str, key: str) -> bytes | None:
        return await self.call(_get, owner, key)

    async def get_all(self, owner: str) -> dict[str, bytes]:
        return await self.call(_get_all, owner)

    async def put(self, owner: str, items: Iterable[tuple[str, bytes | str]]) -> None:
        """Write several keys of one owner in one transaction (all or nothing)."""
        await self.call(_put, owner, list(items))

    def put_nowait(self, owner: str, items: Iterable[tuple[str, bytes | str]]) -> asyncio.Future[None]:
        """`put`, queued before this returns: a later write of the same key cannot overtake it."""
        return self.submit(_put, owner, list(items))

    async def delete(self, owner: str, keys: Iterable[str]) -> None:
        await self.call(_delete, owner, list(keys))

    async def put_with_series(
        self, owner: str, items: Iterable[tuple[str, bytes | str]], delta: SeriesDelta
    ) -> None:
        """Write kv items and a series delta of one owner in one transaction (all or nothing)."""
        await self.call(_put_with_series, owner, list(items), delta)

    def put_with_series_nowait(
        self, owner: str, items: Iterable[tuple[str, bytes | str]], delta: SeriesDelta, chain: WriteChain
    ) -> asyncio.Future[None]:
        """`put_with_series`, queued before this returns; refused if an earlier write of `chain` failed."""
        return self.submit(_chained, chain, _put_with_series, owner, list(items), delta)

    async def series_rows(self, owner: str, decode: Callable[[str, str, str], Any]) -> list[Any]:
        """Every series row of `owner` as `decode(family, key, value)`, decoded on the store thread."""
        return await self.call(_series_rows, owner, decode)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
        return await self.call(_in_transaction, fn)


class WriteChain:
    """Writes queued one after another where each builds on the one before (deltas of a checkpoint).

    Once one fails, the ones queued after it are refused rather than applied on top of a state
    they did not assume. Only the store thread reads or sets `broken`.
    """

    def __init__(self) -> None:
        self.broken = False


def _chained(conn: sqlite3.Connection, chain: WriteChain, fn: Callable[..., T], *args: Any) -> T:
    if chain.broken:
        raise StoreError("an earlier checkpoint write failed; this one builds on it")
    try:
        return fn(conn, *args)
    except BaseException:
        chain.broken = True
        raise


@dataclass
class SeriesDelta:
    """Changes to one owner's rows of the `series` table, written with its kv items in one transaction.

    Keys and values are opaque text (the owner encodes them); `drop` runs first, so a family can be
    dropped and written again whole in the same delta.
    """

    drop: list[str] = field(default_factory=list)  # families whose every row is deleted
    # (family, key, value); may be lazy (a generator consumed on the store thread), then
    # `upserts` says how many rows it yields
    upsert: Iterable[tuple[str, str, str]] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (family, key)
    upserts: int | None = None

    def __bool__(self) -> bool:
        rows = self.upserts if self.upserts is not None else len(list(self.upsert))
        return bool(self.drop or rows or self.delete)


class _Incompatible(Exception):
    pass


class _CheckFailed(Exception):
    pass


def kv_put(conn: sqlite3.Connection, owner: str, key: str, value: bytes | str) -> None:
    """Set one of `owner`'s keys inside the caller's transaction (a source's `store.transaction` or
    `store.call`), so the value commits atomically with the source's own rows (Stripe's poll cursor)."""
    conn.execute(
        "INSERT INTO kv (owner, key, value) VALUES (?, ?, ?) ON CONFLICT (owner, key) DO UPDATE SET value=excluded.value",
        (owner, key, _as_bytes(value)),
    )


def kv_get(conn: sqlite3.Connection, owner: str, key: str) -> bytes | None:
    """One of `owner`'s keys, read on the store's thread (inside `store.call`/`transaction`)."""
    return _get(conn, owner, key)


def _get(conn: sqlite3.Connection, owner: str, key: str) -> bytes | None:
    row = conn.execute("SELECT value FROM kv WHERE owner=? AND key=?", (owner, key)).fetchone()
    return None if row is None else _as_bytes(row[0])


def _get_all(conn: sqlite3.Connection, owner: str) -> dict[str, bytes]:
    rows = conn.execute("SELECT key, value FROM kv WHERE owner=?", (owner,)).fetchall()
    return {k: _as_bytes(v) for k, v in rows}


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _put(conn: sqlite3.Connection, owner: str, items: list[tuple[str, bytes | str]]) -> None:
    def write(c: sqlite3.Connection) -> None:
        c.executemany(
            "INSERT INTO kv (owner, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (owner, key) DO UPDATE SET value=excluded.value",
            [(owner, k, _as_bytes(v)) for k, v in items],
        )

    _in_transaction(conn, write)


def _put_with_series(
    conn: sqlite3.Connection, owner: str, items: list[tuple[str, bytes | str]], delta: SeriesDelta
) -> None:
    def write(c: sqlite3.Connection) -> None:
        c.executemany("DELETE FROM series WHERE owner=? AND family=?", [(owner, name) for name in delta.drop])
        c.executemany(
            "INSERT INTO series (owner, family, key, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (owner, family, key) DO UPDATE SET value=excluded.value",
            ((owner, f, k, v) for f, k, v in delta.upsert),
        )
        c.executemany(
            "DELETE FROM series WHERE owner=? AND family=? AND key=?",
            [(owner, f, k) for f, k in delta.delete],
        )
        c.executemany(
            "INSERT INTO kv (owner, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (owner, key) DO UPDATE SET value=excluded.value",
            [(owner, k, _as_bytes(v)) for k, v in items],
        )

    _in_transaction(conn, write)


def _series_rows(conn: sqlite3.Connection, owner: str, decode: Callable[[str, str, str], T]) -> list[T]:
    cur = conn.execute("SELECT family, key, value FROM series WHERE owner=?", (owner,))
    return [decode(f, k, v) for f, k, v in cur]


def _delete(conn: sqlite3.Connection, owner: str, keys: list[str]) -> None:
    _in_transaction(
        conn, lambda c: c.executemany("DELETE FROM kv WHERE owner=? AND key=?", [(owner, k) for k in keys])
    )


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _quiet(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:  # a later commit checkpoints again
        log.warning("WAL checkpoint failed", extra={"error": str(fut.exception())})


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    return _commit_after(conn, fn)


def _commit_after(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` inside the transaction just begun, then COMMIT; ROLLBACK and re-raise if it fails."""
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
