"""The global collector's outage, end to end (docs/scaling.md, "The global replica"): the real `collector`
process takes Stripe and GitHub webhooks, is stopped (SIGTERM or SIGKILL), misses the deliveries and
deployments made while it is down, and on restart with API polling (local fake Stripe Events API and
GitHub REST API) counts every one exactly once. Ground truth is the list of events the test made.

Seeded: `COLLECTOR_BACKFILL_SEEDS=1-50 pytest tests/deploy/test_outage_backfill.py` runs a longer
campaign; the suite runs two seeds (one graceful stop, one kill).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from collector.demo.payloads import template
from tests.helpers import CollectorProcess, value
from tests.sources.stripe_helpers import API_KEY, SECRET, FakeStripe, body_of, event, sign

REPO = "octo-org/shop"
GH_TOKEN = "ghp_backfill_test"
GH_SECRET = "gh-backfill-secret"


def _seeds() -> list[int]:
    spec = os.environ.get("COLLECTOR_BACKFILL_SEEDS", "1,2")
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeGitHub:
    """GitHub's deployments, statuses and compare endpoints over in-memory lists (ids grow, newest first)."""

    deployments: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    statuses: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # newest first, as GitHub
    unauthorized: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/repos/{owner}/{name}/deployments", self.h_deployments)
        app.router.add_get("/repos/{owner}/{name}/deployments/{id}/statuses", self.h_statuses)
        app.router.add_get("/repos/{owner}/{name}/compare/{range}", self.h_compare)
        return app

    def _auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"token {GH_TOKEN}":
            self.unauthorized += 1
            raise web.HTTPUnauthorized(text='{"message": "Bad credentials"}', content_type="application/json")

    async def h_deployments(self, request: web.Request) -> web.Response:
        self._auth(request)
        rows = list(reversed(self.deployments))
        page, per = int(request.query.get("page", "1")), int(request.query.get("per_page", "30"))
        headers = {}
        if page * per < len(rows):
            url = f"{request.url.with_query({'per_page': per, 'page': page + 1})}"
            headers["Link"] = f'<{url}>; rel="next"'
        return web.json_response(rows[(page - 1) * per : page * per], headers=headers)

    async def h_statuses(self, request: web.Request) -> web.Response:
        self._auth(request)
        return web.json_response(self.statuses.get(int(request.match_info["id"]), []))

    async def h_compare(self, request: web.Request) -> web.Response:
        self._auth(request)
        return web.json_response({"status": "ahead", "commits": []})


class Served:
    """An aiohttp app on 127.0.0.1 in a thread of its own (the collector under test is a process)."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class World:
    """What happened, as the test made it: the ground truth the collector's /metrics must match."""

    rnd: random.Random
    stripe: FakeStripe
    github: FakeGitHub
    payments: list[int] = field(default_factory=list)  # amounts in cents
    failed_payments: int = 0
    outcomes: list[str] = field(default_factory=list)  # deployment states
    next_dep: int = 1000
    clock: float = field(default_factory=lambda: time.time() - 3600)

    def stripe_event(self) -> dict[str, Any]:
        self.clock += 1
        if self.rnd.random() < 0.8:
            amount = self.rnd.choice([500, 990, 1500, 4900, 12345])
            self.payments.append(amount)
            ev = event(
                "payment_intent.succeeded",
                created=int(self.clock),
                amount=amount,
                amount_received=amount,
                currency="usd",
            )
        else:
            self.failed_payments += 1
            ev = event("payment_intent.payment_failed", created=int(self.clock), currency="usd")
        self.stripe.add(ev)  # Stripe keeps every event in its Events API
        return ev

    def deployment(self) -> list[tuple[str, dict[str, Any]]]:
        """One production deployment with its final status; returns its two webhook deliveries."""
        self.clock += 60
        self.next_dep += self.rnd.randint(1, 5)
        state = "failure" if self.rnd.random() < 0.3 else "success"
        self.outcomes.append(state)
        sha = hashlib.sha1(str(self.next_dep).encode()).hexdigest()
        dep = {"id": self.next_dep, "sha": sha, "environment": "production", "created_at": iso(self.clock)}
        status = {"state": state, "created_at": iso(self.clock + 30)}
        self.github.deployments.append(dep)
        self.github.statuses[self.next_dep] = [status]
        d_hook, s_hook = template("github", "deployment"), template("github", "deployment_status")
        for hook in (d_hook, s_hook):
            owner, name = REPO.split("/")
            hook["repository"] |= {"full_name": REPO, "name": name}
            hook["repository"]["owner"]["login"] = owner
        d_hook["deployment"] |= dep
        s_hook["deployment"] |= dep
        s_hook["deployment_status"] |= {
            **status,
            "environment": "production",
            "updated_at": status["created_at"],
        }
        return [("deployment", d_hook), ("deployment_status", s_hook)]


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def deliver_stripe(base: str, ev: dict[str, Any]) -> int:
    body = body_of(ev)
    return _post(base + "/webhooks/stripe", body, {"Stripe-Signature": sign(body)})


