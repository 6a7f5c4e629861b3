"""Settings building blocks: env var naming, list parsing, the base of every source's settings."""

from __future__ import annotations

import json
import typing
from typing import Annotated, Any, ClassVar

from collector.settings.model import Before, FieldInfo, Model, NoDecode, Secret, setting

__all__ = [
    "ENV_PREFIX",
    "LEAN_IMPORTS",
    "NESTED",
    "CommaList",
    "NoDecode",
    "Secret",
    "SecretList",
    "SourceSettings",
    "env_name",
    "split_list",
]

ENV_PREFIX = "COLLECTOR_"
NESTED = "__"
#: Read by collector/importpolicy.py from the environment, not a field: it decides what may be imported
#: before asyncio loads. Listed here so the unknown-variable warning knows it.
LEAN_IMPORTS = ENV_PREFIX + "LEAN_IMPORTS"


def split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string for list-valued settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a valid JSON list ({exc.msg}); use a JSON list or a,b,c") from exc
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


#: A list setting written as `a,b,c` or `["a","b","c"]`.
CommaList = Annotated[list[str], NoDecode, Before(split_list)]
#: The same for secrets (e.g. several webhook secrets during rotation); also readable from `<VAR>_FILE`.
SecretList = Annotated[list[Secret], NoDecode, Before(split_list)]


class SourceSettings(Model):
    """Base of every source's settings: `enabled` unset means "on when configured"."""

    #: Names of the fields that, when set, make the source configured (used in error messages).
    config_fields: ClassVar[tuple[str, ...]] = ()

    enabled: bool | None = setting(
        default=None, description="Force the source on or off; unset: on when it is configured."
    )

    def configured(self) -> bool:
        return any(getattr(self, f) for f in self.config_fields)

    def is_enabled(self) -> bool:
        return self.configured() if self.enabled is None else self.enabled

    def openssl_needs(self) -> dict[str, str]:
        """What of OpenSSL the enabled source uses with these settings (collector.importpolicy keeps
        the rest out of memory): "tls" or "hashes" -> the field asking for it; {} (here): neither."""
        return {}

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        # COLLECTOR_<SOURCE>__<SECRET>_FILE also reaches us as field `<secret>_file` through the nested
        # variables; the loader has already read the file, so it is not an unknown setting.
        names = {f"{n}_file" for n, info in cls.model_fields.items() if _is_secret(info.annotation)}
        return {k: v for k, v in data.items() if k.lower() not in names or k in cls.model_fields}


def _is_secret(annotation: Any) -> bool:
    if annotation is Secret:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def _model_of(annotation: Any) -> type[Model] | None:
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return annotation
    return None


def _walk(
    model: type[Model], path: tuple[str, ...] = ()
) -> typing.Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every leaf field of the settings tree with its path."""
    for name, info in model.model_fields.items():
        sub = _model_of(info.annotation)
        if sub is not None:
            yield from _walk(sub, (*path, name))
        else:
            yield (*path, name), info


def env_name(path: tuple[str | int, ...]) -> str:
    """The env var that sets a field, from its path in the settings tree."""
    parts = [str(p) for p in path if not isinstance(p, int)]
    return ENV_PREFIX + NESTED.join(parts).upper()
