"""Each HTTP limit against a real client on loopback: body size, head size, slow heads and bodies,
concurrency per listener, malformed requests, handler crashes; each refusal counted exactly."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from collector.settings import HttpSettings
from tests.helpers import free_port, value
from tests.websecurity_support import Served, echo_settings, serve_guarded


async def _raw(srv: Served, data: bytes, listener: str = "main", read_timeout: float = 30.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or `read_timeout`)."""
    host, port = next(s for s in srv.sites if s.listener == listener).address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def _rejected(samples, reason: str, listener: str = "main") -> float | None:  # type: ignore[no-untyped-def]
    return value(samples, "collector_http_rejected_total", listener=listener, reason=reason)


async def test_body_over_the_limit_gets_413_whether_announced_or_chunked(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path, http=HttpSettings(max_body_bytes=2048))) as srv:
        status, _h, body = await srv.request("POST", "/webhooks/test", data=b"x" * 2048)
        assert status == 200 and body == b'{"bytes": 2048}'
        assert (await srv.request("POST", "/webhooks/test", data=b"x" * 2049))[0] == 413

        async def chunks():  # no Content-Length: the limit applies while reading
            for _ in range(5):
                yield b"y" * 1000

        assert (await srv.request("POST", "/webhooks/test", data=chunks()))[0] == 413
        samples = await srv.metrics()
        assert _rejected(samples, "body_too_large") == 2.0
        assert value(samples, "collector_http_requests_total", listener="main", code="413") == 2.0
        assert srv.source.hits == 1  # the handler never saw the refused bodies


