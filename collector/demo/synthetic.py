"""The synthetic app of `collector demo`: JSON log writer, WebSocket server and webhook sender."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import websockets

from collector.demo.payloads import GitHubScript, StripeScript, github_signature, log_lines, stripe_signature
from collector.logsetup import LogFirst

__all__ = ["AppConfig", "run_app", "send_webhooks"]

log = logging.getLogger("collector.demo")
# the collector may be down for a while (compose start order): say so a few times, not every 2 s
log_first = LogFirst(log, limit=3)


@dataclass
class AppConfig:
    """What the synthetic app does; every part is optional so compose can run it without webhooks."""

    log_dir: Path
    ws_host: str = "127.0.0.1"
    ws_port: int = 0
    lines_per_second: float = 50.0
    collector_url: str | None = None  # where the webhooks go; None: send none
    stripe_secret: str | None = None
    github_secret: str | None = None
    webhook_interval: float = 2.0
    seed: int = 42


async def _write_logs(cfg: AppConfig, stop: asyncio.Event) -> None:
    # winston's File transport appends one JSON object per line; rotation is the tailer's problem.
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.log_dir / "app.log"
    rnd = random.Random(cfg.seed)
    per_tick = max(1, round(cfg.lines_per_second / 4))
    with path.open("a", encoding="utf-8") as fh:
        while not stop.is_set():
            fh.write("\n".join(log_lines(rnd, time.time(), per_tick)) + "\n")
            fh.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


async def _ws_handler(conn: websockets.ServerConnection) -> None:
    # Echo, except the app's JSON ping, which gets the app's JSON pong.
    try:
        async for message in conn:
            try:
                data = json.loads(message)
            except (TypeError, ValueError):
                data = None
            if isinstance(data, dict) and data.get("type") == "ping":
                await conn.send(json.dumps({"type": "pong", "ts": time.time()}))
            else:
                await conn.send(message)
    except websockets.ConnectionClosed:
        pass


async def _send(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], what: str
) -> int | None:
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json", **headers}
        ) as resp:
            await resp.read()
            if resp.status >= 300:
                log_first(f"rejected-{what}", "webhook rejected", what=what, status=resp.status)
            return resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        # the collector may still be starting or restarting: the next event goes out anyway
        log_first(
            f"undelivered-{what}", "webhook not delivered", what=what, error=str(exc) or type(exc).__name__
        )
        return None


async def send_webhooks(cfg: AppConfig, stop: asyncio.Event) -> None:
    assert cfg.collector_url is not None
    run_id = uuid.uuid4().hex[:8]
    stripe, github = StripeScript(run_id), GitHubScript(run_id)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tick = 0
        while not stop.is_set():
            now = time.time()
            if cfg.stripe_secret:
                body = json.dumps(stripe.next_event(now)).encode()
                sig = stripe_signature(cfg.stripe_secret, body, int(now))
                await _send(
                    session, cfg.collector_url + "/webhooks/stripe", body, {"Stripe-Signature": sig}, "stripe"
                )
            if cfg.github_secret and tick % 2 == 0:
                for event, payload in github.next_release(now):
                    body = json.dumps(payload).encode()
                    headers = {
                        "X-GitHub-Event": event,
                        "X-GitHub-Delivery": str(uuid.uuid4()),
                        "X-Hub-Signature-256": github_signature(cfg.github_secret, body),
                    }
                    await _send(session, cfg.collector_url + "/webhooks/github", body, headers, event)
            tick += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), cfg.webhook_interval)


async def run_app(cfg: AppConfig, stop: asyncio.Event, ready: asyncio.Future[int] | None = None) -> None:
    """Run the synthetic app until `stop` is set.

    Args:
        cfg: what to run.
        stop: set to stop every part.
        ready: receives the WebSocket server's port once it listens.
    """
    async with websockets.serve(_ws_handler, cfg.ws_host, cfg.ws_port) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        log.info("demo app serving WebSocket", extra={"url": f"ws://{cfg.ws_host}:{port}/ws"})
        if ready is not None and not ready.done():
            ready.set_result(port)
        tasks = [asyncio.create_task(_write_logs(cfg, stop), name="demo-logs")]
        if cfg.collector_url and (cfg.stripe_secret or cfg.github_secret):
            tasks.append(asyncio.create_task(send_webhooks(cfg, stop), name="demo-webhooks"))
        try:
            await stop.wait()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
