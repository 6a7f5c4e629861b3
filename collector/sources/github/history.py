"""The deployment history shared by the GitHub and CI sources: SQLite tables, memory, metrics, /dora.

Everything a source learns (deployments, pushes, incidents) is merged here, written to the state store
in one transaction with the webhook delivery id (so a redelivery after a crash is recognised), and the
DORA metrics of the touched repository are recomputed from the whole history with `collector.dora`.
Counters and histograms are derived from the history too, so they survive restarts exactly.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import weakref
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from collector import dora
from collector.dora import Deployment, Incident, Push
from collector.metrics import Family
from collector.source import SourceContext
from collector.store import StateStore

__all__ = ["Change", "DoraEngine"]

_SCHEMA = """
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
#: Columns added after the first release: (table, column, definition).
_ADDED = (("github_incidents", "env", f"TEXT NOT NULL DEFAULT '{dora.DEFAULT_ENVIRONMENT}'"),)
#: GitHub lets a delivery be redelivered for a few days; ids older than this are forgotten.
DELIVERY_RETENTION = 30 * dora.DAY

# One engine per running collector (keyed by its state store), shared by the github and deployments sources.
_ENGINES: weakref.WeakKeyDictionary[StateStore, DoraEngine] = weakref.WeakKeyDictionary()


@dataclass
class Change:
    """What one event or poll taught us; applied atomically."""

    deployments: list[tuple[str, str, Deployment, str]] = field(
        default_factory=list
    )  # repo, env, dep, source
    pushes: list[tuple[str, Push]] = field(default_factory=list)
    incidents: list[tuple[str, Incident]] = field(default_factory=list)
    incidents_removed: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.deployments or self.pushes or self.incidents or self.incidents_removed)


@dataclass
class _Repo:
    deployments: dict[str, tuple[str, Deployment, str]] = field(
        default_factory=dict
    )  # key -> env, dep, source
    pushes: dict[str, Push] = field(default_factory=dict)  # after sha -> push
    incidents: dict[int, Incident] = field(default_factory=dict)


