"""Stripe state in SQLite: seen event ids, counters, subscriptions, refund marks, the poll cursor.

All of the Stripe source's SQL is here (its tables in `MIGRATIONS`); what an event changes is
decided by the I/O-free `ledger`, this module only reads the facts it needs and writes its rows.

Every function here runs on the state store's thread. `apply_batch` is the exactly-once step: it
inserts each event id, adds the events' counter deltas and writes subscriptions in ONE transaction,
so the store can never hold an event counted but not recorded, or recorded but not counted. Counters
are stored as integers (counts, or minor currency units), so sums stay exact.
"""

from __future__ import annotations

import bisect
import functools
import json
import sqlite3
from dataclasses import dataclass, field
from fractions import Fraction

from collector.sources.storage import AddColumn, Migration, Tables, migrate
from collector.sources.stripe import ledger
from collector.sources.stripe.events import Effects, SubState
from collector.sources.stripe.ledger import Applied, ChargeFacts, ChargeWrite, SubFacts, SubWrite
from collector.store import kv_get, kv_put

__all__ = [
    "MIGRATIONS",
    "Applied",
    "Loaded",
    "apply_batch",
    "apply_event",
    "apply_snapshot",
    "create_tables",
    "load",
    "prune",
    "read_kv",
]

_TABLES = """
CREATE TABLE IF NOT EXISTS stripe_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, created INTEGER NOT NULL, seen_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stripe_events_seen ON stripe_events (seen_at);
CREATE TABLE IF NOT EXISTS stripe_counters (
    name TEXT NOT NULL, labels TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (name, labels)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stripe_subscriptions (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, currency TEXT NOT NULL, mrr TEXT NOT NULL,
    created INTEGER NOT NULL, canceled_counted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stripe_charges (
    id TEXT PRIMARY KEY, amount_refunded INTEGER NOT NULL, updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stripe_refunds (
    charge_id TEXT NOT NULL, key TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (charge_id, key)
) WITHOUT ROWID;
"""
#: Stripe's storage, in order: the tables as first released, then the columns added since.
MIGRATIONS: tuple[Migration, ...] = (
    Tables(_TABLES),
    AddColumn("stripe_subscriptions", "kind", "INTEGER NOT NULL DEFAULT 1"),
)

#: kv owner for the poll cursor.
OWNER = "stripe"


def create_tables(conn: sqlite3.Connection) -> None:
    """Apply `MIGRATIONS` (the store does, from the source's `storage`; tests with a bare connection call it)."""
    migrate(conn, MIGRATIONS)


@dataclass
class Loaded:
    counters: list[tuple[str, tuple[str, ...], int]]
    subscriptions: list[SubState]
    last_event_created: int | None
    #: Stored rows that could not be read back (skipped, so one bad row cannot brick every restart).
    bad_rows: list[str] = field(default_factory=list)


#: Largest value a stored total may hold (SQLite INTEGER); anything else is a bad row.
_INT64 = 2**63 - 1
# Bound for a stored MRR (minor units per month): MAX_AMOUNT x 10^9 seats x 365/12 is far below it.
_MAX_MRR = Fraction(10**30)


def load(conn: sqlite3.Connection) -> Loaded:
    """Everything the in-memory view is rebuilt from at start; unreadable rows are skipped and named.

    The tables must exist (`create_tables`).
    """
    bad: list[str] = []
    counters = []
    for name, labels, value in conn.execute("SELECT name, labels, value FROM stripe_counters"):
        try:
            lab = json.loads(labels)
            if not (isinstance(lab, list) and all(isinstance(x, str) for x in lab)):
                raise ValueError("labels are not a list of strings")
            if type(value) is not int or not 0 <= value <= _INT64:
                raise ValueError(f"value {value!r} is not a 64-bit count")
            counters.append((str(name), tuple(lab), value))
        except (ValueError, TypeError) as exc:
            bad.append(f"stripe_counters {name!r}: {exc}")
    subs = []
    for i, st, c, m, cr, kind in conn.execute(
        "SELECT id, status, currency, mrr, created, kind FROM stripe_subscriptions"
    ):
        try:
            mrr = Fraction(m)
            if not 0 <= mrr <= _MAX_MRR or type(cr) is not int:
                raise ValueError(f"mrr {m!r} or created {cr!r} out of range")
            subs.append(SubState(str(i), str(st), str(c), mrr, cr, int(kind)))
        except (ValueError, TypeError, ZeroDivisionError) as exc:
            bad.append(f"stripe_subscriptions {i!r}: {exc}")
    last = conn.execute("SELECT max(created) FROM stripe_events").fetchone()[0]
    return Loaded(counters, subs, last if type(last) is int else None, bad)


