"""Stripe state in SQLite: seen event ids, counters, subscriptions, refund marks, the poll cursor.

Every function here runs on the state store's thread. `apply_batch` is the exactly-once step: it
inserts each event id, adds the events' counter deltas and writes subscriptions in ONE transaction,
so the store can never hold an event counted but not recorded, or recorded but not counted. Counters
are stored as integers (counts, or minor currency units), so sums stay exact.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from fractions import Fraction

from collector.sources.stripe.events import Effects, SubState

__all__ = [
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

_SCHEMA = """
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
#: Columns added after the first release: (table, column, definition).
_ADDED = (("stripe_subscriptions", "kind", "INTEGER NOT NULL DEFAULT 1"),)

#: kv owner for the poll cursor.
OWNER = "stripe"


def create_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    for table, column, definition in _ADDED:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


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
    """Everything the in-memory view is rebuilt from at start; unreadable rows are skipped and named."""
    create_tables(conn)
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


@dataclass
class Applied:
    """The committed result of one event: deltas to mirror in memory, the subscription state written."""

    duplicate: bool = False
    counters: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)
    subscription: SubState | None = None
    #: The stored state had the same `created` second and other content: ordered by the lifecycle,
    #: worth re-reading from the API when a key is configured (Stripe's advice when order matters).
    tied: str | None = None


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
    the events before them. Only the counter upserts are merged (one per series for the batch).

    Returns:
        one `Applied` per item, in order.
    """
    out: list[Applied] = []
    totals: dict[tuple[str, tuple[str, ...]], int] = {}
    for event_id, event_type, created, eff, cursor in items:
        cur = conn.execute(
            "INSERT OR IGNORE INTO stripe_events (id, type, created, seen_at) VALUES (?, ?, ?, ?)",
            (event_id, event_type, created, now),
        )
        if cursor is not None:
            _put_kv(conn, "cursor", cursor)
        if cur.rowcount == 0:
            out.append(Applied(duplicate=True))
            continue
        applied = Applied(counters=list(eff.counters))
        if eff.refund is not None:
            applied.counters.extend(_refund_delta(conn, eff, now))
        if eff.subscription is not None:
            applied.subscription, canceled, tied = _write_subscription(conn, eff.subscription)
            applied.tied = eff.subscription.id if tied else None
            if canceled:
                applied.counters.append(("stripe_subscriptions_canceled_total", (), 1))
        for name, labels, delta in applied.counters:
            totals[name, labels] = totals.get((name, labels), 0) + delta
        out.append(applied)
    if totals:
        # Merged per series: a batch of 100 payments is 2 upserts, not 200.
        conn.executemany(
            "INSERT INTO stripe_counters (name, labels, value) VALUES (?, ?, ?) "
            "ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
            [(name, json.dumps(list(labels)), delta) for (name, labels), delta in totals.items()],
        )
    return out


def _refund_delta(
    conn: sqlite3.Connection, eff: Effects, now: float
) -> list[tuple[str, tuple[str, ...], int]]:
    r = eff.refund
    assert r is not None
    row = conn.execute("SELECT amount_refunded FROM stripe_charges WHERE id=?", (r.charge_id,)).fetchone()
    mark = row[0] if row else 0
    # previous_attributes gives the exact change, whatever the arrival order; without it, count what
    # exceeds the highest total seen so far for this charge (partial refunds count once).
    delta = r.amount_refunded - r.previous if r.previous is not None else r.amount_refunded - mark
    conn.execute(
        "INSERT INTO stripe_charges (id, amount_refunded, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET amount_refunded = max(amount_refunded, excluded.amount_refunded), "
        "updated_at = excluded.updated_at",
        (r.charge_id, r.amount_refunded, now),
    )
    out = []
    if delta > 0:
        out.append(("stripe_refund_value_total", (r.currency,), delta))
    # The count: each refund once, by its id when the charge embeds its refunds, else by the charge total
    # it brought. The charge's refunds are the larger of the two sets, so a refund seen once by id and
    # once by total is not counted twice, and an out-of-order refund (its total below the mark) counts.
    before = _refund_count(conn, r.charge_id)
    conn.executemany(
        "INSERT INTO stripe_refunds (charge_id, key, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (charge_id, key) DO UPDATE SET updated_at = excluded.updated_at",
        [(r.charge_id, f"id:{i}", now) for i in r.refund_ids]
        + [(r.charge_id, f"total:{v}", now) for v in r.levels],
    )
    added = _refund_count(conn, r.charge_id) - before
    if added > 0:
        out.append(("stripe_refunds_total", (r.currency,), added))
    return out


def _refund_count(conn: sqlite3.Connection, charge_id: str) -> int:
    ids, totals = conn.execute(
        "SELECT sum(key LIKE 'id:%'), sum(key LIKE 'total:%') FROM stripe_refunds WHERE charge_id=?",
        (charge_id,),
    ).fetchone()
    return max(ids or 0, totals or 0)


def _stored(conn: sqlite3.Connection, sub_id: str) -> tuple[SubState | None, bool]:
    row = conn.execute(
        "SELECT status, currency, mrr, created, kind, canceled_counted FROM stripe_subscriptions WHERE id=?",
        (sub_id,),
    ).fetchone()
    if row is None:
        return None, False
    return SubState(sub_id, row[0], row[1], Fraction(row[2]), row[3], row[4]), bool(row[5])


def _write_subscription(conn: sqlite3.Connection, new: SubState) -> tuple[SubState | None, bool, bool]:
    """Store `new` unless a later state is stored (`SubState.order`).

    Returns:
        the state written (or None), whether this is the first cancel seen, whether it tied on time.
    """
    old, counted = _stored(conn, new.id)
    # Each subscription's cancellation counts once, from whichever event reports it, in any order.
    first_cancel = new.status == "canceled" and not counted
    tied = new.ties(old)
    if not new.supersedes(old):
        if first_cancel:
            conn.execute("UPDATE stripe_subscriptions SET canceled_counted=1 WHERE id=?", (new.id,))
        return None, first_cancel, tied
    conn.execute(
        "INSERT INTO stripe_subscriptions (id, status, currency, mrr, created, kind, canceled_counted) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status=excluded.status, "
        "currency=excluded.currency, mrr=excluded.mrr, created=excluded.created, kind=excluded.kind, "
        "canceled_counted=max(canceled_counted, excluded.canceled_counted)",
        (new.id, new.status, new.currency, str(new.mrr), new.created, new.kind, int(counted or first_cancel)),
    )
    return new, first_cancel, tied


def apply_snapshot(conn: sqlite3.Connection, states: list[SubState]) -> list[SubState]:
    """Reconciliation: store API snapshots that supersede what is stored; return those written.

    A snapshot never counts a cancellation: counters come from events only.
    """
    written = []
    for st in states:
        old, _counted = _stored(conn, st.id)
        if old is not None and (old.status, old.currency, old.mrr) == (st.status, st.currency, st.mrr):
            continue
        if not st.supersedes(old):
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


def _put_kv(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO kv (owner, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (owner, key) DO UPDATE SET value=excluded.value",
        (OWNER, key, value.encode()),
    )


def read_kv(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM kv WHERE owner=? AND key=?", (OWNER, key)).fetchone()
    if row is None:
        return None
    v = row[0]
    return v.decode() if isinstance(v, bytes) else str(v)
