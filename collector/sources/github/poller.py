"""REST API polling: deployments, their statuses and the commits between deployments, via gidgethub.

Each poll lists a repository's deployments newest first and stops at the cursor (the newest id already
seen, kept in the state store), re-reads the statuses of deployments that have not ended yet, and asks
`compare` for the commits a successful deployment brought. GETs carry the ETag of the last answer, so an
unchanged page costs a 304 and no rate limit; a rate-limited answer waits for the reset and retries.

The cursor assumes deployment ids grow with creation time. That is true of GitHub (ids are assigned
from one sequence as deployments are created, and the list is newest first), but it is an assumption,
so it is guarded: the cursor keeps the newest id AND its creation time, and a poll stops at the cursor
only while both agree (ids falling down the list, and the id at the cursor not created after it). If
an id rises down the list, or an id at or below the cursor was created after the cursor's deployment,
that poll reads on to the backfill horizon instead, takes every deployment it does not know yet
(merging is idempotent, so a known one read again is harmless) and counts
`collector_source_errors_total{reason="deployment_order"}`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiohttp
import gidgethub
from gidgethub.aiohttp import GitHubAPI

from collector import dora
from collector.dora import Deployment
from collector.metrics import Family
from collector.settings import GitHubSettings
from collector.source import SourceContext
from collector.sources.github.engine import DoraEngine
from collector.sources.github.events import deployment_key
from collector.sources.github.history import Change

__all__ = ["EtagCache", "Poller", "pick_status"]

#: Deployments still without an outcome after this long are no longer re-checked.
OPEN_HORIZON = 7 * dora.DAY
#: Longest wait for a rate limit reset before giving up on this poll.
MAX_RATE_WAIT = 3600.0
CURSOR_OWNER = "github.poll"


class EtagCache(OrderedDict[str, Any]):
    """gidgethub's response cache (URL -> etag, last-modified, data, next page), least recently used out."""

    def __init__(self, limit: int = 2048) -> None:
        super().__init__()
        self.limit = limit

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class _API(GitHubAPI):
    """gidgethub's aiohttp client that counts answers, exports the rate limit and waits it out."""

    def __init__(self, session: aiohttp.ClientSession, poller: Poller, **kw: Any) -> None:
        super().__init__(session, "collector-dora", **kw)
        self.poller = poller

    async def _request(self, method: str, url: str, headers: Any, body: bytes = b"") -> Any:
        status, resp_headers, data = await super()._request(method, url, headers, body)
        self.poller.requests.inc((str(status),))
        remaining = resp_headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.isdigit():
            self.poller.remaining.set((), float(remaining))
        return status, resp_headers, data

    async def sleep(self, seconds: float) -> None:
        await self.poller.ctx.sleep(seconds)

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        # Primary limit (403/429 with x-ratelimit-remaining: 0): wait for x-ratelimit-reset. Secondary
        # limit: wait Retry-After (GitHub's "best practices for using the REST API").
        headers = exception.headers or {}
        status = int(exception.status_code)
        wait: float | None = None
        if headers.get("retry-after", "").isdigit():
            wait = float(headers["retry-after"])
        elif headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset", "").isdigit():
            wait = max(0.0, float(headers["x-ratelimit-reset"]) - time.time()) + 1.0
        if status not in (403, 429) or wait is None or attempt > 3 or wait > MAX_RATE_WAIT:
            return False
        self.poller.ctx.error("rate_limited", f"{status} on {url}; waiting {wait:.0f}s")
        self.poller.log_first("rate_limited", "GitHub API rate limit; waiting", url=url, wait_s=round(wait))
        return not await self.poller.ctx.sleep(wait)


