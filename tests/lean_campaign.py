"""The lean-path differential campaign (tests/test_web_lean.py runs a bounded one, tests/campaign_web_lean.py
the long one): seeded random connections of Stripe webhook deliveries, good and hostile, pipelined and
cut anywhere, sent to a collector with the lean path and to one without it; what each connection
received, the counters both agree on, and the generator's own count of the events recorded.
(Not named test_*: pytest collects nothing here.)"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collector.settings import HttpSettings, StripeSettings
from collector.sources import SOURCES
from collector.web import guard as guard_module
from tests.helpers import free_port, make_settings
from tests.websecurity_support import Served, serve_guarded

SECRET = "whsec_lean_campaign"
FIXTURE = Path(__file__).parent / "fixtures" / "bench" / "payment_intent.succeeded.json"
PATH = b"/webhooks/stripe"
STRIPE_MAX = 6000  # COLLECTOR_STRIPE__MAX_BODY_BYTES here: the fixture (~4 kB) fits, padded ones not
HTTP_MAX = 12000  # COLLECTOR_HTTP__MAX_BODY_BYTES


def _sign(body: bytes, secret: str = SECRET, t: int | None = None) -> bytes:
    ts = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}".encode()


@dataclass
class Campaign:
    """One seed's connections (each a list of raw requests) and the ground truth they imply."""

    rng: random.Random
    base: dict[str, Any]
    ids: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)

    def body(self, event_id: str, pad: int = 0) -> bytes:
        ev = copy.deepcopy(self.base)
        ev["id"] = event_id
        ev["created"] = int(time.time())
        if pad:
            ev["data"]["object"]["metadata"] = {"pad": "x" * pad}
        return json.dumps(ev).encode()

    def new_id(self) -> str:
        self.ids.append(f"evt_lean_{len(self.ids):05d}")
        return self.ids[-1]

    def request(self) -> tuple[bytes, bool, str | None]:
        """One raw request, whether it ends its connection (the server closes after it), and the id
        of the event it delivers validly signed (None: it records nothing)."""
        rng = self.rng
        kind = rng.choices(
            [
                "new", "again", "bad_sig", "no_sig", "expired", "malformed_sig", "not_json", "too_big",
                "over_http", "gzip", "chunked", "expect", "http10", "http10_keep", "close", "query",
                "get", "other_path", "big_head", "health", "non_ascii_sig",
            ],
            weights=[30, 8, 4, 2, 2, 2, 2, 2, 1, 2, 2, 1, 1, 1, 2, 1, 1, 2, 1, 4, 1],
        )[0]  # fmt: skip
        path, version, extra, closes = PATH, b"HTTP/1.1", b"", False
        event_id = self.new_id() if kind != "again" or not self.ids else rng.choice(self.ids)
        body = self.body(event_id)
        sig = _sign(body)
        valid = kind in ("new", "again", "gzip", "chunked", "expect", "http10", "http10_keep", "close", "query")  # fmt: skip
        if kind == "bad_sig":
            sig = _sign(body, "whsec_wrong")
        elif kind == "no_sig":
            sig = b""
        elif kind == "expired":
            sig = _sign(body, t=int(time.time()) - 3600)
        elif kind == "malformed_sig":
            sig = b"t=abc,v1=" + b"0" * 64
        elif kind == "non_ascii_sig":
            sig = b"t=1,v1=\xc3\xa9" + b"0" * 62
        elif kind == "not_json":
            body = b'{"id": "evt_x", "type": '
            sig = _sign(body)
        elif kind == "too_big":
            body = self.body(self.new_id(), pad=STRIPE_MAX)
            sig = _sign(body)
        elif kind == "over_http":
            body = self.body(self.new_id(), pad=HTTP_MAX)
            sig = _sign(body)
            closes = True  # refused unread: the connection closes
        elif kind == "http10":
            version, closes = b"HTTP/1.0", True
        elif kind == "http10_keep":
            version, extra = b"HTTP/1.0", b"Connection: keep-alive\r\n"
        elif kind == "close":
            extra, closes = b"Connection: close\r\n", True
        elif kind == "query":
            path = PATH + b"?attempt=2"
        elif kind == "get":
            return b"GET " + PATH + b" HTTP/1.1\r\nHost: x\r\n\r\n", False, None
        elif kind == "other_path":
            path = rng.choice(
                [b"/webhooks//stripe", b"/webhooks/stripe/", b"/Webhooks/stripe", b"/webhooks/%73tripe"]
            )
            # aiohttp's router decodes the path: `%73tripe` is the webhook route (on aiohttp's path).
            valid = path == b"/webhooks/%73tripe"
        elif kind == "big_head":
            extra, closes = b"X-Pad: " + b"p" * 3000 + b"\r\n", True  # a parser refusal: 431, closed
        elif kind == "health":
            return b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", False, None
        if kind == "gzip":
            body = gzip.compress(body)
            extra = b"Content-Encoding: gzip\r\n"
        head = b"POST " + path + b" " + version + b"\r\nHost: x\r\nContent-Type: application/json\r\n" + extra
        if sig:
            head += b"Stripe-Signature: " + sig + b"\r\n"
        if kind == "chunked":
            cut = rng.randrange(1, len(body))
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:cut], body[cut:]))
            return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n", False, event_id
        if kind == "expect":
            head += b"Expect: 100-continue\r\n"
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, closes, event_id if valid else None

    def connection(self) -> tuple[list[bytes], list[str]]:
        """A connection's requests, up to the first the server closes it after, and the events of
        them it records."""
        out, recorded = [], []
        for _ in range(self.rng.randint(1, 6)):
            req, closes, valid = self.request()
            out.append(req)
            if valid is not None:
                recorded.append(valid)
            if closes:
                return out, recorded
        # Ends every connection the same way, so a reader can wait for the server to close it.
        return [*out, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"], recorded

    def segments(self, requests: list[bytes]) -> list[bytes]:
        """The connection's bytes cut as a client might write them: whole requests, pipelined ones,
        or a request split anywhere (a head without its body, a body in pieces)."""
        data = b"".join(requests)
        style = self.rng.choice(["each", "pipelined", "cut"])
        if style == "each":
            return requests
        if style == "pipelined":
            return [data]
        cuts = sorted(self.rng.sample(range(1, len(data)), min(len(data) - 1, self.rng.randint(1, 4))))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _settings(tmp_path: Path) -> Any:
    return make_settings(
        tmp_path,
        SOURCES.only("stripe"),
        stripe=StripeSettings(webhook_secrets=[SECRET], max_body_bytes=STRIPE_MAX),
        http=HttpSettings(max_body_bytes=HTTP_MAX, max_header_bytes=2048, max_client_share=1.0),
        webhook_listen=f"127.0.0.1:{free_port()}",
    )


@asynccontextmanager
async def _collector(tmp_path: Path, lean: bool, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    with monkeypatch.context() as m:
        if not lean:
            m.setattr(guard_module, "_lean_routes", lambda _app, _guard: {})
        async with serve_guarded(_settings(tmp_path), SOURCES.only("stripe")) as srv:
            source = srv.source
            await asyncio.wait_for(source.ready.wait(), 10)
            yield srv


async def _exchange(srv: Served, listener: str, segments: list[bytes], pause: float) -> bytes:
    host, port = next(s for s in srv.sites if s.listener == listener).address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for seg in segments:
            writer.write(seg)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), 15)
    except ConnectionResetError:
        return b"<reset>"
    finally:
        writer.close()


