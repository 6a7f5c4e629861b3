"""Network faults: Stripe and GitHub APIs answering 500, 429 and garbage (fake APIs on loopback), and a
probe target whose name does not resolve. The collector keeps serving, counts each fault, says so in
/health, and recovers by itself once the API answers properly again."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import websockets
from aiohttp import web

from collector.settings import GitHubSettings, StripeSettings, WebSocketSettings
from tests.helpers import REPO, Running, make_settings, serve, value

_NETNS_FLAG = "TEST_INSIDE_PRIVATE_NETNS"  # not COLLECTOR_*: conftest clears those


class FlakyAPI:
    """Answers every GET with the next scripted fault (`500`, `429`, `garbage`), then with `ok`."""

    def __init__(self, faults: list[str], ok: object) -> None:
        self.faults = list(faults)
        self.ok = ok
        self.served: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        mode = self.faults.pop(0) if self.faults else "ok"
        self.served.append(mode)
        if mode == "500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if mode == "429":
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "1"}
            )
        if mode == "garbage":
            return web.Response(body=b"\x00<html>not json at all", content_type="application/json")
        return web.json_response(self.ok, headers={"x-ratelimit-remaining": "4999"})


@asynccontextmanager
async def flaky(api: FlakyAPI) -> AsyncIterator[FlakyAPI]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    api.url = f"http://{host}:{port}"
    try:
        yield api
    finally:
        await runner.cleanup()


async def _until(run: Running, pred, timeout: float = 40.0):  # type: ignore[no-untyped-def]
    return await run.wait_for(pred, timeout)


async def _health(run: Running) -> dict:  # type: ignore[type-arg]
    status, _h, body = await run.get("/health")
    assert status == 200
    return json.loads(body)


async def test_stripe_api_500_429_and_garbage_are_counted_and_polling_recovers(tmp_path: Path) -> None:
    api = FlakyAPI(
        ["500", "429", "garbage"], {"object": "list", "data": [], "has_more": False, "url": "/v1/events"}
    )
    async with flaky(api):
        stripe = StripeSettings(api_key="sk_test_faults", api_base=api.url, poll_interval=0.2)
        async with serve(make_settings(tmp_path, stripe=stripe)) as run:
            samples = await _until(
                run, lambda s: (value(s, "stripe_poll_last_success_timestamp_seconds") or 0) > 0
            )
            errors = {
                s.labels["reason"]: s.value
                for s in samples["collector_source_errors_total"]
                if s.labels["source"] == "stripe" and s.value
            }
            assert errors == {"api_5xx": 1.0, "api_rate_limited": 1.0, "api_bad_response": 1.0}
            assert value(samples, "stripe_api_requests_total", endpoint="events", code="500") == 1.0
            assert value(samples, "stripe_api_requests_total", endpoint="events", code="429") == 1.0
            assert api.served[:4] == ["500", "429", "garbage", "ok"]
            health = await _health(run)
            assert health["sources"]["stripe"]["state"] == "running"  # degraded input, not a dead source
            assert "api_bad_response" in health["sources"]["stripe"]["last_error"]
            assert (await run.get("/health/ready"))[0] == 200


async def test_github_api_500_429_and_garbage_are_counted_and_polling_recovers(tmp_path: Path) -> None:
    api = FlakyAPI(["500", "429", "garbage"], [])
    async with flaky(api):
        gh = GitHubSettings(token="ghp_faults", repositories=["octo/shop"], api_url=api.url, poll_interval=1)
        async with serve(make_settings(tmp_path, github=gh)) as run:
            samples = await _until(
                run,
                lambda s: (
                    "ok" in api.served and (value(s, "github_api_requests_total", status="200") or 0) >= 2
                ),
            )
            assert value(samples, "github_api_requests_total", status="500") == 1.0
            assert value(samples, "github_api_requests_total", status="429") == 1.0
            errors = {
                s.labels["reason"]: s.value
                for s in samples["collector_source_errors_total"]
                if s.labels["source"] == "github" and s.value
            }
            assert errors.get("rate_limited") == 1.0
            assert sum(errors.values()) >= 3  # the 500 and the garbage are counted under their own reasons
            assert value(samples, "github_api_rate_limit_remaining") == 4999.0
            assert (await run.get("/health/live"))[0] == 200
            assert (await _health(run))["sources"]["github"]["state"] == "running"


async def test_dns_failure_inside_a_private_network_namespace(tmp_path: Path) -> None:
    # Run by the test below inside `unshare -n`: there the lookup fails for real and no query leaves.
    if os.environ.get(_NETNS_FLAG) != "1":
        pytest.skip("runs only inside the private network namespace set up by the next test")

    async def echo(ws) -> None:  # type: ignore[no-untyped-def]
        async for msg in ws:
            await ws.send(msg)

    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        targets = [
            {"url": "ws://collector-fault-test.invalid/ws", "name": "nxdomain"},
            {"url": f"ws://127.0.0.1:{port}/ws", "name": "good"},
        ]
        ws = WebSocketSettings(targets=targets, interval=0.2, timeout=3)
        async with serve(make_settings(tmp_path, websocket=ws)) as run:
            samples = await _until(
                run,
                lambda s: (
                    (value(s, "probe_websocket_failures_total", target="nxdomain", reason="dns") or 0) >= 2
                    and value(s, "probe_websocket_success", target="good") == 1.0
                ),
            )
            assert value(samples, "probe_websocket_success", target="nxdomain") == 0.0
            assert value(samples, "probe_websocket_failures_total", target="good", reason="dns") in (
                None,
                0.0,
            )
            assert (await run.get("/health/ready"))[0] == 200
            await asyncio.sleep(0)


def test_a_probe_target_that_does_not_resolve_is_a_dns_failure_not_an_outage() -> None:
    # A real DNS failure without sending a query anywhere: a fresh network namespace has only loopback,
    # so the resolver is unreachable and getaddrinfo fails at once (EAI_AGAIN).
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs root, unshare and ip to make a private network namespace")
    test = f"{Path(__file__).relative_to(REPO)}::test_dns_failure_inside_a_private_network_namespace"
    result = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            "sh",
            "-c",
            f'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider {test}',
            sys.executable,
        ],
        cwd=REPO,
        env={**os.environ, _NETNS_FLAG: "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
