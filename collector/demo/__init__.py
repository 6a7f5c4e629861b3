"""`collector demo`: the collector plus a synthetic app, so every metric and dashboard fills with no outside system.

The synthetic app (this process) writes winston-style JSON logs, serves a WebSocket endpoint and sends
correctly signed Stripe and GitHub webhooks; the collector runs as a child process (`collector run`),
configured only through its normal `COLLECTOR_*` environment, exactly like a sidecar beside a real app.
Ctrl-C (SIGINT) or SIGTERM stops both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported where used: `collector run` builds this parser, and asyncio (which imports ssl) or
    # urllib.request (hashlib) loaded there would come before collector.importpolicy decides.
    import asyncio

__all__ = ["add_parser", "collector_env", "run_demo"]

log = logging.getLogger("collector.demo")

#: Demo-only webhook secrets (the collector and the synthetic app must agree; nothing real uses them).
STRIPE_SECRET = "whsec_collector_demo_secret"
GITHUB_SECRET = "collector-demo-github-secret"


#: Where the demo's collector listens unless COLLECTOR_LISTEN (or --listen, or the env file) says otherwise.
DEMO_LISTEN = "127.0.0.1:9464"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `collector demo` on the CLI's subparsers; returns its parser."""
    p = sub.add_parser(
        "demo",
        help="run the collector with a synthetic app and traffic (no outside system)",
        description="Run the collector with a synthetic app and traffic. Your own COLLECTOR_* settings "
        "(environment, env file or flags) override the demo's.",
    )
    p.add_argument(
        "--listen",
        default=None,
        help=f"collector host:port (default: COLLECTOR_LISTEN if set, else {DEMO_LISTEN})",
    )
    p.add_argument("--dir", type=Path, default=None, help="work dir for logs and state (default: a temp dir)")
    p.add_argument("--rate", type=float, default=50.0, help="log events per second (default 50)")
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    p.add_argument(
        "--app-only",
        action="store_true",
        help="run only the synthetic app (docker-compose): logs to --dir, webhooks to --collector-url",
    )
    p.add_argument("--collector-url", default=None, help="with --app-only: where to send webhooks")
    p.add_argument("--ws-listen", default="127.0.0.1:0", help="host:port of the app's WebSocket server")
    return p