def pick_status(statuses: list[dict[str, Any]]) -> tuple[str, float] | None:
    """The outcome of a deployment from its statuses: the earliest terminal one, else the latest one."""
    parsed: list[tuple[str, float]] = []
    for s in statuses:
        state = s.get("state") if isinstance(s, dict) else None
        at = dora.parse_time(s.get("created_at")) if isinstance(state, str) else None
        if isinstance(state, str) and at is not None:
            parsed.append((state, at))
    terminal = [(t, st) for st, t in parsed if st in dora.TERMINAL]
    if terminal:
        t, st = min(terminal)
        return st, t
    if parsed:
        t, st = max((t, st) for st, t in parsed)
        return st, t
    return None


class Poller:
    """Polls every configured repository each `poll_interval` seconds."""

    def __init__(
        self,
        ctx: SourceContext,
        engine: DoraEngine,
        log_first: Callable[..., None],
        requests: Family,
        remaining: Family,
    ) -> None:
        self.ctx = ctx
        self.settings: GitHubSettings = ctx.settings
        self.engine = engine
        self.log_first = log_first
        self.requests = requests
        self.remaining = remaining
        self.cache = EtagCache()

    async def run(self) -> None:
        """Poll until stop; an error of one repository is counted, logged and retried next round."""
        assert self.settings.token is not None
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            gh = _API(
                session,
                self,
                oauth_token=self.settings.token.get_secret_value(),
                cache=self.cache,
                base_url=self.settings.api_url,
            )
            failing_since: float | None = None
            failures = 0
            while not self.ctx.stop.is_set():
                errors: list[tuple[Exception, str]] = []
                for repo in self.settings.repositories:
                    if self.ctx.stop.is_set():
                        return
                    try:
                        await self.poll_repo(gh, repo)
                    except (
                        gidgethub.GitHubException,
                        aiohttp.ClientError,
                        TimeoutError,
                        ValueError,
                        KeyError,
                        TypeError,
                    ) as exc:
                        reason = (
                            "rate_limited" if isinstance(exc, gidgethub.RateLimitExceeded) else "api_error"
                        )
                        self.ctx.error(reason, f"{repo}: {type(exc).__name__}: {exc}")
                        errors.append((exc, f"{repo}: {type(exc).__name__}: {exc}"))
                        self.log_first(
                            f"poll:{repo}:{type(exc).__name__}",
                            "GitHub API poll failed; retrying next interval",
                            repository=repo,
                            error=f"{type(exc).__name__}: {exc}",
                        )
                if errors:
                    failures += 1
                    failing_since = failing_since or self.ctx.clock()
                    unreachable = all(
                        isinstance(e, aiohttp.ClientConnectionError | TimeoutError) for e, _t in errors
                    )
                    what = "unreachable" if unreachable else "failing"
                    self.ctx.degraded(
                        "api",
                        f"GitHub API {what} since {time.strftime('%H:%M:%S', time.gmtime(failing_since))} "
                        f"({failures} failed poll{'s' if failures > 1 else ''}): {errors[0][1]}",
                    )
                else:
                    failing_since, failures = None, 0
                    self.ctx.recovered("api")
                if await self.ctx.sleep(self.settings.poll_interval):
                    return

    async def poll_repo(self, gh: GitHubAPI, repo: str) -> None:
        """One poll of one repository: new deployments, open ones' statuses, commits of successes."""
        raw = await self.ctx.store.get(CURSOR_OWNER, repo)
        saved = json.loads(raw) if raw else {}
        cursor: int | None = saved.get("max_id")
        cursor_created: float | None = saved.get("max_created")  # absent in cursors of older versions
        now = self.ctx.clock()
        since = now - self.settings.backfill_days * dora.DAY
        env_re = self.settings.production_environments
        known_keys = self.engine.deployments_of(repo)
        fresh: list[dict[str, Any]] = []
        max_id, max_created = cursor or 0, cursor_created
        previous_id: int | None = None
        ordered = True  # ids fell with time all the way down the list so far: the cursor may stop the walk

        def disorder(detail: str) -> None:
            self.ctx.error("deployment_order", f"{repo}: {detail}")
            self.log_first(
                f"order:{repo}",
                "GitHub deployment ids do not grow with creation time; reading to the backfill horizon",
                repository=repo,
                detail=detail,
            )

        pages = gh.getiter("/repos/{+repo}/deployments{?per_page}", {"repo": repo, "per_page": 100})
        async with contextlib.aclosing(pages) as deployments:  # closed at once when we stop early
            async for d in deployments:
                dep_id = int(d["id"])
                created = dora.parse_time(d.get("created_at"))
                if dep_id == previous_id:
                    continue  # a page boundary shifted by a new deployment repeats one entry
                if ordered and previous_id is not None and dep_id > previous_id:
                    ordered = False
                    disorder(f"deployment {dep_id} listed after {previous_id}")
                previous_id = dep_id
                if created is not None and created < since:
                    break  # older than the backfill horizon: never read
                if cursor is not None and dep_id <= cursor:
                    newer = created is not None and cursor_created is not None and created > cursor_created
                    if ordered and not newer:
                        break  # newest first: everything from here was seen already
                    if ordered:  # an id at or below the cursor, created after it: not a growing id
                        ordered = False
                        disorder(f"deployment {dep_id} <= cursor {cursor} but created after it")
                    if deployment_key(dep_id) in known_keys:
                        continue  # known (the order guard is off): nothing new here
                max_id = max(max_id, dep_id)
                if created is not None and (max_created is None or created > max_created):
                    max_created = created
                if isinstance(d.get("environment"), str) and env_re.search(d["environment"]):
                    fresh.append(d)
        known = self.engine.deployments_of(repo)
        todo: dict[str, tuple[str, str, float, str]] = {}  # key -> env, sha, created, deployment id
        for d in fresh:
            created = dora.parse_time(d.get("created_at")) or now
            todo[deployment_key(d["id"])] = (d["environment"], str(d.get("sha", "")), created, str(d["id"]))
        for key, (env, dep, source) in known.items():
            if (
                source == "api"
                and not dep.terminal
                and now - dep.created_at < OPEN_HORIZON
                and key not in todo
            ):
                todo[key] = (env, dep.sha, dep.created_at, key.removeprefix("gh:"))
        # Oldest first, so each success finds the previous success of its environment for `compare`.
        for key, (env, sha, created, api_id) in sorted(todo.items(), key=lambda kv: kv[1][2]):
            statuses = await gh.getitem(
                "/repos/{+repo}/deployments/{id}/statuses{?per_page}",
                {"repo": repo, "id": api_id, "per_page": 100},
            )
            picked = pick_status(statuses if isinstance(statuses, list) else [])
            state, at = picked if picked else ("created", created)
            commits = None
            if state == "success":
                commits = await self._commits(gh, repo, env, sha, at)
            dep = Deployment(key, sha, created, state, at, commits)
            await self.engine.apply(Change(deployments=[(repo, env, dep, "api")]))
        if max_id != (cursor or 0) or cursor is None or max_created != cursor_created:
            value = json.dumps({"max_id": max_id, "max_created": max_created})
            await self.ctx.store.put(CURSOR_OWNER, [(repo, value)])

    async def _commits(
        self, gh: GitHubAPI, repo: str, env: str, sha: str, at: float
    ) -> tuple[tuple[str, float], ...] | None:
        previous = self.engine.previous_success_sha(repo, env, at)
        if previous is None or not sha:
            return None  # the first deployment we know of: pushes seen by the webhook may still tell
        if previous == sha:
            return ()
        out = []
        async for c in gh.getiter(
            "/repos/{+repo}/compare/{base}...{head}{?per_page}",
            {"repo": repo, "base": previous, "head": sha, "per_page": 100},
            iterable_key="commits",
        ):
            t = dora.parse_time(((c.get("commit") or {}).get("author") or {}).get("date"))
            if t is not None:
                out.append((str(c.get("sha", "")), t))
        return tuple(out)
