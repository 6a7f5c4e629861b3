"""DORA's four keys as pure functions over a deployment history, with an explicit `now` (no I/O).

Definitions (docs/dora.md has the long form and how they differ from Four Keys and DevLake):

- deployment: a deployment whose status became `success`, timed by that status. A deployment's outcome
  is its earliest terminal status (`success`, `failure`, `error`); later ones (`inactive` when a newer
  deployment replaces it, a late `failure`) do not change it, so redeliveries and out-of-order events
  give the same answer.
- lead time for changes: success time minus the commit time of each commit the deployment brought
  (since the previous successful deployment of the same environment); non-positive values are dropped.
- change failure rate (`ChangeFailure`, DORA's by default): successful deployments that caused an
  incident (the latest successful deployment of the incident's environment before it opened) over
  successful deployments (`incidents`: DORA, Four Keys, DevLake); or failed deployment runs
  (`failure`/`error`) over deployments that ended (`deployments`); or both over all that ended (`both`).
- failed-deployment recovery time, by cause: `incident` (opened -> closed, in the incident's
  environment) and `failed_deployment` (the first failed deployment of a streak -> the next success of
  that environment); the headline median follows the change failure definition.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "CAUSES",
    "DAY",
    "DEFAULT_ENVIRONMENT",
    "FAILED",
    "LEAD_TIME_BUCKETS",
    "RECOVERY_TIME_BUCKETS",
    "TERMINAL",
    "WINDOWS",
    "ChangeFailure",
    "Deployment",
    "EnvReport",
    "Incident",
    "Push",
    "WindowKeys",
    "analyze_repo",
    "band",
    "brought_commits",
    "document",
    "merge_deployment",
    "parse_time",
]

DAY = 86_400.0
#: Rolling windows of the gauges and of GET /dora.
WINDOWS: dict[str, float] = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
TERMINAL = frozenset({"success", "failure", "error"})
FAILED = frozenset({"failure", "error"})
#: What counts as a change failure: incidents (DORA, Four Keys, DevLake), failed runs, or both.
ChangeFailure = Literal["incidents", "deployments", "both"]
#: Recovery time causes (the `cause` label).
CAUSES = ("incident", "failed_deployment")
#: The environment an incident concerns when it does not say (DORA measures production).
DEFAULT_ENVIRONMENT = "production"
#: 1 min .. 30 days, the range the DORA report's lead-time answers span.
LEAD_TIME_BUCKETS = (
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    DAY,
    2 * DAY,
    4 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
)
RECOVERY_TIME_BUCKETS = LEAD_TIME_BUCKETS
#: Commits walked back per deployment at most (a deployment of a long-lived branch cannot stall a recompute).
MAX_COMMITS = 5000


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment of one repository to one environment.

    `commits` holds the commits the deployment brought when a source knows them (API `compare`, CI
    payload) as `(sha, unix time)`; None means "derive them from the pushes seen".
    """

    key: str
    sha: str
    created_at: float
    state: str
    state_at: float
    commits: tuple[tuple[str, float], ...] | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True, slots=True)
class Push:
    """A push to a branch: `before` -> `after`, its commits oldest first as `(sha, unix time)`."""

    after: str
    before: str
    commits: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Incident:
    """An issue carrying the incident label: opened, closed when `closed_at` is set, in `environment`."""

    number: int
    opened_at: float
    closed_at: float | None = None
    environment: str = DEFAULT_ENVIRONMENT


@dataclass(slots=True)
class WindowKeys:
    """The four keys of one environment over one window; None where the window has no data."""

    deployments: int = 0  # successful deployments
    ended: int = 0  # deployments that ended (success, failure, error)
    failed: int = 0  # change failures by the definition in use
    considered: int = 0  # the change failure rate's denominator by the definition in use
    frequency_per_day: float = 0.0
    change_failure_ratio: float | None = None
    lead_time_median_seconds: float | None = None
    recovery_time_median_seconds: float | None = None
    recovery_by_cause: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "deployments": self.deployments,
            "deployments_ended": self.ended,
            "failed_deployments": self.failed,
            "change_failure_denominator": self.considered,
            "deployment_frequency_per_day": self.frequency_per_day,
            "change_failure_rate": self.change_failure_ratio,
            "lead_time_for_changes_median_seconds": self.lead_time_median_seconds,
            "failed_deployment_recovery_time_median_seconds": self.recovery_time_median_seconds,
            "recovery_time_median_seconds_by_cause": dict(self.recovery_by_cause),
            "bands": {
                "deployment_frequency": band("deployment_frequency", self.frequency_per_day),
                "change_failure_rate": band("change_failure_rate", self.change_failure_ratio),
                "lead_time_for_changes": band("lead_time_for_changes", self.lead_time_median_seconds),
                "failed_deployment_recovery_time": band(
                    "failed_deployment_recovery_time", self.recovery_time_median_seconds
                ),
            },
        }


