"""Soak: run the real collector for a while under steady load and check that nothing is lost or leaks.

Every second it appends log lines, posts a signed GitHub webhook and a signed Stripe webhook, asks
`/probe` to probe a local WebSocket server (which the websocket source also probes on its own), and
scrapes `/metrics` and `/health`. At the end it checks exact counts for everything it sent, and that
after warm-up the collector's RSS grew less than 10% and its open fds and asyncio tasks did not grow.

    python bench/soak.py                 # 10 minutes (the documented run)
    python bench/soak.py --duration 60   # the CI mode (tests/test_soak.py)

Prints one JSON report; exits 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
GITHUB_SECRET = "soak-github-secret-0123456789"
STRIPE_SECRET = "whsec_soak_0123456789abcdef"
STRIPE_EVENT = REPO / "tests" / "fixtures" / "stripe" / "stripe-ruby-mock" / "payment_intent.succeeded.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of `name` over the samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= set(ls))


def stripe_body(template: dict[str, Any], n: int) -> bytes:
    ev = copy.deepcopy(template)
    ev["id"] = f"evt_soak_{n:08d}"
    ev["data"]["object"].update(
        {"id": f"pi_soak_{n:08d}", "amount": 1234, "amount_received": 1234, "currency": "usd"}
    )
    return json.dumps(ev).encode()


def stripe_signature(body: bytes) -> str:
    ts = int(time.time())
    mac = hmac.new(STRIPE_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


class Soak:
    def __init__(self, duration: float, warmup: float, lines_per_second: int, workdir: Path) -> None:
        self.duration, self.warmup, self.lps = duration, warmup, lines_per_second
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent = {"lines": 0, "github": 0, "stripe": 0, "probes": 0, "scrapes": 0}
        self.trend: list[dict[str, float]] = []  # one point per second after warm-up
        self.errors: list[str] = []

    def env(self, ws_port: int) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        return {
            **base,
            "COLLECTOR_LISTEN": f"127.0.0.1:{self.port}",
            "COLLECTOR_DATA_DIR": str(self.dir / "data"),
            "COLLECTOR_LOGS__PATHS": str(self.dir / "logs" / "*.log"),
            "COLLECTOR_LOGS__START_AT": "beginning",
            "COLLECTOR_GITHUB__WEBHOOK_SECRET": GITHUB_SECRET,
            "COLLECTOR_STRIPE__WEBHOOK_SECRETS": STRIPE_SECRET,
            "COLLECTOR_WEBSOCKET__TARGETS": json.dumps(
                [{"url": f"ws://127.0.0.1:{ws_port}/ws", "name": "soak"}]
            ),
            "COLLECTOR_WEBSOCKET__INTERVAL": "1",
            "COLLECTOR_WEBSOCKET__PROBE_ALLOW": f"ws://127.0.0.1:{ws_port}/*",
            "COLLECTOR_PROCESS__PID": str(os.getpid()),
            "COLLECTOR_LOG_LEVEL": "WARNING",
        }

    async def run(self) -> dict[str, Any]:
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        log_path = self.dir / "logs" / "app.log"
        log_path.touch()
        template = json.loads(STRIPE_EVENT.read_text())

        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        async with websockets.serve(echo, "127.0.0.1", 0) as ws_server:
            ws_port = next(iter(ws_server.sockets)).getsockname()[1]
            stderr = (self.dir / "collector.stderr").open("wb")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", env=self.env(ws_port), cwd=self.dir, stderr=stderr
            )
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                    await self._wait_ready(http, proc)
                    began = time.monotonic()
                    with log_path.open("a") as log:
                        tick = 0
                        while time.monotonic() - began < self.duration:
                            await self._tick(http, log, tick, template, ws_port, time.monotonic() - began)
                            tick += 1
                            await asyncio.sleep(max(0.0, began + tick - time.monotonic()))
                    final = await self._settle(http)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        code = await asyncio.wait_for(proc.wait(), 30)
                    except TimeoutError:
                        proc.kill()
                        code = await proc.wait()
                    if code != 0:
                        self.errors.append(f"collector exited {code} on SIGTERM")
                stderr.close()
        return self._report(final, ws_port)

    async def _wait_ready(self, http: aiohttp.ClientSession, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"collector exited {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(self.url + "/health/ready") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError("collector not ready after 60 s")

    async def _tick(
        self,
        http: aiohttp.ClientSession,
        log: Any,
        tick: int,
        template: dict[str, Any],
        ws_port: int,
        elapsed: float,
    ) -> None:
        for i in range(self.lps):
            level = ("info", "warn", "error")[i % 3]
            log.write(json.dumps({"level": level, "message": "soak", "tick": tick, "i": i}) + "\n")
        log.flush()
        self.sent["lines"] += self.lps

        body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": tick}).encode()
        sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sig,
        }
        await self._expect(http.post(self.url + "/webhooks/github", data=body, headers=headers), "github")

        body = stripe_body(template, tick)
        headers = {"Stripe-Signature": stripe_signature(body), "Content-Type": "application/json"}
        await self._expect(http.post(self.url + "/webhooks/stripe", data=body, headers=headers), "stripe")

        target = f"ws://127.0.0.1:{ws_port}/ws"
        await self._expect(http.get(self.url + "/probe", params={"target": target}), "probes")
        await self._expect(http.get(self.url + "/health"), None)
        async with http.get(self.url + "/metrics") as resp:
            text = await resp.text()
        self.sent["scrapes"] += 1
        if elapsed >= self.warmup:
            s = samples(text)
            self.trend.append(
                {
                    "t": round(elapsed, 1),
                    "rss": total(s, "process_resident_memory_bytes"),
                    "fds": total(s, "process_open_fds"),
                    "tasks": total(s, "collector_asyncio_tasks"),
                }
            )

    async def _expect(self, request: Any, key: str | None) -> None:
        async with request as resp:
            await resp.read()
            if resp.status != 200:
                self.errors.append(f"{resp.method} {resp.url.path} answered {resp.status}")
            elif key is not None:
                self.sent[key] += 1

    async def _settle(self, http: aiohttp.ClientSession) -> dict[Any, float]:
        """Scrape until every written log line is counted (the tailer is a little behind), max 60 s."""
        deadline = time.monotonic() + 60
        while True:
            async with http.get(self.url + "/metrics") as resp:
                s = samples(await resp.text())
            if total(s, "app_log_lines_total") >= self.sent["lines"] or time.monotonic() > deadline:
                return s
            await asyncio.sleep(0.2)

    def _report(self, s: dict[Any, float], ws_port: int) -> dict[str, Any]:
        sent = self.sent
        exact = {
            "log lines": (total(s, "app_log_lines_total"), sent["lines"]),
            "github webhooks": (
                total(s, "github_webhooks_total", event="ping", status="accepted"),
                sent["github"],
            ),
            "stripe webhooks": (
                total(s, "stripe_webhooks_total", event_type="payment_intent.succeeded", status="processed"),
                sent["stripe"],
            ),
            "stripe payments": (total(s, "stripe_payments_total", currency="usd"), sent["stripe"]),
            "stripe value (usd)": (
                total(s, "stripe_payment_value_total", currency="usd"),
                sent["stripe"] * 12.34,
            ),
            "/probe successes": (
                total(s, "collector_websocket_probe_requests_total", result="success"),
                sent["probes"],
            ),
        }
        checks = {name: abs(got - want) < 1e-6 for name, (got, want) in exact.items()}
        checks["background probe up"] = total(s, "probe_websocket_success", target="soak") == 1.0
        checks["no requests refused"] = total(s, "collector_http_rejected_total") == 0.0
        checks["no source errors"] = total(s, "collector_source_errors_total") == 0.0
        trend: dict[str, Any] = {}
        if len(self.trend) >= 10:
            k = max(3, len(self.trend) // 10)
            first, last = self.trend[:k], self.trend[-k:]
            for key in ("rss", "fds", "tasks"):
                a, b = statistics.median(p[key] for p in first), statistics.median(p[key] for p in last)
                trend[key] = {"after_warmup": a, "at_end": b, "growth": (b - a) / a if a else 0.0}
            checks["rss growth < 10%"] = trend["rss"]["growth"] < 0.10
            checks["no fd growth"] = trend["fds"]["at_end"] <= trend["fds"]["after_warmup"]
            checks["no task growth"] = trend["tasks"]["at_end"] <= trend["tasks"]["after_warmup"]
        else:
            checks["enough samples after warm-up"] = False
        checks["no request errors"] = not self.errors
        return {
            "ok": all(checks.values()),
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "sent": sent,
            "counted": {name: got for name, (got, _want) in exact.items()},
            "checks": checks,
            "trend": trend,
            "errors": self.errors[:20],
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600; CI: 60)")
    p.add_argument(
        "--warmup", type=float, help="seconds before the leak baseline (default: 25%% of the run, max 120)"
    )
    p.add_argument("--lines-per-second", type=int, default=500)
    p.add_argument("--workdir", type=Path, help="keep state and logs here (default: a temporary directory)")
    args = p.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(120.0, args.duration * 0.25)
    with tempfile.TemporaryDirectory(prefix="collector-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        report = asyncio.run(Soak(args.duration, warmup, args.lines_per_second, workdir).run())
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
