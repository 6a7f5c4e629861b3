"""The DORA engine: the I/O shell around the pure history, shared by the GitHub and CI sources.

Each change (from a webhook, a poll or `POST /deployments`) is merged by `history.History`, written
to the state store in one transaction with the webhook delivery id (`store_sql.write`), committed in
memory, and the DORA figures of the touched repositories are recomputed from the whole history with
`collector.dora` and published. Counters and histograms are derived from the history too, so they
survive restarts exactly. One engine per collector, created by the app and passed to both sources.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from collector import dora
from collector.metrics import Family, MetricState
from collector.source import SourceContext
from collector.sources.github import store_sql
from collector.sources.github.history import (
    Change,
    History,
    RepoHistory,
    StoredDeployment,
    histogram_cells,
)
from collector.store import StateStore

__all__ = ["DELIVERY_RETENTION", "DoraEngine", "dora_engine"]

#: GitHub lets a delivery be redelivered for a few days; ids older than this are forgotten.
DELIVERY_RETENTION = 30 * dora.DAY


class DoraEngine:
    """History in memory (mirrored in SQLite) and the DORA metric families computed from it."""

    """History in memory (mirrored in SQLite) and the DORA metric families computed from it.

    Args:
        store: the state store.
        clock: wall clock (the figures are computed at its now).
        log: where loading is reported.
        metrics: where the DORA families are registered.
        change_failure: what counts as a change failure (`COLLECTOR_GITHUB__CHANGE_FAILURE`).
        incidents_tracked: whether incident issues are tracked (else no incident-based ratio).
    """

    def __init__(
        self,
        store: StateStore,
        clock: Callable[[], float],
        log: logging.Logger,
        metrics: MetricState,
        change_failure: dora.ChangeFailure = "incidents",
        incidents_tracked: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock
        self.log = log
        self.history = History()
        self.reports: dict[str, dict[str, dora.EnvReport]] = {}
        # One writer at a time: merge in memory, write, then publish; events of one repo never interleave.
        self._lock = asyncio.Lock()
        self._loaded = False
        self._last_refresh = 0.0
        self._refresh_lock = asyncio.Lock()
        self._dirty: set[str] = set()  # repositories changed since their last recompute
        m = metrics
        env = ("repository", "environment")
        self.total = m.counter(
            "deployments_total", "Deployments by outcome (earliest terminal status).", (*env, "status")
        )
        self.change_failure = change_failure
        self.incidents_tracked = incidents_tracked
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
    def for_source(cls, ctx: SourceContext) -> DoraEngine:
        """An engine with the DORA definitions of `ctx`'s settings (github's; defaults for the others)."""
        return cls(
            ctx.store,
            ctx.clock,
            ctx.log,
            ctx.metrics,
            getattr(ctx.settings, "change_failure", "incidents"),
            bool(getattr(ctx.settings, "incident_label", None)),
        )

    @property
    def repos(self) -> dict[str, RepoHistory]:
        """Every repository's history (`history.RepoHistory`)."""
        return self.history.repos

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
            # Its tables exist: the store applied the sources' `storage` (`store_sql.MIGRATIONS`) on open.
            rows = await self.store.call(store_sql.load)
            self.history.restore(rows.deployments, rows.pushes, rows.incidents)
            self._loaded = True
            self.log.info(
                "deployment history loaded",
                extra={"repositories": len(self.repos), "deployments": len(rows.deployments)},
            )
        await self.refresh()

    # -- changes -------------------------------------------------------------------------------------
    async def apply(self, change: Change, delivery_id: str | None = None) -> bool:
        """Merge, persist (with the delivery id) and publish a change.

        Returns:
            False when `delivery_id` was seen before (nothing applied), True otherwise.
        """
        await self.ready()
        async with self._lock:
            merged = self.history.merge(change)
            now = self.clock()
            applied = await self.store.transaction(
                lambda conn: store_sql.write(conn, delivery_id, now, merged, change)
            )
            if not applied:
                return False
            touched = self.history.commit(merged, change)
        await self.refresh(touched)
        return True

    async def forget_old_deliveries(self) -> None:
        cutoff = self.clock() - DELIVERY_RETENTION
        await self.store.call(functools.partial(store_sql.forget_deliveries, before=cutoff))

    # -- queries for the poller ----------------------------------------------------------------------
    def deployments_of(self, repo: str) -> dict[str, StoredDeployment]:
        return self.history.deployments_of(repo)

    def previous_success_sha(self, repo: str, env: str, before: float) -> str | None:
        """The sha of the latest successful deployment of `env` that ended before `before`."""
        return self.history.previous_success_sha(repo, env, before)

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
                inputs = self.history.inputs(repo)
                if inputs is None:
                    continue
                by_env, pushes, incidents = inputs
                reports = await asyncio.to_thread(
                    dora.analyze_repo,
                    by_env,
                    pushes,
                    incidents,
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
        return dora.document(self.reports, self._last_refresh)


def _set_histogram(fam: Family, key: tuple[str, ...], values: list[float]) -> None:
    if not values and key not in fam.series:
        return
    fam.set_cells(key, histogram_cells(fam.buckets, values))


def dora_engine(ctx: SourceContext) -> DoraEngine:
    """Build the engine the GitHub and CI sources share (`github.source.DORA`): one per app."""
    return DoraEngine.for_source(ctx)