@dataclass(slots=True)
class EnvReport:
    """Everything the metrics and /dora need for one repository/environment."""

    counts: dict[str, int] = field(default_factory=dict)  # terminal state -> deployments, all history
    lead_times: list[float] = field(default_factory=list)  # all history
    recovery_times: dict[str, list[float]] = field(default_factory=dict)  # cause -> all history
    last_success_at: float | None = None
    windows: dict[str, WindowKeys] = field(default_factory=dict)


def document(reports: Mapping[str, Mapping[str, EnvReport]], now: float) -> dict[str, Any]:
    """The `GET /dora` document: the four keys and their bands per repository/environment and window."""
    out = []
    for repo in sorted(reports):
        for env, rep in sorted(reports[repo].items()):
            out.append(
                {
                    "repository": repo,
                    "environment": env,
                    "last_success_at": rep.last_success_at,
                    "windows": {name: wk.as_dict() for name, wk in rep.windows.items()},
                }
            )
    return {"generated_at": now, "windows": list(WINDOWS), "environments": out}


def parse_time(value: str | float | int | None) -> float | None:
    """Unix seconds from GitHub's ISO 8601 (`2019-05-15T15:20:53Z`, offsets allowed) or a number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        t = float(value)
    else:
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):  # naive times before 1970 can overflow localtime
            return None
    # Finite and between 1970 and year ~5138: anything else is not a deployment's time.
    return t if 0.0 <= t < 1e11 else None


def merge_deployment(old: Deployment | None, new: Deployment) -> Deployment:
    """Fold a newer observation of a deployment into what is known; order and repetition do not matter.

    The earliest terminal status wins; without one, the latest status wins.
    """
    if old is None:
        return new
    sha = new.sha or old.sha
    created = min(t for t in (old.created_at, new.created_at) if t) if old.created_at or new.created_at else 0
    commits = new.commits if new.commits is not None else old.commits
    if old.terminal and new.terminal:
        winner = old if old.state_at <= new.state_at else new
    elif old.terminal or new.terminal:
        winner = old if old.terminal else new
    else:
        winner = old if old.state_at > new.state_at else new
    return replace(
        old, sha=sha, created_at=created, state=winner.state, state_at=winner.state_at, commits=commits
    )


def _commit_index(pushes: Iterable[Push]) -> dict[str, tuple[Push, int]]:
    index: dict[str, tuple[Push, int]] = {}
    for push in pushes:
        for i, (sha, _t) in enumerate(push.commits):
            index[sha] = (push, i)
    return index


def brought_commits(
    sha: str, previous_sha: str | None, index: Mapping[str, tuple[Push, int]]
) -> list[tuple[str, float]]:
    """Commits from `sha` back to (not including) `previous_sha`, following pushes' `before` links.

    Stops at the previous deployment's commit, at a commit no push told us about, or after MAX_COMMITS.
    """
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    cur: str | None = sha
    while cur and cur != previous_sha and cur not in seen and len(out) < MAX_COMMITS:
        hit = index.get(cur)
        if hit is None:
            break
        push, i = hit
        cur = None
        for commit in reversed(push.commits[: i + 1]):
            if commit[0] == previous_sha or commit[0] in seen:
                return out
            seen.add(commit[0])
            out.append(commit)
        cur = push.before
    return out


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def analyze_repo(
    deployments: Mapping[str, Iterable[Deployment]],
    pushes: Iterable[Push],
    incidents: Iterable[Incident],
    now: float,
    windows: Mapping[str, float] = WINDOWS,
    change_failure: ChangeFailure = "incidents",
    incidents_tracked: bool = True,
) -> dict[str, EnvReport]:
    """The four keys of every environment of one repository.

    Args:
        deployments: environment -> its deployments (any order).
        pushes: the repository's pushes (commit times for lead time).
        incidents: the repository's incidents, each naming its environment.
        now: the end of every window, Unix seconds.
        windows: window name -> length in seconds.
        change_failure: what a change failure is (`ChangeFailure`); the headline recovery time follows it.
        incidents_tracked: False when no incident source is configured: an incident-based rate is then
            unknown (None), never a misleading 0.
    """
    index = _commit_index(pushes)
    ended = {
        env: sorted((d for d in deps if d.terminal), key=lambda d: (d.state_at, d.key))
        for env, deps in deployments.items()
    }
    # An incident is blamed on the latest successful deployment OF ITS ENVIRONMENT before it opened
    # (DORA: a change to production that led to degraded service); a staging success is never blamed
    # for a production incident.
    blamed: set[tuple[str, str]] = set()
    incident_recoveries: dict[str, list[tuple[float, float]]] = {}  # env -> (closed_at, seconds)
    for inc in incidents:
        env = inc.environment
        if inc.closed_at is not None and inc.closed_at > inc.opened_at:
            incident_recoveries.setdefault(env, []).append((inc.closed_at, inc.closed_at - inc.opened_at))
        culprit = None
        for d in ended.get(env, ()):
            if d.state_at > inc.opened_at:
                break
            if d.state == "success":
                culprit = d.key
        if culprit is not None:
            blamed.add((env, culprit))

    use_incidents = change_failure in ("incidents", "both")
    use_runs = change_failure in ("deployments", "both")
    reports: dict[str, EnvReport] = {}
    for env, deps in ended.items():
        rep = EnvReport()
        lead: list[tuple[float, float]] = []  # (deployed at, seconds)
        recov: dict[str, list[tuple[float, float]]] = {
            "incident": sorted(incident_recoveries.get(env, ())),
            "failed_deployment": [],
        }
        changes: list[tuple[float, bool, bool]] = []  # (ended at, is a success, counted as a change failure)
        previous_sha: str | None = None
        failing_since: float | None = None
        for d in deps:
            rep.counts[d.state] = rep.counts.get(d.state, 0) + 1
            if d.state in FAILED:
                changes.append((d.state_at, False, use_runs))
                if failing_since is None:
                    failing_since = d.state_at
                continue
            changes.append((d.state_at, True, use_incidents and (env, d.key) in blamed))
            commits = d.commits if d.commits is not None else brought_commits(d.sha, previous_sha, index)
            lead.extend((d.state_at, d.state_at - t) for _sha, t in commits if d.state_at - t > 0)
            if failing_since is not None:
                recov["failed_deployment"].append((d.state_at, d.state_at - failing_since))
                failing_since = None
            previous_sha = d.sha
            rep.last_success_at = d.state_at
        rep.lead_times = [s for _t, s in lead]
        rep.recovery_times = {cause: [s for _t, s in recov[cause]] for cause in CAUSES}
        headline = [
            c for c in CAUSES if (c == "incident" and use_incidents) or (c != "incident" and use_runs)
        ]
        for name, length in windows.items():
            start = now - length
            wk = WindowKeys()
            in_window = [(ok, failed) for t, ok, failed in changes if start < t <= now]
            wk.ended = len(in_window)
            wk.deployments = sum(1 for ok, _f in in_window if ok)
            wk.failed = sum(1 for _ok, failed in in_window if failed)
            # Four Keys and DevLake divide by deployments (successes); counting failed runs needs them all.
            wk.considered = wk.ended if use_runs else wk.deployments
            known = incidents_tracked or not use_incidents or use_runs
            wk.change_failure_ratio = wk.failed / wk.considered if wk.considered and known else None
            wk.frequency_per_day = wk.deployments / (length / DAY)
            wk.lead_time_median_seconds = _median([s for t, s in lead if start < t <= now])
            for cause in CAUSES:
                wk.recovery_by_cause[cause] = _median([s for t, s in recov[cause] if start < t <= now])
            wk.recovery_time_median_seconds = _median(
                [s for cause in headline for t, s in recov[cause] if start < t <= now]
            )
            rep.windows[name] = wk
        reports[env] = rep
    return reports


# Accelerate State of DevOps Report 2023, "software delivery performance" clusters (elite, high,
# medium, low), read as boundaries: the upper bound of each band, lower values are better
# (frequency is turned into days between deployments).
_BANDS: dict[str, tuple[float, float, float]] = {
    # on demand (daily or more) / between once a day and once a week / once a week .. once a month
    "deployment_frequency": (1.0, 7.0, 30.0),
    # less than a day / a day .. a week / a week .. a month
    "lead_time_for_changes": (DAY, 7 * DAY, 30 * DAY),
    # 5% / 10% / 15% (low: 64%)
    "change_failure_rate": (0.05, 0.10, 0.15),
    # less than an hour / less than a day / a day .. a week
    "failed_deployment_recovery_time": (3600.0, DAY, 7 * DAY),
}


def band(key: str, value: float | None) -> str | None:
    """DORA performance band (`elite`, `high`, `medium`, `low`) of one key's value; None without data.

    Args:
        key: `deployment_frequency` (per day), `lead_time_for_changes` (s), `change_failure_rate`
            (ratio) or `failed_deployment_recovery_time` (s).
        value: the key's value.
    """
    if value is None:
        return None
    if key == "deployment_frequency":
        if value <= 0:
            return "low"
        value = 1.0 / value  # days between deployments
    elite, high, medium = _BANDS[key]
    if value <= elite:
        return "elite"
    if value <= high:
        return "high"
    if value <= medium:
        return "medium"
    return "low"
