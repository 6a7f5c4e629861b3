"""Webhook benchmark: signed Stripe events through `POST /webhooks/stripe` of the real collector.

32 concurrent keep-alive connections from one client on loopback; every event has a unique id
and is sent once, then a tenth of them again: all must be processed exactly once (the re-sends are
answered as duplicates, `stripe_payments_total` equals the number of distinct events).

Several runs against one collector, median reported. Besides events/s (which on a shared 2-core
machine also depends on what else runs, the client included), the collector's own CPU time per event
is reported: events per server CPU-second does not depend on the neighbours.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil

from bench.daemon import _free_port

FIXTURE = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bench" / "payment_intent.succeeded.json"
)
SECRET = "whsec_bench_secret"


def _bodies(n: int, run: int = 0) -> list[bytes]:
    base = json.loads(FIXTURE.read_text())
    out = []
    for i in range(n):
        ev = copy.deepcopy(base)
        ev["id"] = f"evt_bench_{run:02d}_{i:08d}"
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


async def _send_raw(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    """The same deliveries from a lean HTTP/1.1 keep-alive client: requests signed and built before
    the clock starts, responses read by status line and Content-Length.

    On a 2-core machine the aiohttp client costs nearly as much CPU per request as the collector
    itself, so it would measure the client; this one leaves the CPU to the collector.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    requests = [
        f"{head}Stripe-Signature: {_sign(b)}\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies
    ]
    codes: dict[int, int] = {}
    todo = iter(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for req in todo:
                writer.write(req)
                status = int((await reader.readline()).split(b" ", 2)[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                codes[status] = codes.get(status, 0) + 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began, codes


#: The signature-only floor: an aiohttp server whose handler reads the body, checks the
#: Stripe-Signature header as Stripe documents it (HMAC-SHA256 of "t.body", 5-minute tolerance) and
#: answers 200, nothing else. Same client, same events: what the HTTP stack and the check cost.
FLOOR_SERVER = """
import hashlib, hmac, sys, time
from aiohttp import web
SECRET = sys.argv[2].encode()
async def handle(request):
    body = await request.read()
    parts = dict(p.split("=", 1) for p in request.headers.get("Stripe-Signature", "").split(",") if "=" in p)
    ts = parts.get("t", "")
    mac = hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    ok = ts.isdigit() and abs(time.time() - int(ts)) <= 300 and hmac.compare_digest(mac, parts.get("v1", ""))
    return web.Response(status=200 if ok else 400, text="ok")
async def ready(request):
    return web.Response(text="ok")
app = web.Application()
app.add_routes([web.post("/webhooks/stripe", handle), web.get("/health/ready", ready)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def bench_floor(events: int, concurrency: int = 32, runs: int = 1) -> dict[str, Any]:
    """The signature-only floor: events/s and events per server CPU-second (median of `runs`)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR_SERVER, str(port), SECRET], stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    rates, cpu_ms = [], []
    try:
        asyncio.run(_wait_ready(base))
        server = psutil.Process(proc.pid)
        for run in range(runs):
            bodies = _bodies(events, 50 + run)
            before = sum(server.cpu_times()[:2])
            elapsed, codes = asyncio.run(_send_raw(base + "/webhooks/stripe", bodies, concurrency))
            cpu = sum(server.cpu_times()[:2]) - before
            if set(codes) != {200}:
                raise RuntimeError(f"floor server answered {codes}")
            rates.append(events / elapsed)
            cpu_ms.append(cpu / events * 1e3)
    finally:
        proc.terminate()
        proc.wait(15)
    per = statistics.median(cpu_ms)
    return {
        "events_per_s": statistics.median(rates),
        "events_per_server_cpu_s": 1e3 / per if per > 0 else float("inf"),
    }


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def bench_webhooks(events: int, concurrency: int = 32, runs: int = 1, client: str = "raw") -> dict[str, Any]:
    """Events/s (median of `runs`) of `events` distinct signed events per run; then a tenth of all of
    them re-sent (with aiohttp); exactly-once checked over everything.

    Args:
        client: `raw` (lean keep-alive client, the default) or `aiohttp` for the timed runs.
    """
    send = _send_raw if client == "raw" else _send
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
    rates: list[float] = []
    cpu_ms: list[float] = []
    codes: dict[int, int] = {}
    sent: list[bytes] = []
    try:
        asyncio.run(_wait_ready(base))
        server = psutil.Process(proc.pid)
        for run in range(runs):
            bodies = _bodies(events, run)
            before = sum(server.cpu_times()[:2])
            elapsed, run_codes = asyncio.run(send(base + "/webhooks/stripe", bodies, concurrency))
            cpu = sum(server.cpu_times()[:2]) - before
            rates.append(events / elapsed)
            cpu_ms.append(cpu / events * 1e3)
            for code, n in run_codes.items():
                codes[code] = codes.get(code, 0) + n
            sent += bodies
        _e2, dup_codes = asyncio.run(_send(base + "/webhooks/stripe", sent[::10], concurrency))
        text = asyncio.run(_get(base + "/metrics"))
    finally:
        proc.terminate()
        proc.wait(15)
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)
    processed = _metric(text, "stripe_webhooks_total", status="processed")
    duplicates = _metric(text, "stripe_webhooks_total", status="duplicate")
    payments = _metric(text, "stripe_payments_total")
    cpu_per_event = statistics.median(cpu_ms)
    return {
        "events": events,
        "runs": runs,
        "client": client,
        "concurrency": concurrency,
        "events_per_s": statistics.median(rates),
        "events_per_s_runs": rates,
        "server_cpu_ms_per_event": cpu_per_event,
        "events_per_server_cpu_s": 1e3 / cpu_per_event if cpu_per_event > 0 else float("inf"),
        "codes": codes,
        "processed": processed,
        "duplicates": duplicates,
        "payments": payments,
        "exactly_once": processed == len(sent)
        and payments == len(sent)
        and duplicates == len(sent[::10])
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
