"""Kill a running source's task from a test, the way a bug would: its `run()` dies with an exception
and the real supervisor (`collector.source.supervise`) restarts it after its backoff."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.helpers import Running

__all__ = ["crashable", "kill_and_wait_restart"]


def crashable(cls: type) -> type:
    """A subclass of source class `cls` whose `run()` a test can kill mid-run with `kill()`."""

    class Crashable(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self._kill: asyncio.Event | None = None

        def kill(self) -> None:
            assert self._kill is not None, "the source is not running"
            self._kill.set()

        async def run(self) -> None:
            self._kill = asyncio.Event()
            inner = asyncio.create_task(super().run(), name=f"{self.name}-run")
            killed = asyncio.create_task(self._kill.wait())
            try:
                done, _ = await asyncio.wait({inner, killed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                killed.cancel()
            if inner in done:
                return inner.result()
            inner.cancel()  # the task dies mid-run, wherever it was
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await inner
            raise RuntimeError("killed by the test")

    Crashable.__name__ = f"Crashable{cls.__name__}"
    return Crashable


async def kill_and_wait_restart(running: Running, name: str, timeout: float = 20.0) -> None:
    """Kill source `name` and wait until the supervisor has restarted it and it runs again."""
    for source, ctx in running.runtime.sources:
        if ctx.name == name:
            restarts = ctx.status.restarts
            source.kill()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not (ctx.status.restarts > restarts and ctx.status.phase == "running"):
                if loop.time() > deadline:
                    raise AssertionError(f"{name} was not restarted: {ctx.status}")
                await asyncio.sleep(0.02)
            return
    raise AssertionError(f"no source {name}")
