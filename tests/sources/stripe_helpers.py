"""Stripe test support: fixture events with fresh ids, Stripe-exact signing, a fake Stripe API on loopback."""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stripe"
SECRET = "whsec_test_primary"
OLD_SECRET = "whsec_test_previous"
API_KEY = "sk_test_collector"

_ids = itertools.count(1)


def fixture(name: str, generation: str = "stripe-ruby-mock") -> dict[str, Any]:
    """One whole event from tests/fixtures/stripe (a fresh copy)."""
    return json.loads((FIXTURES / generation / f"{name}.json").read_text())


def event(
    name: str,
    *,
    created: int | None = None,
    event_id: str | None = None,
    generation: str = "stripe-ruby-mock",
    **obj: Any,
) -> dict[str, Any]:
    """A fixture event with a unique id (the upstream files all share one) and `data.object` overrides."""
    ev = copy.deepcopy(fixture(name, generation))
    ev["id"] = event_id or f"evt_test_{next(_ids):06d}"
    if created is not None:
        ev["created"] = created
    ev["data"]["object"].update(obj)
    return ev


def body_of(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev, indent=2).encode()


def sign(body: bytes, secrets: list[str] | str = SECRET, t: int | None = None) -> str:
    """`Stripe-Signature` exactly as Stripe builds it: t=<ts>,v1=HMAC_SHA256(secret, "<t>.<payload>") per secret."""
    if isinstance(secrets, str):
        secrets = [secrets]
    ts = int(time.time()) if t is None else t
    signed = f"{ts}.".encode() + body
    v1 = ",".join(f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets)
    return f"t={ts},{v1}"


async def post(
    url: str, body: bytes, header: str | None = None, *, secrets: list[str] | str = SECRET
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    sig = sign(body, secrets) if header is None else header
    if sig:
        headers["Stripe-Signature"] = sig
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/webhooks/stripe", data=body, headers=headers) as resp,
    ):
        try:
            payload = await resp.json(content_type=None)
        except (json.JSONDecodeError, aiohttp.ContentTypeError):
            payload = {}
        return resp.status, payload


async def deliver(url: str, ev: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await post(url, body_of(ev))


class FakeStripe:
    """Stripe's `/v1/events` and `/v1/subscriptions` list semantics over in-memory lists.

    Lists are newest first; `starting_after` pages to older items, `ending_before` returns the items
    just newer than the cursor (still newest first); `created[gte]` filters. `fail` holds statuses to
    answer instead of the next requests (a 500 mid-catch-up, a 429).
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []  # oldest first
        self.subscriptions: list[dict[str, Any]] = []
        self.fail: list[int] = []
        self.fail_when: dict[str, int] = {}  # query fragment -> status, once
        self.requests: list[str] = []
        self.deleted: set[str] = set()

    def add(self, *events: dict[str, Any]) -> None:
        self.events.extend(events)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/v1/events", self._events),
                web.get("/v1/subscriptions", self._subs),
                web.get("/v1/subscriptions/{id}", self._sub),
            ]
        )
        return app

    async def _sub(self, request: web.Request) -> web.Response:
        bad = self._check(request)
        if bad is not None:
            return bad
        for sub in self.subscriptions:
            if sub["id"] == request.match_info["id"]:
                return web.json_response(sub)
        return web.json_response(
            {"error": {"type": "invalid_request_error", "code": "resource_missing"}}, 404
        )

    def _check(self, request: web.Request) -> web.Response | None:
        self.requests.append(request.path_qs)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"error": {"type": "invalid_request_error"}}, status=401)
        for fragment, status in list(self.fail_when.items()):
            if fragment in request.query_string:
                del self.fail_when[fragment]
                return web.json_response({"error": {"type": "api_error"}}, status=status)
        if self.fail:
            status = self.fail.pop(0)
            return web.json_response({"error": {"type": "api_error"}}, status=status)
        return None

    async def _events(self, request: web.Request) -> web.Response:
        bad = self._check(request)
        if bad is not None:
            return bad
        q = request.query
        items = [e for e in reversed(self.events) if e["id"] not in self.deleted]  # newest first
        if "created[gte]" in q:
            items = [e for e in items if e["created"] >= int(q["created[gte]"])]
        return self._page(items, q)

    async def _subs(self, request: web.Request) -> web.Response:
        bad = self._check(request)
        if bad is not None:
            return bad
        return self._page(list(reversed(self.subscriptions)), request.query)

    def _page(self, items: list[dict[str, Any]], q: Any) -> web.Response:
        limit = int(q.get("limit", 10))
        ids = [i["id"] for i in items]
        for key in ("starting_after", "ending_before"):
            if key in q and q[key] not in ids:
                return web.json_response(
                    {"error": {"type": "invalid_request_error", "code": "resource_missing"}}, status=404
                )
        if "starting_after" in q:
            rest = items[ids.index(q["starting_after"]) + 1 :]
            page, more = rest[:limit], len(rest) > limit
        elif "ending_before" in q:
            newer = items[: ids.index(q["ending_before"])]
            page, more = newer[-limit:], len(newer) > limit
        else:
            page, more = items[:limit], len(items) > limit
        return web.json_response({"object": "list", "data": page, "has_more": more, "url": "/v1/x"})


@asynccontextmanager
async def fake_stripe(fake: FakeStripe) -> AsyncIterator[str]:
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
