"""What a source stores, declared as data: its tables and later migrations, in the order they apply.

Each stateful source keeps one ordered tuple of steps beside its SQL (`stripe/state.py`,
`github/store_sql.py`) and declares it as its `storage`; the app registers it with the store
(`StateStore.register`), which applies it with `migrate` each time it opens, before any source reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["AddColumn", "Migration", "Tables", "migrate"]


@dataclass(frozen=True, slots=True)
class Tables:
    """A script of `CREATE ... IF NOT EXISTS` statements: the tables as first released."""

    sql: str


@dataclass(frozen=True, slots=True)
class AddColumn:
    """A column added after the first release (SQLite has no `ADD COLUMN IF NOT EXISTS`)."""

    table: str
    column: str
    definition: str


Migration = Tables | AddColumn


def migrate(conn: sqlite3.Connection, steps: Sequence[Migration]) -> None:
    """Apply every step that is not applied yet, in order (idempotent: each step checks first)."""
    for step in steps:
        if isinstance(step, Tables):
            conn.executescript(step.sql)
            continue
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({step.table})")}
        if step.column not in have:
            conn.execute(f"ALTER TABLE {step.table} ADD COLUMN {step.column} {step.definition}")
