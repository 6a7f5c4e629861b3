"""Command-line flags generated from the settings models: `--logs-paths` sets what `COLLECTOR_LOGS__PATHS` sets.

Each leaf field of `Settings` gets one flag taking the same text its environment variable takes (lists as
`a,b,c` or JSON, booleans as true/false). A flag beats the environment, which beats the env file.
Flags default to "not given" (`argparse.SUPPRESS`), so the same flag may be given before or after the
subcommand without one parser's default overwriting the other's value.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any

from collector.settings.base import _is_secret, _walk, env_name
from collector.settings.model import FieldInfo, Model

__all__ = ["Flag", "add_setting_flags", "given_env", "given_overrides", "setting_flags"]

_DEST = "setting__"


@dataclass(frozen=True)
class Flag:
    """One setting as a command-line flag."""

    path: tuple[str, ...]
    flag: str  # --logs-paths
    env: str  # COLLECTOR_LOGS__PATHS
    default: str  # as an operator would write it; "" when unset
    help: str
    secret: bool

    @property
    def dest(self) -> str:
        return _DEST + "__".join(self.path)


def _default_text(info: FieldInfo) -> str:
    if info.required:
        return ""
    value: Any = info.get_default()
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, re.Pattern):
        pattern: str = value.pattern  # settings patterns are str patterns
        return pattern
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def setting_flags(cls: type[Model] | None = None) -> list[Flag]:
    """Every settings leaf as a `Flag`, in model order (general settings first, then each source)."""
    if cls is None:
        from collector.settings import Settings

        cls = Settings
    flags = []
    for path, info in _walk(cls):
        flags.append(
            Flag(
                path,
                "--" + "-".join(path).replace("_", "-"),
                env_name(path),
                _default_text(info),
                (info.description or "").strip(),
                _is_secret(info.annotation),
            )
        )
    return flags


def add_setting_flags(
    parser: argparse.ArgumentParser, hidden: bool = False, skip: tuple[str, ...] = ()
) -> None:
    """Add one flag per setting, grouped by section, each help naming its variable and default.

    Args:
        parser: the (sub)command's parser.
        hidden: accept the flags without listing them (the top-level parser: `collector run --help` lists them).
        skip: flags the command already defines with the same meaning (`collector demo --listen`).
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in setting_flags():
        if f.flag in skip:
            continue
        section = f.path[0] if len(f.path) > 1 else ""
        group = groups.get(section)
        if group is None:
            title = f"{section} settings (COLLECTOR_{section.upper()}__*)" if section else "general settings"
            group = groups[section] = parser.add_argument_group(title)
        if hidden:
            text = argparse.SUPPRESS
        else:
            text = f"{f.help} [{f.env}; default: {f.default or 'unset'}]".replace("%", "%%")
            if f.secret:
                text += " (a secret: prefer the variable or its _FILE form; command lines are visible in ps)"
        group.add_argument(f.flag, dest=f.dest, metavar="VALUE", default=argparse.SUPPRESS, help=text)


def given_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, as nested init data for `Settings(...)` (beats env and env file)."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if not key.startswith(_DEST):
            continue
        path = key[len(_DEST) :].split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def given_env(args: argparse.Namespace) -> dict[str, str]:
    """The settings given as flags, as the `COLLECTOR_*` variables that set them (for a child process)."""
    return {
        env_name(tuple(key[len(_DEST) :].split("__"))): str(value)
        for key, value in vars(args).items()
        if key.startswith(_DEST)
    }
