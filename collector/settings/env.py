"""The settings loader: `COLLECTOR_*` variables, `<VAR>_FILE` secrets, the env file and flags, as model data.

What pydantic-settings did for us, in the ~100 lines we use of it (it cost the idle daemon ~1.7 MB of
RSS and a dependency). Precedence (highest first): flags, the environment, `<VAR>_FILE` secrets, the env
file. Names are case-insensitive, nested with `__` (`COLLECTOR_LOGS__PATHS`); a variable naming a whole
section (`COLLECTOR_LOGS='{"paths": [...]}'`) is JSON, deep-merged under that section's nested variables.
Unknown top-level names are ignored (`typo_warnings` reports them); unknown names inside a section reach
the section's model, which forbids them, so they fail with a "did you mean" line.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from collector.settings.base import ENV_PREFIX, NESTED, _is_secret, _model_of, _walk, env_name
from collector.settings.model import FieldInfo, Model, NoDecode

__all__ = ["EnvError", "env_data", "read_env_file"]


class EnvError(Exception):
    """A variable cannot be turned into model data; `lines` holds one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def read_env_file(env_file: str | Path | None) -> dict[str, str]:
    """The `KEY=value` pairs of an env file (python-dotenv's syntax); {} when there is none."""
    if env_file is None or not Path(env_file).is_file():
        return {}
    from dotenv import dotenv_values  # only when there is a file: the daemon in a pod usually has none

    return {k: v for k, v in dotenv_values(env_file, encoding="utf-8").items() if v is not None}


def _secret_files(cls: type[Model], environ: Mapping[str, str]) -> dict[str, str]:
    """`<VAR>: file content` for every secret whose `<VAR>_FILE` is set (Docker/Kubernetes secrets).

    Raises:
        EnvError: both `<VAR>` and `<VAR>_FILE` are set, or the file cannot be read.
    """
    out: dict[str, str] = {}
    for path, info in _walk(cls):
        if not _is_secret(info.annotation):
            continue
        var = env_name(path)
        file_var = var + "_FILE"
        file_path = environ.get(file_var)
        if not file_path:
            continue
        if var in environ:
            raise EnvError([f"invalid setting: both {var} and {file_var} are set; set only one"])
        try:
            out[var] = Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise EnvError(
                [f"invalid setting {file_var}={file_path!r}: cannot read the file ({exc.strerror})"]
            ) from exc
    return out


def _is_complex(info: FieldInfo) -> bool:
    """A field whose variable holds JSON: a nested model, list, dict, set or tuple not marked `NoDecode`."""
    if any(isinstance(m, NoDecode) or m is NoDecode for m in info.metadata):
        return False
    annotation = info.annotation
    if _model_of(annotation) is not None:
        return True
    origin = typing.get_origin(annotation)
    return origin in (list, dict, set, tuple) or annotation in (list, dict, set, tuple)


def _decode(name: str, info: FieldInfo | None, value: str) -> Any:
    if info is None or not _is_complex(info):
        return value
    try:
        return json.loads(value)
    except ValueError:
        # the value may hold a secret: name the field, never the value (as pydantic-settings did)
        raise EnvError([f'invalid settings: error parsing value for field "{name}"']) from None


def _refuse_value_as_section(keys: list[str]) -> None:
    """`COLLECTOR_LOGS__PATHS` and `COLLECTOR_LOGS__PATHS__X` at once: the first is a value, so the
    second names nothing; refused, whatever order the variables come in (it was a TypeError).

    Raises:
        EnvError: one line per variable below another variable's value.
    """
    nested = {tuple(k.split(NESTED)): k for k in keys if NESTED in k}
    lines = [
        f"invalid setting {key}: unknown setting ({nested[path[:i]]} is a value, not a section)"
        for path, key in sorted(nested.items())
        for i in range(2, len(path))
        if path[:i] in nested
    ]
    if lines:
        raise EnvError(lines)


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def env_data(
    cls: type[Model],
    env_file: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The settings data of `cls` from flags, the environment, `_FILE` secrets and the env file.

    Args:
        cls: the root settings model (its fields name the variables).
        env_file: the env file, or None.
        overrides: flag values, nested like the model (win over everything).
        environ: the environment (default `os.environ`).

    Raises:
        EnvError: a secret file cannot be read or is ambiguous, a JSON value is malformed, or a variable
            names a field below another variable's value.
    """
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    flat = {k.upper(): v for k, v in read_env_file(env_file).items()}
    flat.update(_secret_files(cls, env))  # above the env file, below the environment
    flat.update(env)
    fields = cls.model_fields
    whole: dict[str, Any] = {}  # COLLECTOR_<FIELD>
    nested: dict[str, Any] = {}  # COLLECTOR_<FIELD>__<SUB>...
    _refuse_value_as_section([k for k in flat if k.startswith(ENV_PREFIX)])
    for key, value in flat.items():
        if not key.startswith(ENV_PREFIX):
            continue
        first, *rest = key[len(ENV_PREFIX) :].lower().split(NESTED)
        info = fields.get(first)
        if info is None:
            continue  # not a setting: typo_warnings names it
        if not rest:
            whole[first] = _decode(first, info, value)
            continue
        node = nested.setdefault(first, {})
        target: FieldInfo | None = info
        for part in rest[:-1]:
            sub = _model_of(target.annotation) if target is not None else None
            target = sub.model_fields.get(part) if sub is not None else None
            node = node.setdefault(part, {})
        sub = _model_of(target.annotation) if target is not None else None
        last = sub.model_fields.get(rest[-1]) if sub is not None else None
        node[rest[-1]] = _decode(rest[-1], last, value)
    data = _deep_update(whole, nested)
    return _deep_update(data, overrides or {})
