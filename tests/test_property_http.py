"""Hostile webhooks over real HTTP (hypothesis, bounded): random bodies, headers, encodings and
signatures to the Stripe and GitHub routes never get a 500, and a rejected delivery changes no state
besides its own rejection counter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.settings import GitHubSettings, StripeSettings
from tests.helpers import make_settings
from tests.threaded import ThreadedCollector, running

REJECT_COUNTERS = {"stripe_webhooks_total", "github_webhooks_total", "collector_http_requests_total"}


class Server(ThreadedCollector):
    def state(self) -> dict[str, Any]:
        fams = self.run.runtime.metrics.families
        return {n: dict(f.series) for n, f in fams.items() if n not in REJECT_COUNTERS}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("prop-http")
    s = make_settings(
        tmp,
        stripe=StripeSettings(webhook_secrets=["whsec_prop"]),
        github=GitHubSettings(webhook_secret="gh_prop"),
    )
    with running(Server(s, timeout=10)) as srv:
        yield srv


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
