"""The in-process collector on its own event loop in a thread, so hypothesis can drive it synchronously."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from collector.settings import Settings
from tests.helpers import serve


class ThreadedCollector:
    """`serve(settings)` in a thread; `post` sends one request over real HTTP and returns the status."""

    def __init__(self, settings: Settings, timeout: float, headers: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        self.headers = headers or {}  # sent with every request, under the caller's own
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.stop: asyncio.Event | None = None
        self.port = 0
        self.run: Any = None

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        async with serve(self.settings) as run:
            self.run = run
            self.port = int(run.url.rsplit(":", 1)[1])
            while not all(ctx.status.state == "running" for _s, ctx in run.runtime.sources):
                await asyncio.sleep(0.02)
            self.ready.set()
            await self.stop.wait()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, body=body, headers={**self.headers, **headers})
            return conn.getresponse().status
        finally:
            conn.close()


@contextmanager
def running(srv: ThreadedCollector) -> Iterator[ThreadedCollector]:
    """Start `srv`, wait until every source runs, and stop it afterwards."""
    srv.thread.start()
    assert srv.ready.wait(30)
    try:
        yield srv
    finally:
        assert srv.stop is not None
        srv.loop.call_soon_threadsafe(srv.stop.set)
        srv.thread.join(15)