def apply_event(
    conn: sqlite3.Connection,
    event_id: str,
    event_type: str,
    created: int,
    eff: Effects,
    now: float,
    cursor: str | None = None,
) -> Applied:
    """Record the event id and apply its effects, inside the caller's transaction.

    Returns:
        `duplicate=True` and nothing applied when the id was already recorded.
    """
    return apply_batch(conn, [(event_id, event_type, created, eff, cursor)], now)[0]


#: One event of a batch: id, type, created, effects, poll cursor to store with it (or None).
BatchItem = tuple[str, str, int, Effects, str | None]


def apply_batch(conn: sqlite3.Connection, items: list[BatchItem], now: float) -> list[Applied]:
    """Record and apply several events in order, inside the caller's ONE transaction (group commit).

    Each event is handled exactly as if it were alone, in list order: an id already stored, or seen
    earlier in the same batch, is a duplicate; refund marks and subscription rows see the writes of
    the events before them. What each event changes is decided by `ledger.step`; this reads its facts
    and writes its rows.

    The per-series work is merged: which ids are stored is one `SELECT ... IN` per chunk, the new ids
    one multi-row `INSERT` per chunk, the counters one upsert per series, the cursor one write (the
    last one given, as if each were written in turn). Every SQLite call releases and retakes the GIL,
    which the event loop holds most of the time: a batch of 16 payments is ~4 calls, not ~20.

    Returns:
        one `Applied` per item, in order.
    """
    seen = _stored_ids(conn, [item[0] for item in items])
    values: list[str | int | float] = []
    out: list[Applied] = []
    totals: dict[tuple[str, tuple[str, ...]], int] = {}
    cursor: str | None = None
    for event_id, event_type, created, eff, cur in items:
        if cur is not None:
            cursor = cur  # a duplicate still moves the cursor past itself
        if event_id in seen:
            out.append(Applied(duplicate=True))
            continue
        seen.add(event_id)
        values += (event_id, event_type, created, now)
        charge = _charge_facts(conn, eff.refund.charge_id) if eff.refund is not None else None
        sub = _sub_facts(conn, eff.subscription.id) if eff.subscription is not None else None
        applied, charge_write, sub_write = ledger.step(eff, charge, sub, now)
        if charge_write is not None:
            _write_charge(conn, charge_write)
        if sub_write is not None:
            _write_subscription(conn, sub_write)
        for name, labels, delta in applied.counters:
            totals[name, labels] = totals.get((name, labels), 0) + delta
        out.append(applied)
    _insert_events(conn, values)
    if cursor is not None:
        kv_put(conn, OWNER, "cursor", cursor)
    if totals:
        # Merged per series: a batch of 100 payments is 2 upserts, not 200.
        conn.executemany(
            "INSERT INTO stripe_counters (name, labels, value) VALUES (?, ?, ?) "
            "ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
            [(name, json.dumps(list(labels)), delta) for (name, labels), delta in totals.items()],
        )
    return out


#: Columns of a `stripe_events` row as `_insert_events` binds them.
_COLUMNS = 4
#: Rows (or ids) per statement at most (4 values each: far below SQLite's 32,766 variables).
_CHUNK = 256
#: The row counts a statement is prepared for; a chunk is padded up to the next. 16 statement texts
#: whatever the batch sizes, so each stays prepared in the connection's cache, and one statement per
#: batch for each step (a power-of-two split made a batch of 13 three of each, 3-6 us a statement).
_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, _CHUNK)


def _size(n: int) -> int:
    return _SIZES[bisect.bisect_left(_SIZES, n)]


def _stored_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    """Which of `ids` are already recorded (one query per chunk; padded with copies of its last id,
    which change nothing in an `IN` list)."""
    stored: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        size = _size(len(chunk))
        chunk += chunk[-1:] * (size - len(chunk))
        stored.update(i for (i,) in conn.execute(_select_ids(size), chunk))
    return stored


def _insert_events(conn: sqlite3.Connection, values: list[str | int | float]) -> None:
    """Insert event rows (`_COLUMNS` values each) whose ids are neither stored nor repeated."""
    step = _CHUNK * _COLUMNS
    for start in range(0, len(values), step):
        chunk = values[start : start + step]
        rows = len(chunk) // _COLUMNS
        size = _size(rows)
        # Padded with copies of the chunk's last row: each conflicts with that row, just inserted,
        # and is skipped (`DO NOTHING`); no real row can conflict, `_stored_ids` left those out.
        chunk += chunk[-_COLUMNS:] * (size - rows)
        conn.execute(_insert_sql(size), chunk)