class DoraEngine:
    """History in memory (mirrored in SQLite) and the DORA metric families computed from it."""

    def __init__(self, ctx: SourceContext) -> None:
        self.store = ctx.store
        self.clock = ctx.clock
        self.log = ctx.log
        self.repos: dict[str, _Repo] = {}
        self.reports: dict[str, dict[str, dora.EnvReport]] = {}
        # One writer at a time: merge in memory, write, then publish; events of one repo never interleave.
        self._lock = asyncio.Lock()
        self._loaded = False
        self._last_refresh = 0.0
        self._refresh_lock = asyncio.Lock()
        self._dirty: set[str] = set()  # repositories changed since their last recompute
        self.route_owner: object | None = None  # the source that serves GET /dora
        m = ctx.metrics
        env = ("repository", "environment")
        self.total = m.counter(
            "deployments_total", "Deployments by outcome (earliest terminal status).", (*env, "status")
        )
        # DORA definitions (settings of the source that created the engine: github's when enabled).
        self.change_failure: dora.ChangeFailure = getattr(ctx.settings, "change_failure", "incidents")
        self.incidents_tracked = bool(getattr(ctx.settings, "incident_label", None))
        self.lead = m.histogram(
            "deployment_lead_time_seconds",
            "Lead time for changes: successful deployment time minus each brought commit's time.",
            env,
            buckets=dora.LEAD_TIME_BUCKETS,
        )
        self.recovery = m.histogram(
            "deployment_recovery_time_seconds",
            "Time to recover, by cause: incident (opened to closed) or failed_deployment (first failed "
            "deployment of a streak to the next success).",
            (*env, "cause"),
            buckets=dora.RECOVERY_TIME_BUCKETS,
        )
        self.cfr = m.gauge(
            "deployment_change_failure_ratio",
            "Change failures over deployments in the window, as COLLECTOR_GITHUB__CHANGE_FAILURE defines "
            "them (default: deployments that caused an incident over successful deployments; absent: "
            "no deployment, or incidents not tracked).",
            (*env, "window"),
        )
        self.freq = m.gauge(
            "deployment_frequency_per_day",
            "Successful deployments per day over the window.",
            (*env, "window"),
        )
        self.last_success = m.gauge(
            "deployment_last_success_timestamp_seconds",
            "Time of the latest successful deployment, Unix seconds.",
            env,
        )

    @classmethod
    def of(cls, ctx: SourceContext) -> DoraEngine:
        """The engine of this collector (created by whichever source asks first)."""
        engine = _ENGINES.get(ctx.store)
        if engine is None:
            engine = _ENGINES[ctx.store] = cls(ctx)
        return engine

    # -- loading -------------------------------------------------------------------------------------
    async def ready(self) -> None:
        """Create the tables and load the history once (idempotent)."""
        if self._loaded:
            return
        for _ in range(200):  # a webhook may arrive before the app has opened the store: wait up to 10 s
            if self.store.is_open:
                break
            await asyncio.sleep(0.05)
        async with self._lock:
            if self._loaded:
                return
            rows = await self.store.call(_load)
            for repo, key, env, sha, created, state, state_at, commits, source in rows["deployments"]:
                dep = Deployment(key, sha, created, state, state_at, _commits(commits))
                self._repo(repo).deployments[key] = (env, dep, source)
            for repo, after, before, commits in rows["pushes"]:
                self._repo(repo).pushes[after] = Push(after, before, _commits(commits) or ())
            for repo, number, opened, closed, inc_env in rows["incidents"]:
                self._repo(repo).incidents[number] = Incident(number, opened, closed, inc_env)
            self._loaded = True
            self.log.info(
                "deployment history loaded",
                extra={"repositories": len(self.repos), "deployments": len(rows["deployments"])},
            )
        await self.refresh()

    def _repo(self, repo: str) -> _Repo:
        r = self.repos.get(repo)
        if r is None:
            r = self.repos[repo] = _Repo()
        return r

    # -- changes -------------------------------------------------------------------------------------
    async def apply(self, change: Change, delivery_id: str | None = None) -> bool:
        """Merge, persist (with the delivery id) and publish a change.

        Returns:
            False when `delivery_id` was seen before (nothing applied), True otherwise.
        """
        await self.ready()
        async with self._lock:
            merged: list[tuple[str, str, Deployment, str]] = []
            for repo, env, dep, source in change.deployments:
                old = self.repos.get(repo, _Repo()).deployments.get(dep.key)
                # Merging within the change too: one poll may carry several statuses of one deployment.
                for r, _e, d, _s in reversed(merged):
                    if r == repo and d.key == dep.key:
                        old = (_e, d, _s)
                        break
                merged.append(
                    (
                        repo,
                        old[0] if old else env,
                        dora.merge_deployment(old[1] if old else None, dep),
                        source,
                    )
                )
            now = self.clock()
            applied = await self.store.transaction(
                lambda conn: _write(conn, delivery_id, now, merged, change)
            )
            if not applied:
                return False
            for repo, env, dep, source in merged:
                self._repo(repo).deployments[dep.key] = (env, dep, source)
            for repo, push in change.pushes:
                self._repo(repo).pushes[push.after] = push
            for repo, inc in change.incidents:
                self._repo(repo).incidents[inc.number] = inc
            for repo, number in change.incidents_removed:
                self._repo(repo).incidents.pop(number, None)
        touched = {r for r, *_ in change.deployments} | {r for r, _ in change.pushes}
        touched |= {r for r, _ in change.incidents} | {r for r, _ in change.incidents_removed}
        await self.refresh(touched)
        return True

    async def forget_old_deliveries(self) -> None:
        cutoff = self.clock() - DELIVERY_RETENTION
        await self.store.call(
            lambda c: c.execute("DELETE FROM github_deliveries WHERE received_at < ?", (cutoff,))
        )

    # -- queries for the poller ----------------------------------------------------------------------
    def deployments_of(self, repo: str) -> dict[str, tuple[str, Deployment, str]]:
        return self.repos.get(repo, _Repo()).deployments

    def previous_success_sha(self, repo: str, env: str, before: float) -> str | None:
        """The sha of the latest successful deployment of `env` that ended before `before`."""
        best: Deployment | None = None
        for e, d, _s in self.deployments_of(repo).values():
            if (
                e == env
                and d.state == "success"
                and d.state_at < before
                and (best is None or d.state_at > best.state_at)
            ):
                best = d
        return best.sha if best else None

    # -- metrics ---------------------------------------------------------------------------------------
    def refresh_due(self, interval: float) -> bool:
        return self.clock() - self._last_refresh >= interval

    async def refresh(self, repos: Iterable[str] | None = None) -> None:
        """Recompute the reports and metric series of `repos` (all by default) at the clock's now.

        The maths runs in a worker thread over a copy of the history (a year of deployments takes
        ~0.2 s); concurrent calls coalesce, and each returns once its repositories are published.
        """
        self._dirty.update(self.repos if repos is None else repos)
        async with self._refresh_lock:
            if not self._dirty:
                return  # a refresh that started after our change already published it
            todo, self._dirty = self._dirty, set()
            now = self._last_refresh = self.clock()
            for repo in sorted(todo):
                r = self.repos.get(repo)
                if r is None:
                    continue
                by_env: dict[str, list[Deployment]] = {}
                for env, dep, _source in r.deployments.values():
                    by_env.setdefault(env, []).append(dep)
                reports = await asyncio.to_thread(
                    dora.analyze_repo,
                    by_env,
                    list(r.pushes.values()),
                    list(r.incidents.values()),
                    now,
                    dora.WINDOWS,
                    self.change_failure,
                    self.incidents_tracked,
                )
                self.reports[repo] = reports
                for env, rep in reports.items():
                    self._publish(repo, env, rep)

    def _publish(self, repo: str, env: str, rep: dora.EnvReport) -> None:
        key = (repo, env)
        for status in sorted(dora.TERMINAL):
            if status in rep.counts:
                self.total.set((*key, status), rep.counts[status])
        _set_histogram(self.lead, key, rep.lead_times)
        for cause in dora.CAUSES:
            _set_histogram(self.recovery, (*key, cause), rep.recovery_times.get(cause, []))
        if rep.last_success_at is not None:
            self.last_success.set(key, rep.last_success_at)
        for name, wk in rep.windows.items():
            self.freq.set((*key, name), wk.frequency_per_day)
            if wk.change_failure_ratio is None:
                self.cfr.remove((*key, name))
            else:
                self.cfr.set((*key, name), wk.change_failure_ratio)

    async def dora_json(self) -> dict[str, Any]:
        """GET /dora: the four keys and their bands per repository/environment and window."""
        await self.refresh()
        now = self._last_refresh
        out = []
        for repo in sorted(self.reports):
            for env, rep in sorted(self.reports[repo].items()):
                out.append(
                    {
                        "repository": repo,
                        "environment": env,
                        "last_success_at": rep.last_success_at,
                        "windows": {name: wk.as_dict() for name, wk in rep.windows.items()},
                    }
                )
        return {"generated_at": now, "windows": list(dora.WINDOWS), "environments": out}