async def test_request_head_over_the_limit_gets_431(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path, http=HttpSettings(max_header_bytes=2048))) as srv:
        # Many small headers adding up past the limit (the guard's total check).
        many = {f"X-Pad-{i}": "v" * 40 for i in range(60)}
        assert (await srv.request("GET", "/metrics", headers=many))[0] == 431
        # One header line longer than the limit (the HTTP parser's check).
        reply = await _raw(srv, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
        assert reply.split(b"\r\n")[0].endswith(b" 431 Request Header Fields Too Large")
        assert (await srv.request("GET", "/metrics", headers={"X-Ok": "v" * 100}))[0] == 200
        samples = await srv.metrics()
        assert _rejected(samples, "headers_too_large") == 2.0


async def test_a_client_trickling_its_request_head_is_disconnected_and_counted(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path, http=HttpSettings(header_timeout=0.3))) as srv:
        host, port = srv.sites[0].address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
        await writer.drain()
        # The server closes the connection without an answer (slowloris defence); no timing is asserted,
        # only that it happens well before the generous read timeout.
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        # An idle keep-alive connection is not a slow client.
        idle_r, idle_w = await asyncio.open_connection(host, port)
        samples = await srv.metrics()
        assert _rejected(samples, "header_timeout") == 1.0
        idle_w.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        await idle_w.drain()
        assert (await idle_r.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        idle_w.close()


async def test_a_client_trickling_its_body_gets_408(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path, http=HttpSettings(body_timeout=0.3))) as srv:
        head = b"POST /webhooks/test HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        reply = await _raw(srv, head + b"{" * 10)
        assert reply.split(b"\r\n")[0].endswith(b" 408 Request Timeout")
        samples = await srv.metrics()
        assert _rejected(samples, "body_timeout") == 1.0
        assert srv.source.hits == 0


async def test_each_route_class_has_its_own_budget_so_scrapes_and_health_never_starve(
    tmp_path: Path,
) -> None:
    settings = echo_settings(
        tmp_path,
        webhook_listen=f"127.0.0.1:{free_port()}",
        http=HttpSettings(max_concurrent_other=2, max_client_share=1.0),
    )
    async with serve_guarded(settings) as srv:
        slow = [asyncio.create_task(srv.request("GET", "/slow")) for _ in range(2)]
        while srv.source.entered < 2:
            await asyncio.sleep(0.01)
        status, headers, _ = await srv.request("GET", "/slow")
        assert status == 503 and headers["Retry-After"] == "1"
        # /metrics, the health routes and the webhooks have budgets of their own.
        assert (await srv.request("GET", "/health/live"))[0] == 200
        assert (await srv.request("GET", "/health"))[0] == 200
        assert (await srv.request("POST", "/webhooks/test", data=b"{}"))[0] == 200
        assert (await srv.request("POST", "/webhooks/test", "webhook", data=b"{}"))[0] == 200
        samples = await srv.metrics()
        assert (
            value(samples, "collector_http_route_class_in_flight", listener="main", route_class="other") == 2
        )
        srv.source.release.set()
        assert [r[0] for r in await asyncio.gather(*slow)] == [200, 200]
        samples = await srv.metrics()
        assert _rejected(samples, "concurrency") == 1.0
        assert _rejected(samples, "concurrency", "webhook") == 0.0
        assert value(samples, "collector_http_requests_in_flight", listener="main") == 1.0  # this scrape
        assert value(samples, "collector_http_requests_total", listener="main", code="503") == 1.0


async def _get_from(srv: Served, source: str, path: str) -> int:
    """GET `path` from a chosen loopback source address (Linux routes all of 127.0.0.0/8 to lo)."""
    host, port = srv.sites[0].address
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    line = await reader.readline()
    writer.close()
    return int(line.split()[1])


async def test_one_client_address_gets_only_its_share_of_a_class(tmp_path: Path) -> None:
    settings = echo_settings(tmp_path, http=HttpSettings(max_concurrent_other=4, max_client_share=0.5))
    async with serve_guarded(settings) as srv:
        slow = [asyncio.create_task(_get_from(srv, "127.0.0.1", "/slow")) for _ in range(2)]
        while srv.source.entered < 2:
            await asyncio.sleep(0.01)
        assert await _get_from(srv, "127.0.0.1", "/slow") == 503  # 127.0.0.1 holds its 2 of 4
        other = asyncio.create_task(_get_from(srv, "127.0.0.2", "/slow"))  # another address is served
        while srv.source.entered < 3:
            await asyncio.sleep(0.01)
        srv.source.release.set()
        assert await asyncio.gather(*slow, other) == [200, 200, 200]
        samples = await srv.metrics()
        assert _rejected(samples, "client_concurrency") == 1.0
        assert _rejected(samples, "concurrency") == 0.0


async def test_malformed_requests_get_400_and_are_logged_once_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_guarded(echo_settings(tmp_path)) as srv:
        for garbage in (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 3 + b"\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
        ):
            for _ in range(7):
                reply = await _raw(srv, garbage)
                assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request")
        samples = await srv.metrics()
        assert _rejected(samples, "bad_request") == 14.0
    mine = [r for r in caplog.records if r.name == "collector.web" and "parser" in r.getMessage()]
    assert 1 <= len(mine) <= 5  # LogFirst: a flood of garbage is a counter, not a log flood
    assert not [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= logging.ERROR]


async def test_a_crashing_handler_answers_500_and_the_server_keeps_serving(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path)) as srv:
        for _ in range(3):
            status, _h, body = await srv.request("GET", "/boom")
            assert status == 500 and b"handler bug" not in body  # no internals leak to the client
        samples = await srv.metrics()
        assert _rejected(samples, "handler_error") == 3.0
        assert value(samples, "collector_http_requests_total", listener="main", code="500") == 3.0


async def test_connections_are_counted_per_listener(tmp_path: Path) -> None:
    async with serve_guarded(echo_settings(tmp_path)) as srv:
        host, port = srv.sites[0].address
        conns = [await asyncio.open_connection(host, port) for _ in range(3)]
        async with aiohttp.ClientSession() as session, session.get(srv.url() + "/metrics") as resp:
            text = await resp.text()
        from tests.helpers import parse

        assert value(parse(text), "collector_http_connections", listener="main") == 4.0
        for _r, w in conns:
            w.close()