@functools.cache
def _insert_sql(n: int) -> str:
    return (
        "INSERT INTO stripe_events (id, type, created, seen_at) VALUES "
        + ",".join(["(?,?,?,?)"] * n)
        + " ON CONFLICT (id) DO NOTHING"
    )


@functools.cache
def _select_ids(n: int) -> str:
    return "SELECT id FROM stripe_events WHERE id IN (" + ",".join(["?"] * n) + ")"


def _charge_facts(conn: sqlite3.Connection, charge_id: str) -> ChargeFacts:
    row = conn.execute("SELECT amount_refunded FROM stripe_charges WHERE id=?", (charge_id,)).fetchone()
    keys = frozenset(
        k for (k,) in conn.execute("SELECT key FROM stripe_refunds WHERE charge_id=?", (charge_id,))
    )
    return ChargeFacts(row[0] if row else 0, keys)


def _write_charge(conn: sqlite3.Connection, w: ChargeWrite) -> None:
    conn.execute(
        "INSERT INTO stripe_charges (id, amount_refunded, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET amount_refunded = max(amount_refunded, excluded.amount_refunded), "
        "updated_at = excluded.updated_at",
        (w.charge_id, w.amount_refunded, w.updated_at),
    )
    conn.executemany(
        "INSERT INTO stripe_refunds (charge_id, key, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (charge_id, key) DO UPDATE SET updated_at = excluded.updated_at",
        [(w.charge_id, k, w.updated_at) for k in w.keys],
    )


def _sub_facts(conn: sqlite3.Connection, sub_id: str) -> SubFacts:
    row = conn.execute(
        "SELECT status, currency, mrr, created, kind, canceled_counted FROM stripe_subscriptions WHERE id=?",
        (sub_id,),
    ).fetchone()
    if row is None:
        return SubFacts()
    return SubFacts(SubState(sub_id, row[0], row[1], Fraction(row[2]), row[3], row[4]), bool(row[5]))


def _write_subscription(conn: sqlite3.Connection, w: SubWrite) -> None:
    new = w.state
    if new is None:  # a later state is stored; only its cancellation is marked counted
        conn.execute("UPDATE stripe_subscriptions SET canceled_counted=1 WHERE id=?", (w.sub_id,))
        return
    conn.execute(
        "INSERT INTO stripe_subscriptions (id, status, currency, mrr, created, kind, canceled_counted) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status=excluded.status, "
        "currency=excluded.currency, mrr=excluded.mrr, created=excluded.created, kind=excluded.kind, "
        "canceled_counted=max(canceled_counted, excluded.canceled_counted)",
        (new.id, new.status, new.currency, str(new.mrr), new.created, new.kind, int(w.canceled_counted)),
    )


def apply_snapshot(conn: sqlite3.Connection, states: list[SubState]) -> list[SubState]:
    """Reconciliation: store API snapshots that supersede what is stored; return those written.

    A snapshot never counts a cancellation: counters come from events only.
    """
    written = []
    for st in states:
        if not ledger.snapshot_supersedes(st, _sub_facts(conn, st.id).state):
            continue
        conn.execute(
            "INSERT INTO stripe_subscriptions (id, status, currency, mrr, created, kind) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status=excluded.status, currency=excluded.currency, "
            "mrr=excluded.mrr, created=excluded.created, kind=excluded.kind",
            (st.id, st.status, st.currency, str(st.mrr), st.created, st.kind),
        )
        written.append(st)
    return written


def prune(conn: sqlite3.Connection, events_before: float, charges_before: float) -> int:
    """Forget event ids older than any redelivery window, and stale refund marks."""
    n = conn.execute("DELETE FROM stripe_events WHERE seen_at < ?", (events_before,)).rowcount
    conn.execute("DELETE FROM stripe_charges WHERE updated_at < ?", (charges_before,))
    conn.execute("DELETE FROM stripe_refunds WHERE updated_at < ?", (charges_before,))
    return n


def read_kv(conn: sqlite3.Connection, key: str) -> str | None:
    """The source's value under `key` in the store's kv table (the poll cursor), or None."""
    value = kv_get(conn, OWNER, key)
    return None if value is None else value.decode()
