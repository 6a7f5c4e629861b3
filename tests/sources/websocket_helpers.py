"""WebSocket test support: `websockets` servers on loopback (echo, scripted, silent, muted), the probe
settings the tests use, and reading failure counts from a scrape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.http11 import Request

from collector.sources.websocket.logic import REASONS
from tests.helpers import free_port, make_settings, value

SLOW = 3600  # periodic interval: exactly one probe happens during a test, so counts are exact


@asynccontextmanager
async def ws_server(handler: Callable[[ServerConnection], Awaitable[None]], **kw: Any) -> AsyncIterator[int]:
    """A `websockets` server on a free loopback port; yields the port."""
    kw.setdefault("ping_interval", None)  # the server must not ping us: we test our own pings
    kw.setdefault("close_timeout", 0.2)  # a muted connection never answers the closing handshake
    async with ws_serve(handler, "127.0.0.1", 0, **kw) as server:
        yield next(iter(server.sockets)).getsockname()[1]


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def pong(ws: ServerConnection) -> None:
    """The app's scripted exchange: {"type":"ping"} -> a welcome is pushed first, then {"type":"pong"}."""
    await ws.send(json.dumps({"type": "welcome"}))
    async for message in ws:
        kind = json.loads(message).get("type")
        await ws.send(json.dumps({"type": "pong" if kind == "ping" else "error", "ts": 1}))


async def scrape_until(app: Any, targets: list[str], timeout: float = 20.0) -> dict[str, Any]:
    """Scrape until every target has finished its first probe (its status code series exists)."""
    return await app.wait_for(
        lambda s: all(value(s, "probe_websocket_status_code", target=t) is not None for t in targets), timeout
    )


def failures(samples: dict[str, Any], target: str) -> dict[str, float]:
    """Non-zero failure counts of one target by reason (every reason series must exist)."""
    counts = {r: value(samples, "probe_websocket_failures_total", target=target, reason=r) for r in REASONS}
    assert None not in counts.values(), counts
    return {r: c for r, c in counts.items() if c}


def settings(tmp_path: Path, targets: list[Any], **kw: Any) -> Any:
    return make_settings(tmp_path, websocket={"targets": targets, "interval": SLOW, "timeout": 2.0, **kw})


@asynccontextmanager
async def silent_tcp_server() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """Accepts TCP connections and never says a word: the upgrade never completes."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], held
    finally:
        for w in held:
            w.close()
        server.close()


def mute_after_upgrade(conn: ServerConnection, _request: Request, response: Any) -> Any:
    """`process_response` hook: stop reading before the 101 goes out, so no ping is ever answered.

    (Pausing in the handler would race with a ping that arrives before the handler runs.)
    """
    conn.transport.pause_reading()
    return response


async def hold_open(ws: ServerConnection) -> None:
    await ws.wait_closed()


def unused_port() -> int:
    return free_port()  # bound then released: nothing listens there
