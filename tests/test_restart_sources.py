"""Every source's task killed mid-run, one after the other, in one running collector: the supervisor
restarts it, and afterwards every counter is what the input says - a restart never adds stored totals
again (restore sets, it does not add), and never loses what was counted.

Ground truth comes from outside: the events sent, the lines written, the probes a restart must make.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from collector.settings import StripeSettings
from collector.sources import SOURCES
from tests.helpers import free_port, make_settings, serve, value
from tests.sources.crash import crashable, kill_and_wait_restart
from tests.sources.github_helpers import SECRET as GH_SECRET
from tests.sources.github_helpers import post_ci, post_event, status_payload
from tests.sources.stripe_helpers import SECRET, body_of, event, post

H = 3600.0


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        yield next(iter(server.sockets)).getsockname()[1]


def counters(m: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter sample, but the ones a restart itself moves (restarts, errors, HTTP traffic)."""
    skip = ("collector_source_", "collector_http_", "process_", "python_", "collector_scrape")
    return {
        (name, tuple(sorted(s.labels.items()))): s.value
        for name, samples in m.items()
        if name.endswith("_total") and not name.startswith(skip)
        for s in samples
    }


def log_lines(m: dict[str, Any]) -> float:
    return sum(s.value for s in m.get("collector_log_lines_total", []))


def cpu_now() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


async def test_killing_each_source_mid_run_changes_no_counter(tmp_path: Path) -> None:
    rng = random.Random(17)
    log = tmp_path / "app.log"
    log.write_text("".join(json.dumps({"level": "info", "n": i}) + "\n" for i in range(10)))
    refused = free_port()
    async with echo_server() as ws_port:
        settings = make_settings(
            tmp_path,
            stripe=StripeSettings(webhook_secrets=[SECRET]),
            github={"webhook_secret": GH_SECRET},
            deployments={"token": "ci-token"},
            logs={
                "paths": [str(log)],
                "start_at": "beginning",
                "checkpoint_interval": 0.2,
                "poll_interval": 0.1,
            },
            process={"pid": os.getpid(), "interval": 0.2},
            websocket={
                "targets": [
                    {"name": "good", "url": f"ws://127.0.0.1:{ws_port}/"},
                    {"name": "refused", "url": f"ws://127.0.0.1:{refused}/"},
                ],
                "interval": 3600,  # one probe per run of the source: a restart makes exactly one more
            },
        )
        sources = {name: crashable(ref.load()) for name, ref in SOURCES.items()}  # each class, imported
        async with serve(settings, sources) as c:
            while not all(ctx.status.phase == "running" for _s, ctx in c.runtime.sources):
                await asyncio.sleep(0.02)
            assert {ctx.name for _s, ctx in c.runtime.sources} == set(SOURCES)
            now = float(int(time.time()))
            for i in range(5):
                ev = event("payment_intent.succeeded", amount=100 * (i + 1), amount_received=100 * (i + 1))
                assert (await post(c.url, body_of(ev)))[0] == 200
            assert (await post(c.url, body_of(event("customer.subscription.created", id="sub_r"))))[0] == 200
            assert (await post_event(c, "deployment_status", status_payload(1, "a", "success", now - H)))[
                0
            ] == 200
            ci = {
                "repository": "acme/shop",
                "environment": "production",
                "sha": "c1",
                "status": "failure",
                "id": "p1",
            }
            assert (await post_ci(c, ci))[0] == 201
            probes = {"refused": 1}
            written, warned = 10, 0
            m = await c.wait_for(
                lambda m: (
                    log_lines(m) == written
                    and value(m, "probe_websocket_failures_total", target="refused", reason="refused") == 1
                    and value(m, "probe_websocket_success", target="good") == 1
                    and value(m, "app_process_cpu_seconds_total") is not None
                ),
                timeout=20,
            )
            baseline = counters(m)
            assert value(m, "stripe_payments_total", currency="usd") == 5
            assert value(m, "stripe_payment_value_total", currency="usd") == 15.0
            assert (
                value(
                    m, "deployments_total", repository="acme/shop", environment="production", status="failure"
                )
                == 1
            )

            order = list(SOURCES)
            rng.shuffle(order)
            for name in order * 2:  # each killed twice, in a seeded order
                if name == "logs":
                    # killed while it reads: lines land on disk just before the kill
                    with log.open("a") as f:
                        f.writelines(
                            json.dumps({"level": "warn", "n": written + i}) + "\n" for i in range(500)
                        )
                    written += 500
                    warned += 500
                cpu_before = value(await c.metrics(), "app_process_cpu_seconds_total")
                await kill_and_wait_restart(c, name)
                if name == "websocket":
                    probes["refused"] += 1
                expected = {
                    **baseline,
                    (
                        "probe_websocket_failures_total",
                        (("reason", "refused"), ("target", "refused")),
                    ): probes["refused"],
                }
                if warned:  # the lines' own level counter, from the lines on disk
                    expected[("app_log_lines_total", (("level", "warn"),))] = warned
                m = await c.wait_for(
                    lambda m, written=written: (
                        log_lines(m) == written
                        and value(m, "probe_websocket_failures_total", target="refused", reason="refused")
                        == probes["refused"]
                    ),
                    timeout=20,
                )
                got = counters(m)
                lines = {k: v for k, v in got.items() if k[0] == "collector_log_lines_total"}
                assert sum(lines.values()) == written, (name, lines)
                cpu = got.pop(("app_process_cpu_seconds_total", ()))
                # psutil's reading, set not added: between the last value and the process's own total
                assert cpu_before is not None and cpu_before - 0.05 <= cpu <= cpu_now() + 0.05, (
                    name,
                    cpu_before,
                    cpu,
                )
                volatile = ("collector_log_", "app_process_cpu")
                assert {k: v for k, v in got.items() if not k[0].startswith(volatile)} == {
                    k: v for k, v in expected.items() if not k[0].startswith(volatile)
                }, name
            restarts = {ctx.name: ctx.status.restarts for _s, ctx in c.runtime.sources}
    assert restarts == dict.fromkeys(SOURCES, 2)
