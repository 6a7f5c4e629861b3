"""Reading /health from a running collector: once, or until a predicate holds; a pid no process has."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psutil

from tests.helpers import Running


def missing_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


async def health(run: Running) -> dict[str, Any]:
    status, _h, body = await run.get("/health")
    assert status == 200
    return json.loads(body)


async def until(run: Running, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        h = await health(run)
        if predicate(h):
            return h
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {json.dumps(h['sources'], indent=1)}")
        await asyncio.sleep(0.05)
