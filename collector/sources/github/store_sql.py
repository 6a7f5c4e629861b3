"""All of the DORA history's SQL: its tables (`MIGRATIONS`), reading it back, writing one change.

Every function here runs on the state store's thread. `write` records the webhook delivery id in the
same transaction as the change, so a redelivery after a crash is recognised.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from collector import dora
from collector.dora import Deployment, Incident, Push
from collector.sources.github.history import Change, Merged, StoredDeployment
from collector.sources.storage import AddColumn, Migration, Tables, migrate

__all__ = ["MIGRATIONS", "Rows", "create_tables", "forget_deliveries", "load", "write"]

_TABLES = """
CREATE TABLE IF NOT EXISTS github_deployments (
    repo TEXT NOT NULL, key TEXT NOT NULL, env TEXT NOT NULL, sha TEXT NOT NULL,
    created_at REAL NOT NULL, state TEXT NOT NULL, state_at REAL NOT NULL, commits TEXT,
    source TEXT NOT NULL, PRIMARY KEY (repo, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS github_pushes (
    repo TEXT NOT NULL, after TEXT NOT NULL, before TEXT NOT NULL, commits TEXT NOT NULL,
    PRIMARY KEY (repo, after)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS github_incidents (
    repo TEXT NOT NULL, number INTEGER NOT NULL, opened_at REAL NOT NULL, closed_at REAL,
    PRIMARY KEY (repo, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS github_deliveries (id TEXT PRIMARY KEY, received_at REAL NOT NULL) WITHOUT ROWID;
"""

#: The history's storage, in order: the tables as first released, then the columns added since.
MIGRATIONS: tuple[Migration, ...] = (
    Tables(_TABLES),
    AddColumn("github_incidents", "env", f"TEXT NOT NULL DEFAULT '{dora.DEFAULT_ENVIRONMENT}'"),
)


def create_tables(conn: sqlite3.Connection) -> None:
    """Apply `MIGRATIONS` (the store does, from the sources' `storage`; tests with a bare connection call it)."""
    migrate(conn, MIGRATIONS)


@dataclass
class Rows:
    """The stored history, decoded: what `History.restore` is rebuilt from."""

    deployments: list[tuple[str, StoredDeployment]]  # repo, (env, deployment, source)
    pushes: list[tuple[str, Push]]
    incidents: list[tuple[str, Incident]]


def _commits(text: str | None) -> tuple[tuple[str, float], ...] | None:
    if text is None:
        return None
    return tuple((str(s), float(t)) for s, t in json.loads(text))


def _dump_commits(commits: tuple[tuple[str, float], ...] | None) -> str | None:
    return None if commits is None else json.dumps([list(c) for c in commits])


def load(conn: sqlite3.Connection) -> Rows:
    """The whole stored history (the tables must exist: `create_tables`)."""
    deployments = [
        (repo, (env, Deployment(key, sha, created, state, state_at, _commits(commits)), source))
        for repo, key, env, sha, created, state, state_at, commits, source in conn.execute(
            "SELECT repo, key, env, sha, created_at, state, state_at, commits, source FROM github_deployments"
        )
    ]
    pushes = [
        (repo, Push(after, before, _commits(commits) or ()))
        for repo, after, before, commits in conn.execute(
            "SELECT repo, after, before, commits FROM github_pushes"
        )
    ]
    incidents = [
        (repo, Incident(number, opened, closed, env))
        for repo, number, opened, closed, env in conn.execute(
            "SELECT repo, number, opened_at, closed_at, env FROM github_incidents"
        )
    ]
    return Rows(deployments, pushes, incidents)


def write(
    conn: sqlite3.Connection, delivery_id: str | None, now: float, merged: list[Merged], change: Change
) -> bool:
    """Store one change (its deployments already merged); False when the delivery was seen before."""
    if delivery_id is not None:
        if conn.execute("SELECT 1 FROM github_deliveries WHERE id=?", (delivery_id,)).fetchone():
            return False
        conn.execute("INSERT INTO github_deliveries (id, received_at) VALUES (?, ?)", (delivery_id, now))
    conn.executemany(
        "INSERT OR REPLACE INTO github_deployments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (repo, d.key, env, d.sha, d.created_at, d.state, d.state_at, _dump_commits(d.commits), source)
            for repo, env, d, source in merged
        ],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO github_pushes VALUES (?, ?, ?, ?)",
        [(repo, p.after, p.before, _dump_commits(p.commits)) for repo, p in change.pushes],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO github_incidents (repo, number, opened_at, closed_at, env) "
        "VALUES (?, ?, ?, ?, ?)",
        [(repo, i.number, i.opened_at, i.closed_at, i.environment) for repo, i in change.incidents],
    )
    conn.executemany("DELETE FROM github_incidents WHERE repo=? AND number=?", list(change.incidents_removed))
    return True


def forget_deliveries(conn: sqlite3.Connection, before: float) -> None:
    """Forget delivery ids received before `before` (GitHub redelivers for a few days only)."""
    conn.execute("DELETE FROM github_deliveries WHERE received_at < ?", (before,))