def collector_env(
    sources: Mapping[str, object], fields: set[str], log_dir: Path, data_dir: Path, ws_url: str, app_pid: int
) -> tuple[dict[str, str], list[str]]:
    """The `COLLECTOR_*` settings that point every available source at the synthetic app.

    Args:
        sources: the registered sources (`collector.sources.SOURCES`).
        fields: the field names of the root `Settings` model.
        log_dir: where the synthetic app writes its logs.
        data_dir: the collector's state directory.
        ws_url: the synthetic app's WebSocket URL.
        app_pid: the synthetic app's process id.

    Returns:
        The environment, and the names of the sources skipped because this build does not have them.
    """
    wanted: dict[str, dict[str, str]] = {
        "process": {"COLLECTOR_PROCESS__PID": str(app_pid), "COLLECTOR_PROCESS__INTERVAL": "1"},
        "logs": {
            "COLLECTOR_LOGS__PATHS": str(log_dir / "*.log"),
            "COLLECTOR_LOGS__PRESET": "winston,app-events",
            "COLLECTOR_LOGS__START_AT": "beginning",
        },
        "websocket": {
            "COLLECTOR_WEBSOCKET__TARGETS": json.dumps(
                [
                    {
                        "url": ws_url,
                        "name": "demo-ping",
                        "send": {"type": "ping"},
                        "expect": {"type": "pong"},
                    },
                    {"url": ws_url, "name": "demo-persistent", "mode": "persistent"},
                ]
            ),
            "COLLECTOR_WEBSOCKET__INTERVAL": "2",
        },
        "stripe": {"COLLECTOR_STRIPE__WEBHOOK_SECRETS": STRIPE_SECRET},
        "github": {
            "COLLECTOR_GITHUB__WEBHOOK_SECRET": GITHUB_SECRET,
            "COLLECTOR_GITHUB__RECOMPUTE_INTERVAL": "2",
            # The demo sends no incidents: count its failed deployments so the rate panel has data.
            "COLLECTOR_GITHUB__CHANGE_FAILURE": "both",
        },
    }
    env = {"COLLECTOR_DATA_DIR": str(data_dir)}
    skipped = []
    for name, values in wanted.items():
        if name in sources and name in fields:
            env |= values
        else:
            skipped.append(name)
    return env, skipped


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _wait_up(url: str, proc: subprocess.Popen[bytes], stop: asyncio.Event, timeout: float = 30.0) -> bool:
    """Wait until the collector is ready (every source started), or at least live after `timeout`."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while proc.poll() is None and not stop.is_set():
        path = "/health/ready" if time.monotonic() < deadline else "/health/live"
        try:
            with urllib.request.urlopen(url + path, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass  # not listening yet, or 503 while a source starts
        time.sleep(0.1)
    return False


async def _demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    import asyncio

    from collector.demo.synthetic import AppConfig, run_app, send_webhooks  # websockets: not in `run`
    from collector.settings import Settings
    from collector.sources import SOURCES

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="collector-demo-"))
    ws_host, ws_port = _host_port(args.ws_listen)
    log_dir = workdir / "logs"
    if args.app_only:
        cfg = AppConfig(
            log_dir=log_dir if args.dir is None else args.dir,
            ws_host=ws_host,
            ws_port=ws_port,
            lines_per_second=args.rate,
            collector_url=args.collector_url,
            stripe_secret=(os.environ.get("COLLECTOR_STRIPE__WEBHOOK_SECRETS") or STRIPE_SECRET).split(",")[
                0
            ],
            github_secret=os.environ.get("COLLECTOR_GITHUB__WEBHOOK_SECRET") or GITHUB_SECRET,
        )
        await run_app(cfg, stop)
        return 0

    host, port = _host_port(args.listen)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cfg = AppConfig(log_dir=log_dir, ws_host=ws_host, ws_port=ws_port, lines_per_second=args.rate)
    app_task = asyncio.create_task(run_app(cfg, stop, ready), name="demo-app")
    ws_url = f"ws://{ws_host}:{await ready}/ws"
    env, skipped = collector_env(
        SOURCES, set(Settings.model_fields), log_dir, workdir / "data", ws_url, os.getpid()
    )
    for name in skipped:
        log.warning("source not in this build; the demo skips it", extra={"source": name})
    # An operator's own COLLECTOR_* settings win over the demo's: from the env file, the environment and
    # flags, in that order (the child's own env-file reading would lose to the demo's variables).
    child_env = {**env, **args.operator_env, **os.environ, **args.flag_env, "COLLECTOR_LISTEN": args.listen}
    proc = subprocess.Popen([sys.executable, "-m", "collector", "run"], env=child_env)
    try:
        live = await asyncio.to_thread(_wait_up, url, proc, stop)
        if live:
            print(f"collector demo: open {url}/ (metrics at {url}/metrics); Ctrl-C stops", file=sys.stderr)
            # the webhook sender starts once the collector answers, so the first events are not lost
            # webhooks go to the public listener when the operator split it off (COLLECTOR_WEBHOOK_LISTEN)
            hook = os.environ.get("COLLECTOR_WEBHOOK_LISTEN")
            cfg.collector_url = f"http://127.0.0.1:{_host_port(hook)[1]}" if hook else url
            cfg.stripe_secret = STRIPE_SECRET if "stripe" not in skipped else None
            cfg.github_secret = GITHUB_SECRET if "github" not in skipped else None
            sender = (
                asyncio.create_task(send_webhooks(cfg, stop))
                if cfg.stripe_secret or cfg.github_secret
                else None
            )
            deadline = time.monotonic() + args.duration if args.duration > 0 else None
            while not stop.is_set() and proc.poll() is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if deadline is not None and time.monotonic() >= deadline:
                    break
            if sender is not None:
                stop.set()
                await asyncio.gather(sender, return_exceptions=True)
        stop.set()
        await app_task
    finally:
        stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = await asyncio.to_thread(proc.wait)
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else 1


def run_demo(args: argparse.Namespace, settings: Any = None, env_file: str | None = None) -> int:
    """Run the demo until Ctrl-C, SIGTERM or `--duration`; return the exit code.

    Args:
        args: the parsed `collector demo` options (and any settings flags).
        settings: the operator's loaded settings: where their listen address and log format come from.
        env_file: the operator's env file, whose COLLECTOR_* lines override the demo's settings.
    """
    import asyncio

    from collector.logsetup import setup_logging
    from collector.settings import env_file_values
    from collector.settings.flags import given_env

    args.flag_env = given_env(args)
    args.operator_env = {
        k: v for k, v in env_file_values(env_file).items() if k.upper().startswith("COLLECTOR_")
    }
    if args.listen is None:
        given = settings is not None and "listen" in settings.model_fields_set
        args.listen = settings.listen if given else DEMO_LISTEN
    if settings is not None:
        from collector.redact import Redactor

        setup_logging(
            "INFO",
            Redactor.from_settings(settings),
            fmt=settings.log_format,
            libraries=settings.log_level_libraries,
        )
    else:
        setup_logging("INFO")

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await _demo(args, stop)

    return asyncio.run(main())
