"""Webhook payloads -> history changes: lean msgspec decoding of only the fields DORA needs (no I/O).

Each parser takes the raw body and the settings and returns a `Change`, or a short reason string when
the event is valid but not ours (another environment, a tag push, a workflow that is not a deployment).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Annotated

import msgspec

from collector import dora
from collector.dora import Deployment, Incident, Push
from collector.settings import GitHubSettings
from collector.sources.github.history import Change

__all__ = ["KNOWN_EVENTS", "PARSERS", "WORKFLOW_STATES", "deployment_key", "parse_event"]


# Every value is bounded at decode time: ids and numbers must fit the store's 64-bit integers.
_Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Name = Annotated[str, msgspec.Meta(max_length=1024)]


class _Repository(msgspec.Struct):
    full_name: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class _Deployment(msgspec.Struct):
    id: _Id
    sha: str
    environment: str
    created_at: str


class _DeploymentStatus(msgspec.Struct):
    state: str
    created_at: str


class _DeploymentEvent(msgspec.Struct):
    deployment: _Deployment
    repository: _Repository


class _DeploymentStatusEvent(msgspec.Struct):
    deployment_status: _DeploymentStatus
    deployment: _Deployment
    repository: _Repository


class _Commit(msgspec.Struct):
    id: str
    timestamp: str


class _PushEvent(msgspec.Struct):
    ref: str
    before: str
    after: str
    repository: _Repository
    deleted: bool = False
    commits: list[_Commit] = msgspec.field(default_factory=list)


class _Workflow(msgspec.Struct):
    name: str = ""
    path: str = ""


class _Run(msgspec.Struct):
    id: _Id
    head_sha: str
    status: str
    created_at: str
    updated_at: str
    conclusion: str | None = None
    name: str | None = None
    path: str = ""


class _WorkflowRunEvent(msgspec.Struct):
    action: str
    workflow_run: _Run
    repository: _Repository
    workflow: _Workflow | None = None


class _Label(msgspec.Struct):
    name: str


class _Issue(msgspec.Struct):
    number: _Id
    state: str
    created_at: str
    closed_at: str | None = None
    labels: list[_Label] = msgspec.field(default_factory=list)


class _IssuesEvent(msgspec.Struct):
    action: str
    issue: _Issue
    repository: _Repository


#: workflow_run conclusion -> deployment outcome; other conclusions (cancelled, skipped) are no deployment.
WORKFLOW_STATES = {
    "success": "success",
    "failure": "failure",
    "timed_out": "error",
    "startup_failure": "error",
}


def deployment_key(deployment_id: int | str) -> str:
    """History key of a GitHub deployment (the same from webhooks and from the API)."""
    return f"gh:{deployment_id}"


def _time(value: str | None, what: str) -> float:
    t = dora.parse_time(value)
    if t is None:
        raise msgspec.ValidationError(f"{what}: not an ISO 8601 time: {value!r}")
    return t


def _repo_ok(repo: str, settings: GitHubSettings) -> bool:
    return not settings.repositories or repo.lower() in {r.lower() for r in settings.repositories}


def _deployment(body: bytes, s: GitHubSettings) -> Change | str:
    ev = msgspec.json.decode(body, type=_DeploymentEvent)
    d, repo = ev.deployment, ev.repository.full_name
    if not s.production_environments.search(d.environment):
        return "environment"
    created = _time(d.created_at, "deployment.created_at")
    dep = Deployment(deployment_key(d.id), d.sha, created, "created", created)
    return Change(deployments=[(repo, d.environment, dep, "webhook")])


def _deployment_status(body: bytes, s: GitHubSettings) -> Change | str:
    ev = msgspec.json.decode(body, type=_DeploymentStatusEvent)
    d, st, repo = ev.deployment, ev.deployment_status, ev.repository.full_name
    if not s.production_environments.search(d.environment):
        return "environment"
    created = _time(d.created_at, "deployment.created_at")
    at = _time(st.created_at, "deployment_status.created_at")
    dep = Deployment(deployment_key(d.id), d.sha, created, st.state, at)
    return Change(deployments=[(repo, d.environment, dep, "webhook")])


def _push(body: bytes, _s: GitHubSettings) -> Change | str:
    ev = msgspec.json.decode(body, type=_PushEvent)
    if not ev.ref.startswith("refs/heads/") or ev.deleted or not ev.commits:
        return "no_commits"
    commits = tuple((c.id, _time(c.timestamp, "commits[].timestamp")) for c in ev.commits)
    return Change(pushes=[(ev.repository.full_name, Push(ev.after, ev.before, commits))])


def _workflow_run(body: bytes, s: GitHubSettings) -> Change | str:
    if not s.deploy_workflows:
        return "workflows_off"
    ev = msgspec.json.decode(body, type=_WorkflowRunEvent)
    run = ev.workflow_run
    names = {run.name or "", run.path, PurePosixPath(run.path).name}
    if ev.workflow is not None:
        names |= {ev.workflow.name, ev.workflow.path, PurePosixPath(ev.workflow.path).name}
    if not names & set(s.deploy_workflows):
        return "workflow"
    state = WORKFLOW_STATES.get(run.conclusion or "")
    if ev.action != "completed" or run.status != "completed" or state is None:
        return "not_completed"
    created = _time(run.created_at, "workflow_run.created_at")
    dep = Deployment(
        f"run:{run.id}", run.head_sha, created, state, _time(run.updated_at, "workflow_run.updated_at")
    )
    return Change(deployments=[(ev.repository.full_name, s.workflow_environment, dep, "workflow")])


def _issues(body: bytes, s: GitHubSettings) -> Change | str:
    if not s.incident_label:
        return "incidents_off"
    ev = msgspec.json.decode(body, type=_IssuesEvent)
    repo, issue = ev.repository.full_name, ev.issue
    labelled = any(label.name == s.incident_label for label in issue.labels)
    if ev.action in ("deleted", "transferred") or (ev.action == "unlabeled" and not labelled):
        return Change(incidents_removed=[(repo, issue.number)])
    if not labelled:
        return "not_incident"
    closed = (
        _time(issue.closed_at, "issue.closed_at") if issue.state == "closed" and issue.closed_at else None
    )
    inc = Incident(
        issue.number, _time(issue.created_at, "issue.created_at"), closed, incident_environment(issue, s)
    )
    return Change(incidents=[(repo, inc)])


def incident_environment(issue: _Issue, s: GitHubSettings) -> str:
    """The environment an incident concerns: its `environment:<name>` label, else the default (production).

    The incident stays with the repository whose issue it is.
    """
    prefix = s.incident_environment_prefix
    for label in issue.labels:
        if label.name.startswith(prefix) and label.name[len(prefix) :].strip():
            return label.name[len(prefix) :].strip()
    return s.incident_default_environment


PARSERS: dict[str, Callable[[bytes, GitHubSettings], Change | str]] = {
    "deployment": _deployment,
    "deployment_status": _deployment_status,
    "push": _push,
    "workflow_run": _workflow_run,
    "issues": _issues,
}
#: Values of the `event` label; anything else is `other` (the header is client-supplied: keep it bounded).
KNOWN_EVENTS = frozenset({*PARSERS, "ping"})


def parse_event(event: str, body: bytes, settings: GitHubSettings) -> Change | str:
    """Decode one webhook delivery.

    Returns:
        The change, or why the event is ignored (`unsupported`, `repository`, `environment`, ...).

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: the body is not valid JSON of that event, holds a
            value out of range, or is nested deeper than the decoder allows (RecursionError is turned
            into a ValidationError).
    """
    parser = PARSERS.get(event)
    if parser is None:
        return "unsupported"
    try:
        result = parser(body, settings)
    except RecursionError:
        raise msgspec.ValidationError("JSON nested too deep") from None
    if isinstance(result, Change):
        repos = {r for r, *_ in result.deployments} | {r for r, _ in result.pushes}
        repos |= {r for r, _ in result.incidents} | {r for r, _ in result.incidents_removed}
        if not all(_repo_ok(r, settings) for r in repos):
            return "repository"
    return result
