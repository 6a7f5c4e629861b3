"""HTTP/1.1 framing against raw sockets: pipelined requests before a malformed one are answered, parser
refusals say `Connection: close`, too many headers is 431, bad compressed bodies and slow bodies are
counted with a bounded log and no traceback, and non-ASCII signature headers get 4xx, never 500."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import time
import zlib
from pathlib import Path

import pytest

from collector.settings import DeploymentsSettings, GitHubSettings, HttpSettings, StripeSettings
from tests.helpers import make_settings, value
from tests.websecurity_support import Served, echo_settings, serve_guarded


async def _raw(srv: Served, data: bytes, timeout: float = 15.0) -> bytes:
    host, port = srv.sites[0].address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def _statuses(reply: bytes) -> list[int]:
    # Parser refusals answer as HTTP/1.0: the request line that would name the version is what failed.
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", reply)]


def _rejected(samples, reason: str) -> float | None:  # type: ignore[no-untyped-def]
    return value(samples, "collector_http_rejected_total", listener="main", reason=reason)


GET = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_pipelined_requests_before_a_malformed_one_are_all_answered(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path)) as srv:
        post = b"POST /webhooks/test HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        reply = await _raw(srv, GET + post + GET + b"GET / HTTP/9.9\r\n\r\n" + GET)
        # Three valid requests answered in order, then the 400; nothing after it is read.
        assert _statuses(reply) == [200, 200, 200, 400]
        assert srv.source.hits == 1
        head_400 = reply[reply.index(b" 400 Bad Request") :].split(b"\r\n\r\n")[0]
        assert b"Connection: close" in head_400


async def test_a_long_pipeline_is_answered_whole_and_in_order(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path)) as srv:
        reply = await _raw(
            srv, GET * 100 + b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert _statuses(reply) == [200] * 101


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(129)) + b"\r\n", 431),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\x05hello\r\n\r\n", 400),
    ],
)
async def test_parser_refusals_close_the_connection_and_say_so(
    tmp_path: Path, head: bytes, status: int
) -> None:
    async with serve_guarded(echo_settings(tmp_path)) as srv:
        reply = await _raw(srv, head + GET)
        assert _statuses(reply) == [status]
        assert b"\r\nConnection: close\r\n" in reply.split(b"\r\n\r\n")[0] + b"\r\n"
        samples = await srv.metrics()
        assert _rejected(samples, "headers_too_large" if status == 431 else "bad_request") == 1.0


async def test_bad_compressed_bodies_are_400_counted_and_logged_at_most_five_times_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_guarded(echo_settings(tmp_path)) as srv:
        good = gzip.compress(b'{"ok": true}')
        for i in range(40):
            encoding, body = [
                ("gzip", b"\x1f\x8b" + b"garbage" * 5),
                ("deflate", b"not deflate"),
                ("gzip", good[:10] + b"\xff" * 12),
            ][i % 3]
            head = (
                f"POST /webhooks/test HTTP/1.1\r\nHost: x\r\nContent-Encoding: {encoding}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            reply = await _raw(srv, head + body)
            assert _statuses(reply) == [400], (encoding, body, reply[:300])
        body = zlib.compress(b'{"ok": true}')
        head = f"POST /webhooks/test HTTP/1.1\r\nHost: x\r\nContent-Encoding: deflate\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        assert _statuses(await _raw(srv, head.encode() + body)) == [200]  # good ones still decode
        samples = await srv.metrics()
        assert _rejected(samples, "bad_encoding") == 40
        assert srv.source.hits == 1
    assert not [r for r in caplog.records if r.exc_info or r.exc_text]
    web = [r for r in caplog.records if r.name == "collector.web"]
    by_msg: dict[str, int] = {}
    for r in web:
        by_msg[r.getMessage()] = by_msg.get(r.getMessage(), 0) + 1
    assert web and max(by_msg.values()) <= 5, by_msg
    assert not [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= logging.WARNING]


async def test_a_body_slower_than_the_minimum_rate_gets_408_long_before_the_body_timeout(
    tmp_path: Path,
) -> None:
    settings = echo_settings(tmp_path, http=HttpSettings(min_body_rate=100, body_timeout=30))
    async with serve_guarded(settings) as srv:
        host, port = srv.sites[0].address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /webhooks/test HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        began = time.monotonic()
        for _ in range(30):  # one byte every 0.1 s: 10 B/s against a floor of 100 B/s
            writer.write(b"{")
            await writer.drain()
            await asyncio.sleep(0.1)
            if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
                break
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        took = time.monotonic() - began
        assert _statuses(reply) == [408] and took < 10
        # A body at full speed is untouched by the floor.
        status, _h, _b = await srv.request("POST", "/webhooks/test", data=b"x" * 50_000)
        assert status == 200
        samples = await srv.metrics()
        assert _rejected(samples, "body_too_slow") == 1.0
        assert _rejected(samples, "body_timeout") == 0.0


async def test_non_ascii_and_invalid_utf8_signature_headers_get_4xx_never_500(tmp_path: Path) -> None:
    from tests.helpers import serve

    settings = make_settings(
        tmp_path,
        stripe=StripeSettings(webhook_secrets=["whsec_x"]),
        github=GitHubSettings(webhook_secret="gh"),
        deployments=DeploymentsSettings(token="tok"),
    )
    async with serve(settings) as app:
        host, port = app.url.removeprefix("http://").split(":")
        while not all(ctx.status.state == "running" for _s, ctx in app.runtime.sources):
            await asyncio.sleep(0.02)
        cases = [
            (b"/webhooks/stripe", b"Stripe-Signature: t=1,v1=" + b"a" * 63 + b"\xe9"),
            (b"/webhooks/stripe", b"Stripe-Signature: t=1,v1=\xc3\xa9" + b"0" * 62),
            (b"/webhooks/stripe", b"Stripe-Signature: t=\xff\xfe,v1=00"),
            (b"/webhooks/github", b"X-Hub-Signature-256: sha256=" + b"0" * 63 + b"\xff"),
            (b"/webhooks/github", b"X-Hub-Signature-256: sha256=\xc3\xa9"),
            (b"/deployments", b"Authorization: Bearer \xff\xfe"),
            (b"/deployments", b"Authorization: Bearer tok\xc3\xa9"),
        ]
        for path, header in cases:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST "
                + path
                + b" HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: ping\r\nX-GitHub-Delivery: d\r\n"
                + header
                + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
            )
            line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            status = int(line.split()[1])
            assert 400 <= status < 500, (path, header, line)
