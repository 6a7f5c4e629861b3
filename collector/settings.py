"""Settings: every knob is a `COLLECTOR_*` environment variable (nested with `__`), validated at start-up.

One pydantic model per source under one root `Settings`. Secrets are `SecretStr` and may also be read
from `<VAR>_FILE` (Docker and Kubernetes secrets). `load_settings` turns any validation failure into
`ConfigError`, whose lines name the env var, the bad value and what is allowed.
"""

from __future__ import annotations

import json
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "ENV_PREFIX",
    "CommaList",
    "SecretList",
    "ConfigError",
    "LogsSettings",
    "ProcessSettings",
    "Settings",
    "SourceSettings",
    "env_name",
    "load_settings",
    "masked_dump",
    "unknown_env_vars",
]

ENV_PREFIX = "COLLECTOR_"
NESTED = "__"


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
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]
#: The same for secrets (e.g. several webhook secrets during rotation); also readable from `<VAR>_FILE`.
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_list)]


class SourceSettings(BaseModel):
    """Base of every source's settings: `enabled` unset means "on when configured"."""

    model_config = ConfigDict(extra="forbid")

    #: Names of the fields that, when set, make the source configured (used in error messages).
    config_fields: ClassVar[tuple[str, ...]] = ()

    enabled: bool | None = Field(
        default=None, description="Force the source on or off; unset: on when it is configured."
    )

    def configured(self) -> bool:
        return any(getattr(self, f) for f in self.config_fields)

    def is_enabled(self) -> bool:
        return self.configured() if self.enabled is None else self.enabled


class ProcessSettings(SourceSettings):
    """Sample the app's process with psutil (export `app_process_*`)."""

    config_fields: ClassVar[tuple[str, ...]] = ("pid", "pid_file", "match")

    pid: int | None = Field(default=None, gt=0, description="PID of the app process.")
    pid_file: Path | None = Field(
        default=None, description="File holding the app's PID; re-read each sample, so restarts are followed."
    )
    match: re.Pattern[str] | None = Field(
        default=None,
        description="Regex searched in the process name and command line; the oldest match wins.",
    )
    interval: float = Field(default=5.0, gt=0, le=3600, description="Seconds between samples.")

    @field_validator("match", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                return None
            try:
                return re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class LogsSettings(SourceSettings):
    """Tail the app's JSON log files and turn lines into metrics (rules and presets)."""

    config_fields: ClassVar[tuple[str, ...]] = ("paths",)

    paths: CommaList = Field(default_factory=list, description="Glob patterns of log files to follow.")
    start_at: Literal["end", "beginning"] = Field(
        default="end",
        description="Where to start in files that exist at the very first start (later files: beginning).",
    )
    max_line_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Longer lines are skipped and counted.",
    )
    checkpoint_interval: float = Field(
        default=1.0, gt=0, le=300, description="Seconds between checkpoints of offsets and metric state."
    )
    poll_interval: float = Field(
        default=1.0, gt=0, le=60, description="Polling fallback period when file notifications are missed."
    )
    preset: CommaList = Field(
        default_factory=list, description="Rule presets by name (winston, pino-http, ...)."
    )
    rules: Path | None = Field(default=None, description="YAML rules file; its rules add to the presets'.")
    max_series: int = Field(default=10_000, ge=1, description="Default series limit per metric.")


