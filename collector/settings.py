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
    "ConfigError",
    "HttpSettings",
    "LogsSettings",
    "ProcessSettings",
    "SecretList",
    "Settings",
    "SourceSettings",
    "StripeSettings",
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

    @model_validator(mode="before")
    @classmethod
    def _drop_secret_file_vars(cls, data: Any) -> Any:
        # COLLECTOR_<SOURCE>__<SECRET>_FILE also reaches us as field `<secret>_file` through the nested
        # env source; EnvFileSecretsSource has already read it, so it is not an unknown setting.
        if isinstance(data, dict):
            names = {f"{n}_file" for n, info in cls.model_fields.items() if _is_secret(info.annotation)}
            data = {k: v for k, v in data.items() if k.lower() not in names or k in cls.model_fields}
        return data


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


def _ws_targets(value: Any) -> Any:
    """`COLLECTOR_WEBSOCKET__TARGETS`: a JSON list (of URLs or target objects), one object, or `url,url`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"not valid JSON ({exc.msg}); use a JSON list of targets or url,url"
                ) from exc
            value = [value] if isinstance(value, dict) else value
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, list):
        return [{"url": item} if isinstance(item, str) else item for item in value]
    return value


class WebSocketTarget(BaseModel):
    """One WebSocket endpoint to probe: an item of `COLLECTOR_WEBSOCKET__TARGETS`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="ws:// or wss:// URL.")
    name: str | None = Field(
        default=None, min_length=1, description="Value of the `target` label; default the URL."
    )
    mode: Literal["periodic", "persistent"] = Field(default="periodic")
    interval: float | None = Field(
        default=None, gt=0, le=86400, description="Seconds between probes or pings."
    )
    timeout: float | None = Field(
        default=None, gt=0, le=300, description="Seconds a probe or a ping may take."
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra upgrade request headers.")
    token_env: str | None = Field(default=None, description="Env var holding a token sent in token_header.")
    token_file: Path | None = Field(default=None, description="File holding the token, re-read per connect.")
    token_header: str = Field(default="Authorization")
    token_prefix: str = Field(default="Bearer ")
    subprotocols: list[str] = Field(default_factory=list)
    origin: str | None = None
    send: str | dict[str, Any] | list[Any] | None = Field(
        default=None, description="Message sent after the handshake."
    )
    expect: str | dict[str, Any] | None = Field(
        default=None, description="Reply regex, or JSON fields (dotted paths) the reply must have."
    )
    ping: bool = Field(default=True, description="Send a WebSocket ping and time the pong.")
    ca_file: Path | None = None
    verify: bool = Field(default=True, description="Verify the server certificate and host name.")
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    key_file: Path | None = None
    server_name: str | None = Field(default=None, description="TLS SNI and host name to verify.")
    backoff_max: float = Field(default=60.0, gt=0, le=3600, description="Persistent mode reconnect cap.")

    @field_validator("url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from exc
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("must be a ws:// or wss:// URL with a host, e.g. wss://app.example.com/ws")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL would end up in labels; use headers or token_file")
        return value

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebSocketTarget:
        secure = self.url.startswith("wss:")
        tls = [f for f in ("ca_file", "cert_file", "key_file", "server_name") if getattr(self, f) is not None]
        if tls and not secure:
            raise ValueError(f"{', '.join(tls)} set for a ws:// URL; TLS options need wss://")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if self.token_env is not None and self.token_file is not None:
            raise ValueError("set token_env or token_file, not both")
        if self.token_env is not None and not os.environ.get(self.token_env):
            raise ValueError(f"token_env {self.token_env} is not set in the environment")
        if self.expect is not None and self.send is None and self.mode == "persistent":
            raise ValueError("expect without send is not supported in persistent mode")
        return self

    @property
    def label(self) -> str:
        return self.name or self.url


class WebSocketSettings(SourceSettings):
    """Probe WebSocket endpoints the way a client does (`probe_websocket_*`)."""

    config_fields: ClassVar[tuple[str, ...]] = ("targets", "probe_allow")

    targets: Annotated[list[WebSocketTarget], NoDecode, BeforeValidator(_ws_targets)] = Field(
        default_factory=list, description="JSON list of target objects, or comma-separated URLs."
    )
    interval: float = Field(default=15.0, gt=0, le=86400, description="Default seconds between probes/pings.")
    timeout: float = Field(default=5.0, gt=0, le=300, description="Default seconds a probe may take.")
    token: SecretStr | None = Field(
        default=None, description="Token sent to configured targets that set no token_env/token_file."
    )
    probe_allow: CommaList = Field(
        default_factory=list, description="URL patterns /probe may reach besides configured targets."
    )
    probe_concurrency: int = Field(default=10, ge=1, le=1000, description="Concurrent /probe requests.")

    @model_validator(mode="after")
    def _unique_labels(self) -> WebSocketSettings:
        seen: set[str] = set()
        for target in self.targets:
            if target.label in seen:
                raise ValueError(f"two targets share the name {target.label!r}; give each a distinct name")
            seen.add(target.label)
        return self


class GitHubSettings(SourceSettings):
    """GitHub deployments (webhooks and REST API polling) into DORA's four keys (docs/dora.md)."""

    config_fields: ClassVar[tuple[str, ...]] = ("webhook_secret", "token")

    webhook_secret: SecretStr | None = Field(
        default=None, description="Secret of the GitHub webhook; enables POST /webhooks/github."
    )
    token: SecretStr | None = Field(
        default=None, description="Token for REST API polling of COLLECTOR_GITHUB__REPOSITORIES."
    )
    api_url: str = Field(
        default="https://api.github.com", description="REST API base URL (GHE: https://host/api/v3)."
    )
    repositories: CommaList = Field(
        default_factory=list, description="owner/name list: polled with a token; webhook filter when set."
    )
    production_environments: re.Pattern[str] = Field(
        default=re.compile(r"^(production|prod)$", re.IGNORECASE),
        description="Regex searched in environment names; only matching environments are tracked.",
    )
    incident_label: str | None = Field(
        default=None, description="Issue label marking incidents (issues events); unset: no incidents."
    )
    deploy_workflows: CommaList = Field(
        default_factory=list,
        description="Workflow names or file names whose completed runs count as deployments.",
    )
    workflow_environment: str = Field(
        default="production", min_length=1, description="Environment recorded for deploy workflow runs."
    )
    poll_interval: float = Field(default=60.0, ge=1, le=86400, description="Seconds between API polls.")
    backfill_days: int = Field(default=30, ge=1, le=400, description="History read on the very first poll.")
    recompute_interval: float = Field(
        default=60.0, gt=0, le=3600, description="Seconds between recomputes of the window gauges."
    )

    @field_validator("production_environments", mode="before")
    @classmethod
    def _compile_env(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(
                "expected an http(s) URL, e.g. https://api.github.com or https://ghe.example.com/api/v3"
            )
        return value.rstrip("/")

    @field_validator("repositories")
    @classmethod
    def _owner_name(cls, value: list[str]) -> list[str]:
        bad = [r for r in value if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", r)]
        if bad:
            raise ValueError(f"expected owner/name entries, e.g. octo-org/shop; not {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _token_needs_repositories(self) -> GitHubSettings:
        if self.token is not None and not self.repositories:
            raise ValueError(
                "COLLECTOR_GITHUB__TOKEN is set but COLLECTOR_GITHUB__REPOSITORIES is empty: "
                "name the repositories to poll"
            )
        return self


class DeploymentsSettings(SourceSettings):
    """POST /deployments: CI pipelines report deployments that are not GitHub deployments."""

    config_fields: ClassVar[tuple[str, ...]] = ("token",)

    token: SecretStr | None = Field(default=None, description="Bearer token CI sends to POST /deployments.")


class HttpSettings(BaseModel):
    """HTTP server limits (`COLLECTOR_HTTP__*`), per listener; every refusal is counted in `collector_http_*`."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, le=1024**3, description="Largest request body; larger ones get 413."
    )
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, description="Largest request head; larger ones get 431."
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a client may take to send a request head (and TLS handshake).",
    )
    body_timeout: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds a client may take to send a request body; then 408."
    )
    idle_timeout: float = Field(
        default=75.0, gt=0, le=3600, description="Seconds an idle keep-alive connection stays open."
    )
    max_concurrent_requests: int = Field(
        default=64, ge=1, le=100_000, description="Requests handled at once per listener; more get 503."
    )
    config_reload_interval: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds between checks of the web config file for changes."
    )
    webhook_tls: bool = Field(
        default=False,
        description="Serve COLLECTOR_WEBHOOK_LISTEN with the web config's certificate (never asks for client certificates).",
    )


class StripeSettings(SourceSettings):
    """Stripe events by webhook and/or Events API polling into business metrics (docs/stripe.md)."""

    config_fields: ClassVar[tuple[str, ...]] = ("webhook_secrets", "api_key")

    webhook_secrets: Annotated[list[SecretStr], NoDecode, BeforeValidator(split_list)] = Field(
        default_factory=list,
        description="Endpoint signing secrets (whsec_...), comma-separated; several while rotating.",
    )
    tolerance: int = Field(
        default=300, ge=1, le=86400, description="Maximum age in seconds of a webhook's signed timestamp."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Larger webhook bodies get 413."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Secret or restricted key (sk_/rk_) for Events API polling."
    )
    api_base: str = Field(default="https://api.stripe.com", description="Stripe API base URL.")
    poll_interval: float = Field(
        default=10.0, ge=0.05, le=3600, description="Seconds between Events API polls."
    )
    backfill: float = Field(
        default=0.0,
        ge=0,
        le=30 * 86400,
        description="Seconds of event history read on the very first poll (0: start at the newest event).",
    )
    reconcile_interval: float = Field(
        default=0.0, ge=0, le=7 * 86400, description="Seconds between subscription reconciliations (0: off)."
    )

    @field_validator("webhook_secrets")
    @classmethod
    def _whsec(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not s.get_secret_value().startswith("whsec_") for s in value):
            raise ValueError(
                "every webhook secret must start with whsec_ (Dashboard > Webhooks > Signing secret)"
            )
        return value

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("sk_", "rk_")):
            raise ValueError(
                "expected a secret key (sk_...) or restricted key (rk_...) with read access to events"
            )
        return value

    @field_validator("api_base")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http(s) URL, e.g. https://api.stripe.com")
        return value.rstrip("/")


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
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    web_config_file: Path | None = Field(
        default=None,
        description="exporter-toolkit web config (TLS, mTLS, basic auth, headers); re-read on change.",
    )
    webhook_listen: str | None = Field(
        default=None, description="host:port of a second listener serving only webhook routes (public side)."
    )
    github: GitHubSettings = Field(default_factory=GitHubSettings)
    deployments: DeploymentsSettings = Field(default_factory=DeploymentsSettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    logs: LogsSettings = Field(default_factory=LogsSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("listen", "webhook_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port with a port 0-65535, e.g. 0.0.0.0:9464 or [::]:9464")
        return value

    @field_validator("web_config_file")
    @classmethod
    def _web_config(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        from collector.web.config import WebConfigError, load_web_config

        try:
            load_web_config(value)
        except WebConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _webhook_listener(self) -> Settings:
        if self.webhook_listen is not None and self.webhook_listen == self.listen:
            raise ValueError("COLLECTOR_WEBHOOK_LISTEN must differ from COLLECTOR_LISTEN")
        if self.http.webhook_tls and (self.webhook_listen is None or self.web_config_file is None):
            raise ValueError(
                "COLLECTOR_HTTP__WEBHOOK_TLS=true needs COLLECTOR_WEBHOOK_LISTEN and a COLLECTOR_WEB_CONFIG_FILE with TLS"
            )
        return self

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
