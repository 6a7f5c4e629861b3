"""Command line: `collector [run]`, `collector check-config`, `collector --version`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from collector import __version__

if TYPE_CHECKING:
    from collector.settings import Settings  # imported where used: pydantic costs ~0.3 CPU-s at start-up

__all__ = ["main"]

log = logging.getLogger("collector")

EXIT_CONFIG = 2


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (None: the default `run`), found without parsing."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--env-file":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _configured(env_file: str) -> bool:
    """Whether any setting could differ from its default: a `COLLECTOR_*` variable or an env file."""
    return os.path.exists(env_file) or any(k.upper().startswith("COLLECTOR_") for k in os.environ)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="collector", description="Prometheus sidecar exporter.")
    p.add_argument("--version", action="version", version=f"collector {__version__}")
    p.add_argument(
        "--env-file",
        default=os.environ.get("COLLECTOR_ENV_FILE", ".env"),
        help="optional .env file with COLLECTOR_* settings (default: .env, or $COLLECTOR_ENV_FILE)",
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", help="run the collector (the default)")
    sub.add_parser("check-config", help="print the effective configuration (secrets masked); exit 0 or 2")
    from collector.replay import add_parser as add_replay  # log rules over files, like mtail --one_shot

    add_replay(sub)
    if command == "replay":
        return p  # the demo imports aiohttp (~0.3 CPU-s), which a replay would pay at every run
    from collector.demo import add_parser as add_demo  # the collector plus a synthetic app and traffic

    add_demo(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(_command(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    if args.command == "replay" and not _configured(args.env_file):
        from collector.replay import run_replay

        return run_replay(args, None)  # nothing to load: the defaults, without pydantic's start-up
    from collector.settings import ConfigError, load_settings, masked_dump, unknown_env_vars

    try:
        settings = load_settings(args.env_file)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"collector: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "demo":
        from collector.demo import run_demo

        return run_demo(args)
    if args.command == "replay":
        from collector.replay import run_replay

        return run_replay(args, settings)
    problems = preflight(settings)
    if problems:
        for line in problems:
            print(f"collector: {line}", file=sys.stderr)
        return EXIT_CONFIG
    unknown = unknown_env_vars()
    if args.command == "check-config":
        print(json.dumps(masked_dump(settings), indent=2))
        for name in unknown:
            print(f"collector: warning: {name} is not a known setting (typo?)", file=sys.stderr)
        return 0
    from collector.logsetup import setup_logging
    from collector.redact import Redactor

    setup_logging(settings.log_level, Redactor.from_settings(settings))
    for name in unknown:
        log.warning("unknown setting ignored (typo?)", extra={"env_var": name})
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    import asyncio  # not at the top: `collector replay` never starts an event loop

    return asyncio.run(serve(settings))


def preflight(settings: Settings) -> list[str]:
    """Problems field validation cannot see: unknown log presets and an invalid or unreadable rules file."""
    logs = settings.logs
    if not logs.is_enabled() or not (logs.preset or logs.rules):
        return []
    from collector.rules import RulesError, load_specs

    lines = []
    if logs.preset:
        try:
            load_specs(logs.preset, None)
        except RulesError as exc:
            value = ",".join(logs.preset)
            lines += [f"invalid setting COLLECTOR_LOGS__PRESET={value!r}: {err}" for err in exc.errors]
    if logs.rules is not None:
        try:
            text = logs.rules.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            lines.append(
                f"invalid setting COLLECTOR_LOGS__RULES='{logs.rules}': cannot read the file ({reason})"
            )
        else:
            try:
                load_specs([], text, str(logs.rules))
            except RulesError as exc:
                lines += [
                    f"invalid setting COLLECTOR_LOGS__RULES='{logs.rules}': {err}" for err in exc.errors
                ]
    return lines


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then stop sources, flush state and return the exit code."""
    from aiohttp import web  # here, not at the top: `collector replay` never needs aiohttp

    from collector.app import build_app
    from collector.web import WEB, ListenError, start_sites

    app = build_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await start_sites(runner, app)
    except ListenError as exc:
        where = settings.listen if exc.env_var == "COLLECTOR_LISTEN" else settings.webhook_listen
        log.error(f"cannot listen; check {exc.env_var}", extra={"listen": where, "error": exc.reason})
        await runner.cleanup()
        return 1
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP re-reads COLLECTOR_WEB_CONFIG_FILE now instead of at the next poll.
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(app[WEB].reload()))
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    return 0