class Settings(BaseSettings):
    """Root settings; each source has its own nested model (`COLLECTOR_<SOURCE>__<FIELD>`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    listen: str = Field(
        default="0.0.0.0:9464", description="host:port of the HTTP server (/metrics, /health)."
    )
    data_dir: Path = Field(default=Path("data"), description="Directory for the state store.")
    state_path: Path | None = Field(
        default=None, description="SQLite state file; default `<COLLECTOR_DATA_DIR>/state.db`."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The collector's own log level (JSON lines on stderr)."
    )
    shutdown_timeout: float = Field(
        default=8.0, gt=0, le=60, description="Seconds sources get to stop on SIGTERM before being cancelled."
    )
    process: ProcessSettings = Field(default_factory=ProcessSettings)
    logs: LogsSettings = Field(default_factory=LogsSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port with a port 0-65535, e.g. 0.0.0.0:9464 or [::]:9464")
        return value

    @model_validator(mode="after")
    def _enabled_needs_config(self) -> Settings:
        for name in type(self).model_fields:
            sub = getattr(self, name)
            if isinstance(sub, SourceSettings) and sub.enabled and not sub.configured():
                needed = " or ".join(env_name((name, f)) for f in sub.config_fields)
                raise ValueError(f"{env_name((name, 'enabled'))}=true but {needed} is not set")
        return self

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, EnvFileSecretsSource(settings_cls), dotenv_settings)


class ConfigError(Exception):
    """Invalid configuration; `lines` holds one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


# -- secrets from <VAR>_FILE ----------------------------------------------------------------------


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _walk(
    model: type[BaseModel], path: tuple[str, ...] = ()
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


class EnvFileSecretsSource(PydanticBaseSettingsSource):
    """Read each secret field from the file named by `<VAR>_FILE`, the Docker/Kubernetes convention."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        environ = {k.upper(): v for k, v in os.environ.items()}
        for path, info in _walk(self.settings_cls):
            if not _is_secret(info.annotation):
                continue
            var = env_name(path)
            file_var = var + "_FILE"
            file_path = environ.get(file_var)
            if not file_path:
                continue
            if var in environ:
                raise ConfigError([f"invalid setting: both {var} and {file_var} are set; set only one"])
            try:
                value = Path(file_path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    [f"invalid setting {file_var}={file_path!r}: cannot read the file ({exc.strerror})"]
                ) from exc
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return out


# -- loading and reporting ------------------------------------------------------------------------


def _secret_paths(cls: type[BaseModel]) -> set[tuple[str, ...]]:
    return {path for path, info in _walk(cls) if _is_secret(info.annotation)}


def _format_errors(exc: ValidationError, cls: type[BaseModel]) -> list[str]:
    secrets = _secret_paths(cls)
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, str))
        msg = err["msg"].removeprefix("Value error, ")
        var = env_name(loc)
        if not loc:
            lines.append(f"invalid settings: {msg}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"invalid setting {var}: unknown setting")
        elif loc and any(loc == p for p in secrets):
            lines.append(f"invalid setting {var}='***': {msg}")
        elif isinstance(err.get("input"), dict):
            lines.append(f"invalid settings {var}{NESTED}*: {msg}")
        else:
            lines.append(f"invalid setting {var}={err.get('input')!r}: {msg}")
    return lines


def load_settings(env_file: str | Path | None = ".env", cls: type[Settings] | None = None) -> Settings:
    """Build the settings from the environment, `<VAR>_FILE` secrets and an optional .env file.

    Raises:
        ConfigError: one line per invalid or conflicting value.
    """
    settings_cls = cls or Settings
    try:
        return settings_cls(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, settings_cls)) from None


def known_env_vars() -> set[str]:
    names = {ENV_PREFIX + "ENV_FILE"}
    for path, info in _walk(Settings):
        for i in range(1, len(path) + 1):
            names.add(env_name(path[:i]))
        if _is_secret(info.annotation):
            names.add(env_name(path) + "_FILE")
    return names


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """`COLLECTOR_*` variables that set nothing: usually a typo worth a warning."""
    env = os.environ if environ is None else environ
    known = known_env_vars()
    return sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, secrets shown as `**********`."""
    data = settings.model_dump(mode="json")
    data["state_path"] = str(settings.effective_state_path)
    for name in type(settings).model_fields:
        sub = getattr(settings, name)
        if isinstance(sub, SourceSettings):
            data[name]["enabled"] = sub.is_enabled()
    return data