def deliver_github(base: str, name: str, payload: dict[str, Any]) -> int:
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": name,
        "X-GitHub-Delivery": hashlib.sha1(body).hexdigest(),
        "X-Hub-Signature-256": sig,
    }
    return _post(base + "/webhooks/github", body, headers)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeStripe, FakeGitHub, str, str]]:
    stripe, github = FakeStripe(), FakeGitHub()
    s, g = Served(stripe.app()), Served(github.app())
    try:
        yield stripe, github, s.url, g.url
    finally:
        s.close()
        g.close()


def _collector(tmp_path: Path, stripe_url: str, github_url: str) -> CollectorProcess:
    env = {
        "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
        "COLLECTOR_STRIPE__WEBHOOK_SECRETS": SECRET,
        "COLLECTOR_STRIPE__API_KEY": API_KEY,
        "COLLECTOR_STRIPE__API_BASE": stripe_url,
        "COLLECTOR_STRIPE__POLL_INTERVAL": "0.2",
        "COLLECTOR_GITHUB__WEBHOOK_SECRET": GH_SECRET,
        "COLLECTOR_GITHUB__TOKEN": GH_TOKEN,
        "COLLECTOR_GITHUB__API_URL": github_url,
        "COLLECTOR_GITHUB__REPOSITORIES": REPO,
        "COLLECTOR_GITHUB__POLL_INTERVAL": "1",
        "COLLECTOR_GITHUB__RECOMPUTE_INTERVAL": "1",
    }
    c = CollectorProcess(env, tmp_path, ("run",))
    c.wait_live(30)
    return c


def _wait(c: CollectorProcess, done: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    m: dict[str, Any] = {}
    while time.monotonic() < deadline:
        m = c.scrape()
        if done(m):
            return m
        time.sleep(0.2)
    return m


def _counts(world: World) -> dict[str, float]:
    return {
        "payments": len(world.payments),
        "value": sum(world.payments) / 100,
        "failures": world.failed_payments,
        "success": world.outcomes.count("success"),
        "failure": world.outcomes.count("failure"),
    }


def _seen(m: dict[str, Any]) -> dict[str, float]:
    prod = {"repository": REPO, "environment": "production"}
    fails = sum(s.value for s in m.get("stripe_payment_failures_total", []))
    return {
        "payments": value(m, "stripe_payments_total", currency="usd") or 0,
        "value": round(value(m, "stripe_payment_value_total", currency="usd") or 0, 2),
        "failures": fails,
        "success": value(m, "deployments_total", **prod, status="success") or 0,
        "failure": value(m, "deployments_total", **prod, status="failure") or 0,
    }


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", _seeds())
def test_every_event_and_deployment_of_an_outage_is_counted_once_after_restart(
    seed: int, tmp_path: Path, fakes: tuple[FakeStripe, FakeGitHub, str, str]
) -> None:
    stripe, github, stripe_url, github_url = fakes
    rnd = random.Random(seed)
    world = World(rnd, stripe, github)
    kill = seed % 2 == 0  # odd seeds stop gracefully, even seeds are killed (a lost node)

    c = _collector(tmp_path, stripe_url, github_url)
    try:
        # both pollers have made their first pass (Stripe starts at the newest event, GitHub backfills)
        _wait(
            c,
            lambda m: (
                value(m, "stripe_poll_last_success_timestamp_seconds") is not None
                and any(s.value > 0 for s in m.get("github_api_requests_total", []))
            ),
        )
        # up: webhooks are delivered and answered (the same events are in the APIs, as at Stripe/GitHub)
        for _ in range(rnd.randint(5, 15)):
            assert deliver_stripe(c.url, world.stripe_event()) == 200
        for _ in range(rnd.randint(2, 5)):
            for name, payload in world.deployment():
                assert deliver_github(c.url, name, payload) == 200
        before = _counts(world)
        m = _wait(c, lambda m: _seen(m) == before)
        assert _seen(m) == before
    finally:
        if kill:
            c.kill()
        else:
            assert c.terminate() == 0

    # down: Stripe's and GitHub's deliveries find nobody (Stripe would retry, GitHub would not)
    down_stripe = [world.stripe_event() for _ in range(rnd.randint(10, 300))]  # >100: several pages
    down_github = [world.deployment() for _ in range(rnd.randint(1, 8))]
    for ev in down_stripe[:3]:
        with pytest.raises(OSError):
            deliver_stripe(c.url, ev)
    for hooks in down_github[:1]:
        with pytest.raises(OSError):
            deliver_github(c.url, *hooks[0])

    c = _collector(tmp_path, stripe_url, github_url)
    try:
        expected = _counts(world)
        m = _wait(c, lambda m: _seen(m) == expected, timeout=120)
        assert _seen(m) == expected, c.stderr()[-3000:]
        # exactly once: this process read the outage's events from the Events API, each processed
        # once; anything older it met again was a duplicate
        polled = {
            st: sum(s.value for s in m["stripe_polled_events_total"] if s.labels["status"] == st)
            for st in ("processed", "duplicate")
        }
        assert polled["processed"] == len(down_stripe)
        time.sleep(2)  # a few more polls change nothing
        assert _seen(c.scrape()) == expected
    finally:
        assert c.terminate() == 0
    assert github.unauthorized == 0