def _set_histogram(fam: Family, key: tuple[str, ...], values: list[float]) -> None:
    if not values and key not in fam.series:
        return
    cells: list[Any] = [0] * (len(fam.buckets) + 1) + [0.0]
    for v in values:
        cells[bisect_left(fam.buckets, v)] += 1
        cells[-1] += v
    fam.series[fam.admit(key)] = cells
    fam.touch()


def _commits(text: str | None) -> tuple[tuple[str, float], ...] | None:
    if text is None:
        return None
    return tuple((str(s), float(t)) for s, t in json.loads(text))


def _dump_commits(commits: tuple[tuple[str, float], ...] | None) -> str | None:
    return None if commits is None else json.dumps([list(c) for c in commits])


def _load(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    conn.executescript(_SCHEMA)
    for table, column, definition in _ADDED:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    return {
        "deployments": conn.execute(
            "SELECT repo, key, env, sha, created_at, state, state_at, commits, source FROM github_deployments"
        ).fetchall(),
        "pushes": conn.execute("SELECT repo, after, before, commits FROM github_pushes").fetchall(),
        "incidents": conn.execute(
            "SELECT repo, number, opened_at, closed_at, env FROM github_incidents"
        ).fetchall(),
    }


def _write(
    conn: sqlite3.Connection,
    delivery_id: str | None,
    now: float,
    merged: list[tuple[str, str, Deployment, str]],
    change: Change,
) -> bool:
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
