"""API polling against a fake GitHub REST API on 127.0.0.1: pagination, ETags (304), rate limits."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import make_settings, serve, value

H = 3600.0
REPO = "octo-org/shop"
PROD = {"repository": REPO, "environment": "production"}
TOKEN = "ghp_test"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeGitHub:
    """Deployments newest first, two per page; statuses; compare. Serves ETags and one rate limit each."""

    now: float
    url: str = ""
    hits: Counter[str] = field(default_factory=Counter)  # (path[?page]) -> requests
    not_modified: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0

    def deployments(self) -> list[dict[str, Any]]:
        n = self.now
        rows = [
            (104, "s4", "staging", n - 1 * H),
            (103, "s3", "production", n - 3 * H),
            (102, "s2", "production", n - 26 * H),
            (101, "s1", "production", n - 50 * H),
            (90, "s0", "production", n - 40 * 24 * H),  # older than the 30-day backfill
        ]
        return [{"id": i, "sha": sha, "environment": env, "created_at": iso(t)} for i, sha, env, t in rows]

    def statuses(self, dep_id: int) -> list[dict[str, Any]]:
        n = self.now
        out = {
            101: [("success", n - 49 * H), ("in_progress", n - 50 * H)],
            102: [("failure", n - 26 * H + 600)],
            # 103 finishes between the first and the second poll
            103: [("inactive", n - 1 * H), ("success", n - 2 * H), ("in_progress", n - 3 * H)]
            if self.hits["page1"] >= 2
            else [("in_progress", n - 3 * H)],
        }[dep_id]
        return [{"state": s, "created_at": iso(t)} for s, t in out]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/repos/{owner}/{name}/deployments", self.h_deployments)
        app.router.add_get("/api/v3/repos/{owner}/{name}/deployments/{id}/statuses", self.h_statuses)
        app.router.add_get("/api/v3/repos/{owner}/{name}/compare/{range}", self.h_compare)
        return app

    def _answer(self, request: web.Request, key: str, data: Any, link: str | None = None) -> web.Response:
        body = json.dumps(data).encode()
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        headers = {
            "ETag": etag,
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4321",
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
        }
        if link:
            headers["Link"] = link
        if request.headers.get("If-None-Match") == etag:
            self.not_modified[key] += 1
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    def _auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"token {TOKEN}":
            self.unauthorized += 1
            raise web.HTTPUnauthorized(text='{"message": "Bad credentials"}', content_type="application/json")

    async def h_deployments(self, request: web.Request) -> web.Response:
        self._auth(request)
        assert request.match_info["owner"] + "/" + request.match_info["name"] == REPO
        page = int(request.query.get("page", "1"))
        key = f"page{page}"
        self.hits[key] += 1
        rows = self.deployments()[(page - 1) * 2 : page * 2]
        link = None
        if page * 2 < len(self.deployments()):
            link = f'<{self.url}/api/v3/repos/{REPO}/deployments?per_page=100&page={page + 1}>; rel="next"'
        return self._answer(request, key, rows, link)

    async def h_statuses(self, request: web.Request) -> web.Response:
        self._auth(request)
        dep_id = int(request.match_info["id"])
        key = f"statuses{dep_id}"
        self.hits[key] += 1
        if dep_id == 101 and not self.rate_limited[key]:
            # primary rate limit: 403, nothing remaining, reset already due
            self.rate_limited[key] += 1
            return web.json_response(
                {"message": "API rate limit exceeded"},
                status=403,
                headers={
                    "X-RateLimit-Limit": "5000",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(time.time())),
                },
            )
        return self._answer(request, key, self.statuses(dep_id))

    async def h_compare(self, request: web.Request) -> web.Response:
        self._auth(request)
        rng = request.match_info["range"]
        key = f"compare:{rng}"
        self.hits[key] += 1
        if not self.rate_limited[key]:
            self.rate_limited[key] += 1  # secondary rate limit: 429 with Retry-After
            return web.json_response(
                {"message": "secondary rate limit"}, status=429, headers={"Retry-After": "0"}
            )
        assert rng == "s1...s3"
        n = self.now
        commits = [
            {"sha": "s2", "commit": {"author": {"date": iso(n - 27 * H)}}},
            {"sha": "c", "commit": {"author": {"date": iso(n - 10 * H)}}},
            {"sha": "s3", "commit": {"author": {"date": iso(n - 4 * H)}}},
        ]
        return self._answer(request, key, {"status": "ahead", "commits": commits})


@pytest.fixture
async def fake_github() -> AsyncIterator[FakeGitHub]:
    fake = FakeGitHub(now=float(int(time.time())))
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    await runner.cleanup()


def poll_settings(tmp_path: Path, fake: FakeGitHub, **extra: Any) -> Any:
    github = {
        "token": TOKEN,
        "repositories": REPO,
        "api_url": fake.url + "/api/v3",
        "poll_interval": 1,
        **extra,
    }
    return make_settings(tmp_path, github={"change_failure": "deployments", **github})


async def test_polling_reads_history_with_pages_etags_and_rate_limits(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    fake = fake_github
    async with serve(poll_settings(tmp_path, fake)) as run:
        # first poll: 101 succeeded, 102 failed, 103 still in progress
        m = await run.wait_for(lambda m: value(m, "deployments_total", **PROD, status="failure") == 1)
        assert value(m, "deployments_total", **PROD, status="success") == 1
        assert fake.hits["page1"] >= 1 and fake.hits["page2"] == 1 and fake.hits["page3"] == 1
        # second poll: page 1 unchanged (304, cursor stops there); 103 re-checked and now a success
        m = await run.wait_for(lambda m: value(m, "deployments_total", **PROD, status="success") == 2)
        assert fake.not_modified["page1"] >= 1
        assert fake.hits["page2"] == 1  # the cursor stops the second poll on page 1
        assert fake.hits["statuses90"] == 0 and fake.hits["statuses104"] == 0  # too old / not production
        assert fake.rate_limited["statuses101"] == 1 and fake.hits["statuses101"] == 2  # waited, retried
        assert fake.hits["compare:s1...s3"] == 2  # 429, then answered
        assert fake.unauthorized == 0
        # 103 succeeded 2 h ago and brought s2 (27 h), c (10 h) and s3 (4 h): 25 h, 8 h and 2 h
        assert value(m, "deployment_lead_time_seconds_count", **PROD) == 3
        assert value(m, "deployment_lead_time_seconds_sum", **PROD) == 35 * H
        assert (
            value(m, "deployment_recovery_time_seconds_sum", **PROD, cause="failed_deployment")
            == 24 * H - 600
        )  # 102 failed -> 103
        assert value(m, "deployment_change_failure_ratio", **PROD, window="7d") == pytest.approx(
            1 / 3, rel=1e-12
        )
        assert value(m, "deployment_change_failure_ratio", **PROD, window="1d") == 0.0
        assert value(m, "deployment_last_success_timestamp_seconds", **PROD) == fake.now - 2 * H
        assert value(m, "github_api_requests_total", status="304") >= 1
        assert value(m, "github_api_requests_total", status="403") == 1
        assert value(m, "github_api_requests_total", status="429") == 1
        assert value(m, "github_api_rate_limit_remaining") == 4321
        assert value(m, "collector_source_errors_total", source="github", reason="rate_limited") == 2
        assert value(m, "deployments_total", repository=REPO, environment="staging", status="success") is None
        polls = fake.hits["page1"]
    async with serve(poll_settings(tmp_path, fake)) as run:  # restart: cursor and history from the store
        m = await run.wait_for(lambda m: (value(m, "github_api_requests_total", status="200") or 0) >= 1)
        assert value(m, "deployments_total", **PROD, status="success") == 2
        assert value(m, "deployment_lead_time_seconds_count", **PROD) == 3
        assert fake.hits["page1"] > polls and fake.hits["page2"] == 1  # no second backfill


async def test_polling_survives_a_broken_api(tmp_path: Path, fake_github: FakeGitHub) -> None:
    async with serve(poll_settings(tmp_path, fake_github, token="wrong")) as run:
        m = await run.wait_for(
            lambda m: value(m, "collector_source_errors_total", source="github", reason="api_error")
        )
        assert value(m, "github_api_requests_total", status="401") >= 1
        status, _h, body = await run.get("/health")
        github = json.loads(body)["sources"]["github"]
        assert status == 200 and github["state"] == "degraded"  # running, but the API answers 401
        assert github["reasons"][0].startswith("GitHub API failing since ")
        assert "BadRequest" in github["reasons"][0] or "401" in github["reasons"][0]
        assert (await run.get("/health/ready"))[0] == 200


@dataclass
class DisorderedGitHub(FakeGitHub):
    """After the first poll a deployment appears whose id (95) is BELOW the cursor but which is newer:
    the growing-id assumption broken (an Enterprise import, a reordering proxy)."""

    late: bool = False

    def deployments(self) -> list[dict[str, Any]]:
        rows = super().deployments()
        if self.late:
            rows.insert(
                0, {"id": 95, "sha": "s5", "environment": "production", "created_at": iso(self.now - 600)}
            )
        return rows

    def statuses(self, dep_id: int) -> list[dict[str, Any]]:
        if dep_id == 95:
            return [{"state": "success", "created_at": iso(self.now - 300)}]
        return super().statuses(dep_id)

    async def h_compare(self, request: web.Request) -> web.Response:
        if request.match_info["range"] == "s3...s5":
            self._auth(request)
            return self._answer(request, "compare:s3...s5", {"status": "ahead", "commits": []})
        return await super().h_compare(request)


async def test_a_deployment_id_below_the_cursor_but_newer_is_still_read_and_counted(tmp_path: Path) -> None:
    fake = DisorderedGitHub(now=float(int(time.time())))
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        async with serve(poll_settings(tmp_path, fake)) as run:
            await run.wait_for(lambda m: value(m, "deployments_total", **PROD, status="failure") == 1)
            fake.late = True  # the cursor is 104 now; 95 is listed first, created after 104
            m = await run.wait_for(
                lambda m: value(m, "deployment_last_success_timestamp_seconds", **PROD) == fake.now - 300,
                timeout=20,
            )
            assert (
                value(m, "collector_source_errors_total", source="github", reason="deployment_order") or 0
            ) >= 1
            assert fake.hits["statuses95"] >= 1
    finally:
        await runner.cleanup()
