"""Webhook benchmark: signed Stripe events through `POST /webhooks/stripe` of the real collector.

32 concurrent keep-alive connections from one aiohttp client on loopback; every event has a unique id
and is sent once, then a tenth of them again: all must be processed exactly once (the re-sends are
answered as duplicates, `stripe_payments_total` equals the number of distinct events).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.daemon import _free_port

FIXTURE = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bench" / "payment_intent.succeeded.json"
)
SECRET = "whsec_bench_secret"


def _bodies(n: int) -> list[bytes]:
    base = json.loads(FIXTURE.read_text())
    out = []
    for i in range(n):
        ev = copy.deepcopy(base)
        ev["id"] = f"evt_bench_{i:08d}"
        ev["created"] = int(time.time())
        out.append(json.dumps(ev).encode())
    return out


def _sign(body: bytes) -> str:
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


async def _send(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    codes: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                headers = {"Content-Type": "application/json", "Stripe-Signature": _sign(body)}
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    codes[resp.status] = codes.get(resp.status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, codes


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def bench_webhooks(events: int, concurrency: int = 32) -> dict[str, Any]:
    """Events/s of `events` distinct signed events; then a tenth re-sent; exactly-once checked."""
    tmp = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        COLLECTOR_LISTEN=f"127.0.0.1:{port}",
        COLLECTOR_DATA_DIR=str(tmp),
        COLLECTOR_STRIPE__WEBHOOK_SECRETS=SECRET,
        COLLECTOR_LOG_LEVEL="WARNING",
        COLLECTOR_HTTP__MAX_CONCURRENT_REQUESTS="256",
    )
    err = (tmp / "stderr").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "collector"], env=env, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_ready(base))
        bodies = _bodies(events)
        elapsed, codes = asyncio.run(_send(base + "/webhooks/stripe", bodies, concurrency))
        _e2, dup_codes = asyncio.run(_send(base + "/webhooks/stripe", bodies[::10], concurrency))
        text = asyncio.run(_get(base + "/metrics"))
    finally:
        proc.terminate()
        proc.wait(15)
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)
    processed = _metric(text, "stripe_webhooks_total", status="processed")
    duplicates = _metric(text, "stripe_webhooks_total", status="duplicate")
    payments = _metric(text, "stripe_payments_total")
    return {
        "events": events,
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        "events_per_s": events / elapsed,
        "codes": codes,
        "processed": processed,
        "duplicates": duplicates,
        "payments": payments,
        "exactly_once": processed == events
        and payments == events
        and duplicates == len(bodies[::10])
        and set(codes) == {200}
        and set(dup_codes) == {200},
    }


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


async def _wait_ready(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(base + "/health/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("collector not ready")
