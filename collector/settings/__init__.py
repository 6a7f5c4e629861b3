"""Settings: every knob is a `COLLECTOR_*` environment variable (nested with `__`), validated at start-up.

One model per source under one root `Settings` (collector.settings.model: typed fields validated and
coerced when built). Secrets are `Secret` and may also be read from `<VAR>_FILE` (Docker and
Kubernetes secrets). `load_settings` turns any validation failure into
`ConfigError`, whose lines name the env var, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from collector.settings.base import (
    ENV_PREFIX,
    LEAN_IMPORTS,
    NESTED,
    CommaList,
    SecretList,
    SourceSettings,
    _is_secret,
    _walk,
    env_name,
    split_list,
)
from collector.settings.env import EnvError, env_data, read_env_file
from collector.settings.model import Model, Secret, ValidationError, dump, model_check, setting
from collector.settings.sources import (
    DeploymentsSettings,
    GitHubSettings,
    HttpSettings,
    LogsSettings,
    ProcessSettings,
    StripeSettings,
    WebSocketSettings,
    WebSocketTarget,
)
from collector.sources import SOURCES, SourceSpec
from collector.urlmask import mask_url

__all__ = [
    "ENV_PREFIX",
    "NESTED",
    "CommaList",
    "ConfigError",
    "CoreSettings",
    "DeploymentsSettings",
    "GitHubSettings",
    "HttpSettings",
    "LogsSettings",
    "ProcessSettings",
    "Secret",
    "SecretList",
    "Settings",
    "SourceSettings",
    "StripeSettings",
    "WebSocketSettings",
    "WebSocketTarget",
    "env_file_values",
    "env_name",
    "load_settings",
    "masked_dump",
    "nearest_setting",
    "settings_class",
    "split_list",
    "typo_warnings",
    "unknown_env_vars",
]

M = TypeVar("M", bound=SourceSettings)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _host_port(value: str | None) -> str | None:
    if value is None:
        return None
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port with a port 0-65535, e.g. 0.0.0.0:9464 or [::]:9464")
    return value


def _web_config(value: Path | None) -> Path | None:
    if value is None:
        return None
    from collector.web.config import WebConfigError, load_web_config

    try:
        load_web_config(value)
    except WebConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


class CoreSettings(Model):
    """The collector's own settings; `settings_class` adds one nested model per registered source
    (`COLLECTOR_<SOURCE>__<FIELD>`), so the sources' settings are declared once, in the registry.

    A plain model: `load_settings` reads the environment (collector.settings.env), so building one in
    code reads nothing but its arguments.
    """

    extra = "ignore"  # unknown top-level names: typo_warnings, not errors

    listen: str = setting(
        default="0.0.0.0:9464",
        description="host:port of the HTTP server (/metrics, /health).",
        check=_host_port,
    )
    data_dir: Path = setting(default=Path("data"), description="Directory for the state store.")
    state_path: Path | None = setting(
        default=None, description="SQLite state file; default `<COLLECTOR_DATA_DIR>/state.db`."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(
        default="INFO", description="The collector's own log level (records on stderr).", before=_upper
    )
    log_format: Literal["json", "text"] = setting(
        default="json",
        description="Log records as JSON lines (json) or as readable text lines (text).",
        before=_lower,
    )
    log_level_libraries: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(
        default="WARNING",
        description="Level of third-party loggers (watchfiles, aiohttp, websockets, ...); raise it to debug them.",
        before=_upper,
    )
    shutdown_timeout: float = setting(
        default=8.0, gt=0, le=60, description="Seconds sources get to stop on SIGTERM before being cancelled."
    )
    http: HttpSettings = setting(default_factory=HttpSettings)
    web_config_file: Path | None = setting(
        default=None,
        description="exporter-toolkit web config (TLS, mTLS, basic auth, headers); re-read on change.",
        check=_web_config,
    )
    webhook_listen: str | None = setting(
        default=None,
        description="host:port of a second listener serving only webhook routes (public side).",
        check=_host_port,
    )

    @model_check
    def _webhook_listener(self) -> None:
        if self.webhook_listen is not None and self.webhook_listen == self.listen:
            raise ValueError("COLLECTOR_WEBHOOK_LISTEN must differ from COLLECTOR_LISTEN")
        if self.http.webhook_tls and (self.webhook_listen is None or self.web_config_file is None):
            raise ValueError(
                "COLLECTOR_HTTP__WEBHOOK_TLS=true needs COLLECTOR_WEBHOOK_LISTEN and a COLLECTOR_WEB_CONFIG_FILE with TLS"
            )

    @model_check
    def _enabled_needs_config(self) -> None:
        for name in type(self).model_fields:
            sub = getattr(self, name)
            if isinstance(sub, SourceSettings) and sub.enabled and not sub.configured():
                needed = " or ".join(env_name((name, f)) for f in sub.config_fields)
                raise ValueError(f"{env_name((name, 'enabled'))}=true but {needed} is not set")

    def source_settings(self, name: str) -> SourceSettings:
        """The settings section of the registered source `name`.

        Raises:
            KeyError: no source of that name was registered when this settings class was assembled.
        """
        section = getattr(self, name, None) if name in type(self).model_fields else None
        if not isinstance(section, SourceSettings):
            raise KeyError(f"no source settings section {name!r}")
        return section

    def section(self, name: str, model: type[M]) -> M:
        """`source_settings(name)`, typed as `model` (for the few generic parts that read one source's
        settings: the redactor reads the WebSocket targets' headers)."""
        section = self.source_settings(name)
        if not isinstance(section, model):
            raise TypeError(
                f"settings section {name!r} is a {type(section).__name__}, not a {model.__name__}"
            )
        return section

    @property
    def listen_host(self) -> str:
        host = self.listen.rpartition(":")[0]
        return host.strip("[]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def effective_state_path(self) -> Path:
        return self.state_path if self.state_path is not None else self.data_dir / "state.db"


def settings_class(registry: Mapping[str, SourceSpec]) -> type[CoreSettings]:
    """The root settings model: `CoreSettings` plus one section per source of `registry`, each the
    model its spec declares (`COLLECTOR_<NAME>__*`); the default `Settings` is that of `SOURCES`.

    Args:
        registry: source name -> spec (`collector.sources.Registry`).
    """
    namespace: dict[str, Any] = {"__module__": __name__, "__annotations__": {}}
    for name, spec in registry.items():
        model = spec.settings_model()
        namespace["__annotations__"][name] = model
        namespace[name] = setting(default_factory=model, description=(model.__doc__ or "").strip())
    return type("Settings", (CoreSettings,), namespace)


if TYPE_CHECKING:
    # For the type checker the root is `CoreSettings`: sources read their own section from their
    # context (`ctx.settings`), and generic code asks `Settings.section(name, model)`.
    Settings = CoreSettings
else:
    Settings = settings_class(SOURCES)


class ConfigError(Exception):
    """Invalid configuration; `lines` holds one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


# -- loading and reporting ------------------------------------------------------------------------


def _secret_paths(cls: type[Model]) -> set[tuple[str, ...]]:
    return {path for path, info in _walk(cls) if _is_secret(info.annotation)}


def _holds_secret(annotation: Any, seen: frozenset[type] = frozenset()) -> bool:
    """A secret anywhere inside the type: a list of WebSocket targets holds secret header values."""
    if _is_secret(annotation):
        return True
    if isinstance(annotation, type) and issubclass(annotation, Model) and annotation not in seen:
        return any(_holds_secret(f.annotation, seen | {annotation}) for f in annotation.model_fields.values())
    return any(_holds_secret(a, seen) for a in typing.get_args(annotation))


def _unechoed_paths(cls: type[Model]) -> set[tuple[str, ...]]:
    """Fields whose raw value is never echoed in an error: it is, or may contain, a secret."""
    return {path for path, info in _walk(cls) if _holds_secret(info.annotation)}


def _format_errors(exc: ValidationError, cls: type[Model]) -> list[str]:
    secrets = _secret_paths(cls)
    unechoed = _unechoed_paths(cls)
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, str))
        msg = mask_url(err["msg"].removeprefix("Value error, "))
        var = env_name(loc)
        if loc in unechoed and loc not in secrets and not isinstance(err.get("input"), dict):
            # A malformed value of a setting that holds secrets (e.g. a target list with headers):
            # whatever part failed, the text around it may be a header value.
            lines.append(f"invalid setting {var} (value not shown: it can hold secrets): {msg}")
            continue
        item = next((i for i, p in enumerate(err["loc"]) if isinstance(p, int)), len(err["loc"]))
        if item < len(err["loc"]) - 1 or (item < len(err["loc"]) and isinstance(err.get("input"), dict)):
            # A field of one object in a list setting (a WebSocket target): name the variable, then the
            # item and field; the value is not echoed, it may be a secret header.
            var = env_name(err["loc"][:item])
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"][item:])
            lines.append(f"invalid setting {var}{where}: {msg}")
        elif not loc:
            lines.append(f"invalid settings: {msg}")
        elif err["type"] == "extra_forbidden":
            near = nearest_setting(var)
            lines.append(
                f"invalid setting {var}: unknown setting" + (f"; did you mean {near}?" if near else "")
            )
        elif loc and any(loc == p for p in secrets):
            lines.append(f"invalid setting {var}='***': {msg}")
        elif isinstance(err.get("input"), dict):
            lines.append(f"invalid settings {var}{NESTED}*: {msg}")
        else:
            lines.append(f"invalid setting {var}={mask_url(repr(err.get('input')))}: {msg}")
    return lines


def load_settings(
    env_file: str | Path | None = ".env",
    cls: type[CoreSettings] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build the settings from flags, the environment, `<VAR>_FILE` secrets and an optional .env file.

    Args:
        env_file: the env file (a missing one is simply not read; the CLI rejects a missing explicit one).
        cls: the settings class (tests).
        overrides: values given as command-line flags, nested like the model (win over everything).

    Raises:
        ConfigError: one line per invalid or conflicting value.
    """
    settings_cls = cls or Settings
    try:
        return settings_cls(**env_data(settings_cls, env_file, overrides))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, settings_cls)) from None
    except EnvError as exc:
        raise ConfigError(exc.lines) from None


