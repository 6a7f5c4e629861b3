"""The guard's lean path (`collector.web.lean`) against aiohttp's path, on the same requests.

The campaign sends seeded random connections of Stripe webhook deliveries (new, redelivered, badly
signed, expired, oversized, gzip, chunked, `Expect`, HTTP/1.0, `Connection: close`, query strings,
wrong methods and paths, oversized heads, over-budget clients, health checks between them), pipelined
and cut into random segments, to two collectors: one with the lean path, one without it (aiohttp's
path serves everything, as before the lean path existed). Every byte each connection receives must be
the same (the Date header aside), and so must every request, refusal, delivery and payment counter;
payments must equal the distinct valid events sent, counted by the generator.

The rest checks what the campaign cannot see from outside: the lean path really served the plain
deliveries, answers stay in order behind a pending one, a handler error is aiohttp's 500, secrets are
masked, a connection lost while its answer is pending loses nothing, shutdown waits for it.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from collector.routes import Answer, Route
from collector.settings import HttpSettings, StripeSettings
from collector.source import SourceBase, SourceContext
from collector.sources import SOURCES
from tests.helpers import make_settings, registry_for
from tests.lean_campaign import SECRET, run_campaign
from tests.websecurity_support import Served, serve_guarded


@pytest.mark.parametrize("seed", range(12))
async def test_the_lean_path_answers_byte_for_byte_as_aiohttp(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, ref_counts, campaign = await run_campaign(tmp_path, seed, False, monkeypatch)
    replies, counts, _ = await run_campaign(tmp_path, seed, True, monkeypatch)
    for i, (want, got) in enumerate(zip(reference, replies, strict=True)):
        assert got == want, f"seed {seed}, connection {i}"
    assert counts == ref_counts
    # Exactly once, against the generator's own count: every distinct validly signed event, once.
    payments = sum(v for (name, _l), v in counts.items() if name == "stripe_payments_total")
    assert payments == len(campaign.valid)


# -- what the campaign cannot see from outside -----------------------------------------------------


class LeanToy(SourceBase):
    """Raw routes whose answers a test controls: an echo, a pending one, a crash, a secret."""

    name = "leantoy"

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.pending: list[asyncio.Future[Answer]] = []
        self.raw_calls = 0
        self.aiohttp_calls = 0

    def _raw(self, headers: Any, body: bytes) -> Answer | asyncio.Future[Answer]:
        self.raw_calls += 1
        what = headers.get("X-Do", "echo")
        if what == "boom":
            raise RuntimeError("raw handler bug")
        if what == "later":
            fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            self.pending.append(fut)
            return fut
        if what == "secret":
            return Answer(200, b"token=" + SECRET.encode(), "text/plain")
        return Answer(200, b"echo:" + body, "text/plain")

    async def _handler(self, request: web.Request) -> web.Response:
        self.aiohttp_calls += 1
        answer = self._raw(request.headers, await request.read())
        if not isinstance(answer, Answer):
            answer = await answer
        return answer.response()

    def routes(self) -> list[Route]:
        return [Route("POST", "/lean", self._handler, auth="signed", kind="ingest", raw=self._raw)]

    async def run(self) -> None:
        self.ctx.started()
        await self.ctx.stop.wait()


TOY = registry_for(leantoy=LeanToy)


def _toy_settings(tmp_path: Path, **kw: Any) -> Any:
    return make_settings(tmp_path, TOY, **kw)


def _post(do: str = "echo", body: bytes = b"hi", extra: bytes = b"") -> bytes:
    return b"POST /lean HTTP/1.1\r\nHost: x\r\nX-Do: %s\r\n%sContent-Length: %d\r\n\r\n%s" % (
        do.encode(),
        extra,
        len(body),
        body,
    )


async def _open(srv: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = srv.sites[0].address
    return await asyncio.open_connection(host, port)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    while head.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue): the real one follows
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return int(head.split(b" ", 2)[1]), head, await reader.readexactly(length)


async def test_plain_requests_take_the_lean_path_and_the_rest_take_aiohttps(tmp_path: Path) -> None:
    async with serve_guarded(_toy_settings(tmp_path), TOY) as srv:
        toy = srv.source
        reader, writer = await _open(srv)
        # Pipelined behind a request on aiohttp's path, a plain one takes it too (it is queued there).
        writer.write(
            _post(body=b"a") + _post(body=b"b", extra=b"Expect: 100-continue\r\n") + _post(body=b"c")
        )
        for body in (b"a", b"b", b"c"):
            assert (await _answer(reader))[2] == b"echo:" + body
        # Once the connection is idle again, the lean path serves it again.
        writer.write(_post(body=b"d"))
        assert (await _answer(reader))[2] == b"echo:d"
        writer.close()
        # The raw handler answered all four; aiohttp's handler the one with `Expect` and the one behind.
        assert (toy.raw_calls, toy.aiohttp_calls) == (4, 2)
        samples = await srv.metrics()
        codes = {
            (s.labels["listener"], s.labels["code"]): s.value
            for s in samples["collector_http_requests_total"]
            if s.value
        }
        assert codes == {("main", "200"): 4.0}


async def test_answers_stay_in_order_behind_a_pending_lean_request(tmp_path: Path) -> None:
    async with serve_guarded(_toy_settings(tmp_path), TOY) as srv:
        toy = srv.source
        reader, writer = await _open(srv)
        # A pending request, then (pipelined in the same segment, and in a later one) two more.
        writer.write(_post("later") + _post(body=b"second"))
        while not toy.pending:
            await asyncio.sleep(0.01)
        writer.write(_post(body=b"third") + b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.1)
        assert toy.raw_calls == 1  # nothing behind it was even parsed
        assert srv.guard.budgets.in_flight.get(("main", "ingest")) == 1
        toy.pending[0].set_result(Answer(202, b"first", "text/plain"))
        assert (await _answer(reader))[::2] == (202, b"first")
        assert (await _answer(reader))[::2] == (200, b"echo:second")
        assert (await _answer(reader))[::2] == (200, b"echo:third")
        assert (await _answer(reader))[0] == 200
        writer.close()
        assert srv.guard.budgets.in_flight.get(("main", "ingest"), 0) == 0


@pytest.mark.parametrize("do", ["boom", "later_boom"])
async def test_a_raw_handler_error_is_aiohttps_500_counted_and_logged_once(
    tmp_path: Path, do: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_guarded(_toy_settings(tmp_path), TOY) as srv:
        toy = srv.source
        reader, writer = await _open(srv)
        for _ in range(3):
            writer.write(_post("later" if do == "later_boom" else "boom"))
            if do == "later_boom":
                while not toy.pending:
                    await asyncio.sleep(0.01)
                toy.pending.pop().set_exception(RuntimeError("raw future bug"))
            status, head, body = await _answer(reader)
            assert (status, body) == (500, b"500 Internal Server Error\n")
            assert b"Content-Type: text/plain; charset=utf-8" in head
        writer.close()
        samples = await srv.metrics()
        rejected = {s.labels["reason"]: s.value for s in samples["collector_http_rejected_total"]}
        assert rejected["handler_error"] == 3.0
        assert sum(1 for r in caplog.records if "unhandled exception" in r.getMessage()) <= 5


async def test_secrets_are_masked_in_lean_answers(tmp_path: Path) -> None:
    sources = SOURCES.only("stripe").plus(registry_for(leantoy=LeanToy)["leantoy"])
    settings = make_settings(tmp_path, sources, stripe=StripeSettings(webhook_secrets=[SECRET]))
    async with serve_guarded(settings, sources) as srv:
        toy = next(s for s, _ctx in srv.runtime.sources if isinstance(s, LeanToy))
        reader, writer = await _open(srv)
        writer.write(_post("secret"))
        status, _head, body = await _answer(reader)
        writer.close()
        assert toy.raw_calls == 1
        assert status == 200 and SECRET.encode() not in body and body.startswith(b"token=")


async def test_a_connection_lost_while_its_answer_is_pending_frees_its_slot(tmp_path: Path) -> None:
    async with serve_guarded(_toy_settings(tmp_path), TOY) as srv:
        toy = srv.source
        _reader, writer = await _open(srv)
        writer.write(_post("later"))
        while not toy.pending:
            await asyncio.sleep(0.01)
        writer.close()
        await asyncio.sleep(0.1)
        toy.pending[0].set_result(Answer(200, b"late", "text/plain"))
        await asyncio.sleep(0.05)
        assert srv.guard.budgets.in_flight.get(("main", "ingest"), 0) == 0
        samples = await srv.metrics()
        codes = {s.labels["code"]: s.value for s in samples["collector_http_requests_total"] if s.value}
        assert codes.get("200") == 1.0  # answered (and counted) even though nobody read it


async def test_shutdown_waits_for_a_pending_lean_answer(tmp_path: Path) -> None:
    settings = _toy_settings(tmp_path)
    from collector.app import build_app
    from collector.web import start_sites

    app = build_app(settings, TOY)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    sites = await start_sites(runner, app)
    srv = Served(app, sites)
    toy = srv.source
    reader, writer = await _open(srv)
    writer.write(_post("later"))
    while not toy.pending:
        await asyncio.sleep(0.01)
    cleanup = asyncio.create_task(runner.cleanup())
    await asyncio.sleep(0.2)
    assert not cleanup.done()  # waiting for the answer, as aiohttp waits for a handler
    toy.pending[0].set_result(Answer(200, b"done", "text/plain"))
    assert (await _answer(reader))[::2] == (200, b"done")
    await asyncio.wait_for(cleanup, 10)
    writer.close()


async def test_the_idle_deadline_waits_for_a_pending_lean_answer_then_runs_from_it(tmp_path: Path) -> None:
    async with serve_guarded(_toy_settings(tmp_path, http=HttpSettings(idle_timeout=0.3)), TOY) as srv:
        toy = srv.source
        reader, writer = await _open(srv)
        writer.write(_post("later"))
        while not toy.pending:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.8)  # well past the idle deadline: the request is not idle
        toy.pending[0].set_result(Answer(200, b"slow", "text/plain"))
        assert (await _answer(reader))[::2] == (200, b"slow")
        began = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed for being idle
        assert 0.15 < time.monotonic() - began < 2.0
        writer.close()
