"""Hostile webhooks over real HTTP (hypothesis, bounded): random bodies, headers, encodings and
signatures to the Stripe and GitHub routes never get a 500, and a rejected delivery changes no state
besides its own rejection counter."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.settings import GitHubSettings, StripeSettings
from tests.helpers import make_settings, serve

REJECT_COUNTERS = {"stripe_webhooks_total", "github_webhooks_total", "collector_http_requests_total"}


class Server:
    """The in-process app on its own loop in a thread, so hypothesis can drive it synchronously."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.stop: asyncio.Event | None = None
        self.port = 0
        self.run: Any = None

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        s = make_settings(
            self.tmp,
            stripe=StripeSettings(webhook_secrets=["whsec_prop"]),
            github=GitHubSettings(webhook_secret="gh_prop"),
        )
        async with serve(s) as run:
            self.run = run
            self.port = int(run.url.rsplit(":", 1)[1])
            while not all(ctx.status.state == "running" for _s, ctx in run.runtime.sources):
                await asyncio.sleep(0.02)
            self.ready.set()
            await self.stop.wait()

    def state(self) -> dict[str, Any]:
        fams = self.run.runtime.metrics.families
        return {n: dict(f.series) for n, f in fams.items() if n not in REJECT_COUNTERS}

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers=headers)
            return conn.getresponse().status
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("prop-http"))
    srv.thread.start()
    assert srv.ready.wait(30)
    yield srv
    assert srv.stop is not None
    srv.loop.call_soon_threadsafe(srv.stop.set)
    srv.thread.join(15)


_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
_bodies = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(lambda t: t.encode("utf-16")),
    st.sampled_from(
        [b"{}", b"[]", b'{"id": 1, "type": null}', b'{"data": {"object": []}}', b"\xef\xbb\xbf{}"]
    ),
)
BUDGET = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@BUDGET
@given(
    body=_bodies,
    sig=_header_text,
    ctype=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]),
)
def test_random_stripe_deliveries_are_rejected_without_500_or_state_change(
    server: Server, body: bytes, sig: str, ctype: str
) -> None:
    before = server.state()
    headers = {"Stripe-Signature": sig} | ({"Content-Type": ctype} if ctype else {})
    status = server.post("/webhooks/stripe", body, headers)
    assert status in (400, 401, 413, 415)
    assert server.state() == before


@BUDGET
@given(
    body=_bodies,
    sig=_header_text,
    event=st.sampled_from(
        ["deployment", "deployment_status", "push", "ping", "workflow_run", "issues", "", "zz"]
    ),
    delivery=_header_text,
)
def test_random_github_deliveries_are_rejected_without_500_or_state_change(
    server: Server, body: bytes, sig: str, event: str, delivery: str
) -> None:
    before = server.state()
    headers = {"X-Hub-Signature-256": sig, "X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
    status = server.post("/webhooks/github", body, headers)
    assert status in (400, 401, 413)
    assert server.state() == before
