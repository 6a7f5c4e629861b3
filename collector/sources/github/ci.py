"""POST /deployments: CI pipelines that do not use GitHub deployments report theirs here.

Body (JSON): `repository`, `environment`, `sha`, `status` (success, failure, error, or a non-final
state such as in_progress), optional `id` (idempotency key; a retry with the same id is merged, not
counted twice), `started_at`, `finished_at` (ISO 8601 or Unix seconds; default: now) and `commits`
(`[{"sha": ..., "timestamp": ...}]`, the commits this deployment brought; default: derived from the
pushes GitHub webhooks reported). Authorised by `Authorization: Bearer <COLLECTOR_DEPLOYMENTS__TOKEN>`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import ClassVar

import msgspec
from aiohttp import web

from collector import dora
from collector.dora import Deployment
from collector.logsetup import LogFirst
from collector.routes import Route
from collector.settings import DeploymentsSettings
from collector.source import Shares, SourceBase, SourceContext
from collector.sources.github import store_sql
from collector.sources.github.engine import DoraEngine, dora_engine
from collector.sources.github.history import Change
from collector.sources.github.source import DORA, keep_fresh
from collector.sources.http import read_limited
from collector.sources.storage import Migration

__all__ = ["CiDeployment", "DeploymentsSource", "parse_ci_deployment"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")
_STATES = frozenset({*dora.TERMINAL, "in_progress", "queued", "pending", "created"})
MAX_BODY = 1024 * 1024


class CiCommit(msgspec.Struct):
    sha: str
    timestamp: str | float


class CiDeployment(msgspec.Struct, forbid_unknown_fields=True):
    repository: str
    environment: str
    sha: str
    status: str
    id: str | None = None
    started_at: str | float | None = None
    finished_at: str | float | None = None
    commits: list[CiCommit] | None = None


def parse_ci_deployment(body: bytes, now: float) -> tuple[str, str, Deployment]:
    """Validate a CI report into (repository, environment, deployment).

    Raises:
        ValueError: with a message for the client (bad JSON, missing or invalid field).
    """
    try:
        rep = msgspec.json.decode(body, type=CiDeployment)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(str(exc)) from exc
    except RecursionError:  # nested deeper than the decoder allows: a 400, never a 500
        raise ValueError("JSON nested too deep") from None
    if rep.id is not None and not 0 < len(rep.id) <= 200:
        raise ValueError("id must be 1 to 200 characters")
    for name in ("repository", "environment"):
        value = getattr(rep, name)
        if len(value) > 200 or not _NAME_RE.match(value):
            raise ValueError(f"{name} must be letters, digits, _ . - (repository: owner/name), not {value!r}")
    if not rep.sha or len(rep.sha) > 100:
        raise ValueError("sha must be a non-empty commit id")
    if rep.status not in _STATES:
        raise ValueError(f"status must be one of {', '.join(sorted(_STATES))}, not {rep.status!r}")
    finished = dora.parse_time(rep.finished_at) if rep.finished_at is not None else now
    started = dora.parse_time(rep.started_at) if rep.started_at is not None else finished
    if finished is None or started is None:
        raise ValueError("started_at / finished_at must be ISO 8601 times or Unix seconds")
    commits = None
    if rep.commits is not None:
        parsed = [(c.sha, dora.parse_time(c.timestamp)) for c in rep.commits]
        if any(t is None for _s, t in parsed):
            raise ValueError("commits[].timestamp must be ISO 8601 times or Unix seconds")
        commits = tuple((s, float(t)) for s, t in parsed if t is not None)
    key = (
        rep.id
        or hashlib.sha256(f"{rep.repository}|{rep.environment}|{rep.sha}|{started}".encode()).hexdigest()[:24]
    )
    return (
        rep.repository,
        rep.environment,
        Deployment(f"ci:{key}", rep.sha, started, rep.status, finished, commits),
    )


class DeploymentsSource(SourceBase):
    """Serves POST /deployments (GET /dora comes with the shared DORA engine)."""

    name = "deployments"
    #: Services shared with other sources, built once per app by `collector.app` and passed in.
    shares: ClassVar[Shares] = {"engine": DORA}
    #: The tables and migrations of the shared history (registered with the store; applied once at open).
    storage: ClassVar[tuple[Migration, ...]] = store_sql.MIGRATIONS
    #: `collector_source_errors_total{reason}` values, at 0 from start-up.
    error_reasons = ("bad_request", "store")

    def __init__(self, ctx: SourceContext, engine: DoraEngine | None = None) -> None:
        self.ctx = ctx
        self.settings: DeploymentsSettings = ctx.settings
        self.engine = engine if engine is not None else dora_engine(ctx)
        self.requests = ctx.metrics.counter(
            "deployments_reports_total", "POST /deployments requests by outcome.", ("status",)
        )
        self.log_first = LogFirst(ctx.log)

    def held_families(self) -> list[str]:
        """Counters and histograms rebuilt from the stored history: not served before it is loaded."""
        return [self.engine.total.name, self.engine.lead.name, self.engine.recovery.name]

    def routes(self) -> list[Route]:
        # Token: the guard checks `Authorization: Bearer <COLLECTOR_DEPLOYMENTS__TOKEN>` before the
        # handler runs; a refusal is answered (and counted) by `refused`.
        return [
            Route(
                "POST",
                "/deployments",
                self.handle,
                auth="token",
                kind="ingest",
                token=self._token,
                refused=self.refused,
            )
        ]

    def _token(self) -> str:
        assert self.settings.token is not None  # the source is enabled only with a token
        return self.settings.token.get_secret_value()

    async def run(self) -> None:
        await self.engine.ready()
        self.ctx.started()
        await keep_fresh(self.ctx, self.engine, 60.0)

    async def handle(self, request: web.Request) -> web.Response:
        """POST /deployments with a valid token (the guard checked it)."""
        return self._recorded(await self._handle(request))

    async def refused(self, request: web.Request) -> web.Response:
        """POST /deployments without a valid bearer token (the guard's answer for this route)."""
        self.requests.inc(("unauthorized",))
        self.log_first(
            "unauthorized", "POST /deployments without a valid bearer token", remote=request.remote
        )
        return self._recorded(web.json_response({"error": "missing or wrong bearer token"}, status=401))

    def _recorded(self, resp: web.Response) -> web.Response:
        try:
            answer = json.loads(resp.body) if isinstance(resp.body, bytes) else {}
        except ValueError:
            answer = {}
        self.ctx.record(
            "deliveries",
            type="deployment",
            status=answer.get("status", "rejected"),
            code=resp.status,
            id=str(answer.get("id", ""))[:64],
            reason=str(answer.get("error", ""))[:200],
        )
        return resp

    async def _handle(self, request: web.Request) -> web.Response:
        body = await read_limited(request, MAX_BODY)
        if body is None:
            self.requests.inc(("bad_request",))
            return web.json_response({"error": f"body over {MAX_BODY} bytes"}, status=413)
        try:
            repo, env, dep = parse_ci_deployment(body, self.ctx.clock())
        except ValueError as exc:
            self.requests.inc(("bad_request",))
            self.ctx.error("bad_request", str(exc))
            self.log_first("bad_request", "rejected POST /deployments", error=str(exc), remote=request.remote)
            return web.json_response({"error": str(exc)}, status=400)
        known = dep.key in self.engine.deployments_of(repo)
        try:
            await self.engine.apply(Change(deployments=[(repo, env, dep, "ci")]))
        except Exception as exc:  # the store failed: tell CI to retry
            self.requests.inc(("error",))
            self.ctx.error("store", str(exc))
            self.log_first("store", "cannot record a deployment", error=str(exc))
            return web.json_response({"error": "cannot record the deployment now; retry"}, status=503)
        status = "updated" if known else "accepted"
        self.requests.inc((status,))
        return web.json_response({"status": status, "id": dep.key}, status=200 if known else 201)
