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
"""

#: kv owner for the poll cursor.
OWNER = "stripe"


def create_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)


@dataclass
class Loaded:
    counters: list[tuple[str, tuple[str, ...], int]]
    subscriptions: list[SubState]
    last_event_created: int | None


def load(conn: sqlite3.Connection) -> Loaded:
    """Everything the in-memory view is rebuilt from at start."""
    create_tables(conn)
    counters = [
        (name, tuple(json.loads(labels)), int(value))
        for name, labels, value in conn.execute("SELECT name, labels, value FROM stripe_counters")
    ]
    subs = [
        SubState(i, s, c, Fraction(m), int(cr))
        for i, s, c, m, cr in conn.execute(
            "SELECT id, status, currency, mrr, created FROM stripe_subscriptions"
        )
    ]
    last = conn.execute("SELECT max(created) FROM stripe_events").fetchone()[0]
    return Loaded(counters, subs, last)


@dataclass
class Applied:
    """The committed result of one event: deltas to mirror in memory, the subscription state written."""

    duplicate: bool = False
    counters: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)
    subscription: SubState | None = None


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
            applied.subscription, canceled = _write_subscription(conn, eff.subscription)
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
    if delta <= 0:
        return []
    return [("stripe_refund_value_total", (r.currency,), delta), ("stripe_refunds_total", (r.currency,), 1)]


def _write_subscription(conn: sqlite3.Connection, new: SubState) -> tuple[SubState | None, bool]:
    """Store `new` unless a newer state is stored; True as second value when it is the first cancel seen."""
    row = conn.execute(
        "SELECT status, currency, mrr, created, canceled_counted FROM stripe_subscriptions WHERE id=?",
        (new.id,),
    ).fetchone()
    old = SubState(new.id, row[0], row[1], Fraction(row[2]), row[3]) if row else None
    counted = bool(row[4]) if row else False
    # Each subscription's cancellation counts once, from whichever event reports it, in any order.
    first_cancel = new.status == "canceled" and not counted
    if not new.supersedes(old):
        if first_cancel:
            conn.execute("UPDATE stripe_subscriptions SET canceled_counted=1 WHERE id=?", (new.id,))
        return None, first_cancel
    conn.execute(
        "INSERT INTO stripe_subscriptions (id, status, currency, mrr, created, canceled_counted) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status=excluded.status, "
        "currency=excluded.currency, mrr=excluded.mrr, created=excluded.created, "
        "canceled_counted=max(canceled_counted, excluded.canceled_counted)",
        (new.id, new.status, new.currency, str(new.mrr), new.created, int(counted or first_cancel)),
    )
    return new, first_cancel


def apply_snapshot(conn: sqlite3.Connection, states: list[SubState]) -> list[SubState]:
    """Reconciliation: store API snapshots that supersede what is stored; return those written.

    A snapshot never counts a cancellation: counters come from events only.
    """
    written = []
    for st in states:
        row = conn.execute(
            "SELECT status, currency, mrr, created FROM stripe_subscriptions WHERE id=?", (st.id,)
        ).fetchone()
        old = SubState(st.id, row[0], row[1], Fraction(row[2]), row[3]) if row else None
        if old is not None and (old.status, old.currency, old.mrr) == (st.status, st.currency, st.mrr):
            continue
        if not st.supersedes(old):
            continue
        conn.execute(
            "INSERT INTO stripe_subscriptions (id, status, currency, mrr, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status=excluded.status, currency=excluded.currency, "
            "mrr=excluded.mrr, created=excluded.created",
            (st.id, st.status, st.currency, str(st.mrr), st.created),
        )
        written.append(st)
    return written


def prune(conn: sqlite3.Connection, events_before: float, charges_before: float) -> int:
    """Forget event ids older than any redelivery window, and stale refund marks."""
    n = conn.execute("DELETE FROM stripe_events WHERE seen_at < ?", (events_before,)).rowcount
    conn.execute("DELETE FROM stripe_charges WHERE updated_at < ?", (charges_before,))
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