def known_env_vars() -> set[str]:
    names = {ENV_PREFIX + "ENV_FILE", LEAN_IMPORTS}
    for path, info in _walk(Settings):
        for i in range(1, len(path) + 1):
            names.add(env_name(path[:i]))
        if _is_secret(info.annotation):
            names.add(env_name(path) + "_FILE")
    return names


def unknown_env_vars(environ: Mapping[str, Any] | None = None) -> list[str]:
    """`COLLECTOR_*` variables that set nothing: usually a typo worth a warning."""
    env = os.environ if environ is None else environ
    known = known_env_vars()
    return sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def env_file_values(env_file: str | Path | None) -> dict[str, str]:
    """The `KEY=value` pairs of an env file as the loader reads it (python-dotenv); {} when absent."""
    return read_env_file(env_file)


def nearest_setting(name: str) -> str | None:
    """The known variable closest to a misspelt one (`COLLECTOR_PROCES__PID` -> `COLLECTOR_PROCESS__PID`)."""
    import difflib

    found = difflib.get_close_matches(name.upper(), sorted(known_env_vars()), n=1, cutoff=0.6)
    return found[0] if found else None


def typo_warnings(env_file: str | Path | None, environ: Mapping[str, Any] | None = None) -> list[str]:
    """One warning per `COLLECTOR_*` name in the environment or the env file that sets nothing."""
    lines = []
    for where, names in (
        ("in the environment", unknown_env_vars(environ)),
        (f"in env file {env_file}", unknown_env_vars(env_file_values(env_file))),
    ):
        for name in names:
            near = nearest_setting(name)
            hint = f"did you mean {near}?" if near else "typo?"
            lines.append(f"{name} is not a known setting ({where}); {hint}")
    return lines


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, secrets shown as `**********`."""
    data: dict[str, Any] = _mask_urls(dump(settings))  # a dict in, a dict out
    data["state_path"] = str(settings.effective_state_path)
    for name in type(settings).model_fields:
        sub = getattr(settings, name)
        if isinstance(sub, SourceSettings):
            data[name]["enabled"] = sub.is_enabled()
    return data


def _mask_urls(data: Any) -> Any:
    """URL passwords masked in every string of a dump (`*_API_BASE`, `*_API_URL`, target URLs)."""
    if isinstance(data, dict):
        return {k: _mask_urls(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_mask_urls(v) for v in data]
    return mask_url(data) if isinstance(data, str) else data