_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
# The families both collectors must agree on, every series (the rest are timings and process stats).
_COMPARED = (
    "collector_http_requests_total",
    "collector_http_rejected_total",
    "collector_source_errors_total",
    "stripe_webhooks_total",
    "stripe_payments_total",
    "stripe_payment_value_total",
)


async def _counts(srv: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = await srv.metrics()
    out = {}
    for name in _COMPARED:
        for s in samples.get(name, []):
            # The /metrics request itself is counted on its way out: not part of the campaign.
            out[(name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def run_campaign(tmp_path: Path, seed: int, lean: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    rng = random.Random(seed)
    campaign = Campaign(rng, json.loads(FIXTURE.read_text()))
    # Both collectors see the very same bytes: the connections are drawn once, up front.
    plan = []
    for _ in range(rng.randint(4, 10)):
        requests, recorded = campaign.connection()
        listener = rng.choice(["main", "main", "webhook"])
        segments = campaign.segments(requests)
        pause = rng.choice([0.0, 0.0, 0.003])
        # The client's whole ingest budget held by others meanwhile: its first webhook is refused
        # (503) and the connection closed, so it records nothing.
        full = rng.random() < 0.15
        if not full:
            campaign.valid.update(recorded)
        plan.append((listener, segments, pause, full))
    replies = []
    async with _collector(tmp_path / ("lean" if lean else "aiohttp"), lean, monkeypatch) as srv:
        for listener, segments, pause, full in plan:
            held = []
            if full:
                budgets = srv.guard.budgets
                while not isinstance(slot := budgets.acquire(listener, "ingest", "127.0.0.1"), str):
                    held.append(slot)
            replies.append(_DATE.sub(b"\r\nDate: -\r\n", await _exchange(srv, listener, segments, pause)))
            for slot in held:
                slot.release()
        counts = await _counts(srv)
    return replies, counts, campaign
