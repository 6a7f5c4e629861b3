"""Command line: `collector [run]`, `check-config`, `replay`, `demo`, `--version`; every setting also a flag."""

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
    from collector.settings import Settings  # imported where used: a replay without settings skips it

__all__ = ["main"]

log = logging.getLogger("collector")

EXIT_CONFIG = 2


COMMANDS = ("run", "check-config", "replay", "demo")

_EPILOG = """\
Every setting is a COLLECTOR_* environment variable (nested with __, e.g. COLLECTOR_LOGS__PATHS), a line
in the env file, or a flag (--logs-paths); a flag beats the environment, which beats the env file.
`collector run --help` lists every setting with its flag, variable, default and meaning."""


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (None: the default `run`), found without parsing."""
    return next((arg for arg in argv if arg in COMMANDS), None)


def _configured(env_file: str) -> bool:
    """Whether any setting could differ from its default: a `COLLECTOR_*` variable or an env file."""
    return os.path.isfile(env_file) or any(k.upper().startswith("COLLECTOR_") for k in os.environ)


def _common(
    p: argparse.ArgumentParser, settings_flags: bool, hidden: bool = False, skip: tuple[str, ...] = ()
) -> None:
    """Options every command accepts, before or after the subcommand name."""
    p.add_argument(
        "--env-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS
        if hidden
        else "env file with COLLECTOR_* settings (default: .env if present, or $COLLECTOR_ENV_FILE, "
        "which must then exist)",
    )
    if settings_flags:
        from collector.settings.flags import (
            add_setting_flags,  # the settings models: only for commands that load settings
        )

        add_setting_flags(p, hidden=hidden, skip=skip)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    # `collector replay` without settings never imports them (~20 ms CPU); every other command loads settings.
    flags = command != "replay"
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="collector", description="Prometheus sidecar exporter.", epilog=_EPILOG, formatter_class=fmt
    )
    p.add_argument("--version", action="version", version=f"collector {__version__}")
    _common(p, flags, hidden=True)
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser(
        "run", help="run the collector (the default)", description="Run the collector.", epilog=_EPILOG,
        formatter_class=fmt, usage="collector run [-h] [--env-file FILE] [--SETTING VALUE ...]",
    )  # fmt: skip
    _common(run, flags)
    check = sub.add_parser(
        "check-config",
        help="print the effective configuration (secrets masked); exit 0 or 2",
        description="Print the effective configuration (secrets masked); exit 0, or 2 when it is invalid.",
        epilog=_EPILOG,
        formatter_class=fmt,
        usage="collector check-config [-h] [--env-file FILE] [--SETTING VALUE ...]",
    )
    _common(check, flags)
    from collector.replay import add_parser as add_replay  # log rules over files, like mtail --one_shot

    _common(add_replay(sub), settings_flags=False)
    if command == "replay":
        return p  # the demo imports aiohttp (~0.3 CPU-s), which a replay would pay at every run
    from collector.demo import add_parser as add_demo  # the collector plus a synthetic app and traffic

    _common(add_demo(sub), flags, skip=("--listen",))
    return p


def _env_file(args: argparse.Namespace) -> tuple[str, bool]:
    """The env file to read, and whether the operator named it (then it must exist)."""
    if getattr(args, "env_file", None) is not None:
        return args.env_file, True
    if os.environ.get("COLLECTOR_ENV_FILE"):
        return os.environ["COLLECTOR_ENV_FILE"], True
    return ".env", False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(_command(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    env_file, explicit = _env_file(args)
    if explicit and (not os.path.exists(env_file) or os.path.isdir(env_file)):  # /dev/null: "none"
        how = "--env-file" if getattr(args, "env_file", None) is not None else "COLLECTOR_ENV_FILE"
        print(f"collector: env file {env_file!r} ({how}) does not exist or is a directory", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "replay" and not _configured(env_file):
        from collector.replay import run_replay

        return run_replay(args, None)  # nothing to load: the defaults, without the settings' start-up
    from collector.settings import ConfigError, load_settings, masked_dump, typo_warnings
    from collector.settings.flags import given_overrides

    try:
        settings = load_settings(env_file, overrides=given_overrides(args))
    except ConfigError as exc:
        for line in exc.lines:
            print(f"collector: {line}", file=sys.stderr)
        return EXIT_CONFIG
    typos = typo_warnings(env_file)
    if args.command == "demo":
        from collector.demo import run_demo

        for line in typos:
            print(f"collector: warning: {line}", file=sys.stderr)
        return run_demo(args, settings, env_file)
    if args.command == "replay":
        from collector.replay import run_replay

        return run_replay(args, settings)
    # `collector run`: before anything imports asyncio, aiohttp or hashlib (the rules do), refuse
    # OpenSSL's modules when no setting needs them (~7 MB of RSS). check-config and the demo's own
    # process keep none of it for long; the demo's collector is a `run` child with its sources' needs.
    from collector import importpolicy

    refused = importpolicy.install(settings) if args.command in (None, "run") else None
    problems = preflight(settings)
    if problems:
        for line in problems:
            print(f"collector: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(json.dumps(masked_dump(settings), indent=2))
        for line in typos:
            print(f"collector: warning: {line}", file=sys.stderr)
        return 0
    from collector.logsetup import setup_logging
    from collector.redact import Redactor

    setup_logging(
        settings.log_level,
        Redactor.from_settings(settings),
        fmt=settings.log_format,
        libraries=settings.log_level_libraries,
    )
    for line in typos:
        log.warning(line)
    if refused is not None:
        log.debug("OpenSSL not loaded: no setting needs it", extra={"refused": sorted(refused.refused)})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    import asyncio  # not at the top: `collector replay` never starts an event loop

    return asyncio.run(serve(settings))


def preflight(settings: Settings) -> list[str]:
    """Problems field validation cannot see: unknown log presets and an invalid or unreadable rules file."""
    from collector.settings import LogsSettings

    logs = settings.section("logs", LogsSettings)
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
    """Bind the listeners, start the sources, run until SIGTERM or SIGINT, then stop them, flush state
    and return the exit code."""
    from aiohttp import web  # here, not at the top: `collector replay` never needs aiohttp

    from collector.app import RUNTIME, build_app
    from collector.web import WEB, ListenError, start_sites

    app = build_app(settings)
    rt = app[RUNTIME]
    import asyncio

    rt.gate = asyncio.Event()  # sources start once the listeners are bound: a port clash starts nothing
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await start_sites(runner, app)
    except ListenError as exc:
        where = settings.listen if exc.env_var == "COLLECTOR_LISTEN" else settings.webhook_listen
        flag = "--listen" if exc.env_var == "COLLECTOR_LISTEN" else "--webhook-listen"
        log.error(
            f"cannot listen on {where}: {exc.reason}; set {exc.env_var} (or {flag}) to a free host:port",
            extra={"listen": where, "error": exc.reason, "env_var": exc.env_var},
        )
        await runner.cleanup()
        return 1
    rt.gate.set()
    log.info(
        "collector started",
        extra={
            "version": __version__,
            "listen": [_address(a) for a in runner.addresses],
            "sources": [ctx.name for _s, ctx in rt.sources],
            "log_format": settings.log_format,
        },
    )
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


def _address(addr: object) -> str:
    """`host:port` of a bound socket address (`[host]:port` for IPv6)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
