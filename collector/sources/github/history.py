"""The deployment history and its transitions, pure (no I/O, no metrics, no clock).

What a source learns (deployments, pushes, incidents) arrives as a `Change` (`events.parse_event`,
the poller, `POST /deployments`); `History.merge` folds its deployments into what is known
(`dora.merge_deployment`: order and repetition do not matter), `History.commit` takes the merged
change once it is stored, and `History.inputs` hands one repository's history to `dora.analyze_repo`
(history in, figures out). The I/O shell around it is `engine.DoraEngine`; the SQL is `store_sql`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from collector import dora
from collector.dora import Deployment, Incident, Push

__all__ = ["Change", "History", "Merged", "RepoHistory", "StoredDeployment", "histogram_cells"]

#: What is kept per deployment key: environment, deployment, the source that reported it.
StoredDeployment = tuple[str, Deployment, str]
#: One merged deployment of a change: repository, environment, deployment, source.
Merged = tuple[str, str, Deployment, str]


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

    def repositories(self) -> set[str]:
        """The repositories this change touches (their figures need recomputing)."""
        touched = {r for r, *_ in self.deployments} | {r for r, _ in self.pushes}
        return touched | {r for r, _ in self.incidents} | {r for r, _ in self.incidents_removed}


@dataclass
class RepoHistory:
    """One repository's history."""

    deployments: dict[str, StoredDeployment] = field(default_factory=dict)  # key -> env, dep, source
    pushes: dict[str, Push] = field(default_factory=dict)  # after sha -> push
    incidents: dict[int, Incident] = field(default_factory=dict)


_EMPTY = RepoHistory()


class History:
    """Every repository's history, in memory (the store holds the same, `store_sql`)."""

    def __init__(self) -> None:
        self.repos: dict[str, RepoHistory] = {}

    def _repo(self, repo: str) -> RepoHistory:
        r = self.repos.get(repo)
        if r is None:
            r = self.repos[repo] = RepoHistory()
        return r

    def restore(
        self,
        deployments: Iterable[tuple[str, StoredDeployment]],
        pushes: Iterable[tuple[str, Push]],
        incidents: Iterable[tuple[str, Incident]],
    ) -> None:
        """Add stored history (at start, before any change)."""
        for repo, (env, dep, source) in deployments:
            self._repo(repo).deployments[dep.key] = (env, dep, source)
        for repo, push in pushes:
            self._repo(repo).pushes[push.after] = push
        for repo, inc in incidents:
            self._repo(repo).incidents[inc.number] = inc

    def merge(self, change: Change) -> list[Merged]:
        """The change's deployments folded into what is known (nothing is modified).

        A known deployment keeps its first environment; several statuses of one deployment within
        the change (one poll may carry them) fold into each other in order.
        """
        merged: list[Merged] = []
        for repo, env, dep, source in change.deployments:
            old = self.repos.get(repo, _EMPTY).deployments.get(dep.key)
            for r, e, d, s in reversed(merged):
                if r == repo and d.key == dep.key:
                    old = (e, d, s)
                    break
            merged.append(
                (repo, old[0] if old else env, dora.merge_deployment(old[1] if old else None, dep), source)
            )
        return merged

    def commit(self, merged: Sequence[Merged], change: Change) -> set[str]:
        """Take a stored change (its deployments from `merge`); returns the repositories touched."""
        for repo, env, dep, source in merged:
            self._repo(repo).deployments[dep.key] = (env, dep, source)
        for repo, push in change.pushes:
            self._repo(repo).pushes[push.after] = push
        for repo, inc in change.incidents:
            self._repo(repo).incidents[inc.number] = inc
        for repo, number in change.incidents_removed:
            self._repo(repo).incidents.pop(number, None)
        return change.repositories()

    def deployments_of(self, repo: str) -> dict[str, StoredDeployment]:
        return self.repos.get(repo, _EMPTY).deployments

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

    def inputs(self, repo: str) -> tuple[dict[str, list[Deployment]], list[Push], list[Incident]] | None:
        """A copy of one repository's history as `dora.analyze_repo` takes it (None: unknown)."""
        r = self.repos.get(repo)
        if r is None:
            return None
        by_env: dict[str, list[Deployment]] = {}
        for env, dep, _source in r.deployments.values():
            by_env.setdefault(env, []).append(dep)
        return by_env, list(r.pushes.values()), list(r.incidents.values())


def histogram_cells(buckets: Sequence[float], values: Iterable[float]) -> list[float]:
    """A histogram series from all observations: one count per bucket, the +Inf count, then the sum."""
    cells: list[float] = [0] * (len(buckets) + 1) + [0.0]
    for v in values:
        cells[bisect_left(buckets, v)] += 1
        cells[-1] += v
    return cells
