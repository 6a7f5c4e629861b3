"""One settings model per source (`COLLECTOR_<SOURCE>__<FIELD>`), plus the HTTP layer's."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from collector.settings.base import CommaList, SecretList, SourceSettings
from collector.settings.model import Before, Model, NoDecode, Secret, model_check, setting

__all__ = [
    "DeploymentsSettings",
    "GitHubSettings",
    "HttpSettings",
    "LogsSettings",
    "ProcessSettings",
    "StripeSettings",
    "WebSocketSettings",
    "WebSocketTarget",
]


def _regex(value: Any) -> Any:
    """A regex setting compiled, with re's reason when it is not one."""
    if isinstance(value, str):
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


def _optional_regex(value: Any) -> Any:
    return None if value == "" else _regex(value)


def _checked_regex(value: Any) -> Any:
    """A string kept as it is, once it compiles (a reply regex)."""
    if isinstance(value, str):
        _regex(value)
    return value


class ProcessSettings(SourceSettings):
    """Sample the app's process with psutil (export `app_process_*`)."""

    config_fields: ClassVar[tuple[str, ...]] = ("pid", "pid_file", "match")

    pid: int | None = setting(default=None, gt=0, description="PID of the app process.")
    pid_file: Path | None = setting(
        default=None, description="File holding the app's PID; re-read each sample, so restarts are followed."
    )
    match: re.Pattern[str] | None = setting(
        default=None,
        before=_optional_regex,
        description="Regex searched in the process name and command line; the oldest match wins.",
    )
    interval: float = setting(default=5.0, gt=0, le=3600, description="Seconds between samples.")


class LogsSettings(SourceSettings):
    """Tail the app's JSON log files and turn lines into metrics (rules and presets)."""

    config_fields: ClassVar[tuple[str, ...]] = ("paths",)

    paths: CommaList = setting(default_factory=list, description="Glob patterns of log files to follow.")
    start_at: Literal["end", "beginning"] = setting(
        default="end",
        description="Where to start in files that exist at the very first start (later files: beginning).",
    )
    max_line_bytes: int = setting(
        default=1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Longer lines are skipped and counted.",
    )
    checkpoint_interval: float = setting(
        default=1.0, gt=0, le=300, description="Seconds between checkpoints of offsets and metric state."
    )
    poll_interval: float = setting(
        default=1.0, gt=0, le=60, description="Polling fallback period when file notifications are missed."
    )
    read_window: float = setting(
        default=0.25,
        ge=0.01,
        le=5,
        description="Latency budget (seconds): change notifications are coalesced so files are read at "
        "most once per window; a trickle of lines is read in batches instead of waking per write.",
    )
    preset: CommaList = setting(
        default_factory=list, description="Rule presets by name (winston, pino-http, ...)."
    )
    rules: Path | None = setting(default=None, description="YAML rules file; its rules add to the presets'.")
    max_series: int = setting(default=10_000, ge=1, description="Default series limit per metric.")


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


def _ws_url(value: str) -> str:
    from urllib.parse import urlsplit

    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        # urlsplit drops tabs and newlines silently; they must never reach a request line.
        raise ValueError("URL contains a space or control character; percent-encode it (%20)")
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


class WebSocketTarget(Model):
    """One WebSocket endpoint to probe: an item of `COLLECTOR_WEBSOCKET__TARGETS`."""

    url: str = setting(description="ws:// or wss:// URL.", check=_ws_url)
    name: str | None = setting(
        default=None, min_length=1, description="Value of the `target` label; default the URL."
    )
    mode: Literal["periodic", "persistent"] = setting(default="periodic")
    interval: float | None = setting(
        default=None, gt=0, le=86400, description="Seconds between probes or pings."
    )
    timeout: float | None = setting(
        default=None, gt=0, le=300, description="Seconds a probe or a ping may take."
    )
    headers: dict[str, Secret] = setting(default_factory=dict, description="Extra upgrade request headers.")
    token_env: str | None = setting(default=None, description="Env var holding a token sent in token_header.")
    token_file: Path | None = setting(
        default=None, description="File holding the token, re-read per connect."
    )
    token_header: str = setting(default="Authorization")
    token_prefix: str = setting(default="Bearer ")
    subprotocols: list[str] = setting(default_factory=list)
    origin: str | None = None
    send: str | dict[str, Any] | list[Any] | None = setting(
        default=None, description="Message sent after the handshake."
    )
    expect: str | dict[str, Any] | None = setting(
        default=None,
        description="Reply regex, or JSON fields (dotted paths) the reply must have.",
        check=_checked_regex,
    )
    ping: bool = setting(default=True, description="Send a WebSocket ping and time the pong.")
    ca_file: Path | None = None
    verify: bool = setting(default=True, description="Verify the server certificate and host name.")
    cert_file: Path | None = setting(default=None, description="Client certificate (PEM) for mutual TLS.")
    key_file: Path | None = None
    server_name: str | None = setting(default=None, description="TLS SNI and host name to verify.")
    backoff_max: float = setting(default=60.0, gt=0, le=3600, description="Persistent mode reconnect cap.")

    @model_check
    def _consistent(self) -> None:
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

    @property
    def label(self) -> str:
        return self.name or self.url


class WebSocketSettings(SourceSettings):
    """Probe WebSocket endpoints the way a client does (`probe_websocket_*`)."""

    config_fields: ClassVar[tuple[str, ...]] = ("targets", "probe_allow")

    targets: Annotated[list[WebSocketTarget], NoDecode, Before(_ws_targets)] = setting(
        default_factory=list, description="JSON list of target objects, or comma-separated URLs."
    )
    interval: float = setting(
        default=15.0, gt=0, le=86400, description="Default seconds between probes/pings."
    )
    timeout: float = setting(default=5.0, gt=0, le=300, description="Default seconds a probe may take.")
    token: Secret | None = setting(
        default=None, description="Token sent to configured targets that set no token_env/token_file."
    )
    probe_allow: CommaList = setting(
        default_factory=list, description="URL patterns /probe may reach besides configured targets."
    )
    probe_concurrency: int = setting(default=10, ge=1, le=1000, description="Concurrent /probe requests.")

    def openssl_needs(self) -> dict[str, str]:
        # Always, not only for wss:// targets: the websockets client imports ssl at its own import.
        return {"tls": "targets"}

    @model_check
    def _unique_labels(self) -> None:
        seen: set[str] = set()
        for target in self.targets:
            if target.label in seen:
                raise ValueError(f"two targets share the name {target.label!r}; give each a distinct name")
            seen.add(target.label)


def _github_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(
            "expected an http(s) URL, e.g. https://api.github.com or https://ghe.example.com/api/v3"
        )
    return value.rstrip("/")


def _owner_name(value: list[str]) -> list[str]:
    bad = [r for r in value if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", r)]
    if bad:
        raise ValueError(f"expected owner/name entries, e.g. octo-org/shop; not {', '.join(bad)}")
    return value


class GitHubSettings(SourceSettings):
    """GitHub deployments (webhooks and REST API polling) into DORA's four keys (docs/dora.md)."""

    config_fields: ClassVar[tuple[str, ...]] = ("webhook_secret", "token")

    webhook_secret: Secret | None = setting(
        default=None, description="Secret of the GitHub webhook; enables POST /webhooks/github."
    )
    token: Secret | None = setting(
        default=None, description="Token for REST API polling of COLLECTOR_GITHUB__REPOSITORIES."
    )
    api_url: str = setting(
        default="https://api.github.com",
        description="REST API base URL (GHE: https://host/api/v3).",
        check=_github_url,
    )
    repositories: CommaList = setting(
        default_factory=list,
        description="owner/name list: polled with a token; webhook filter when set.",
        check=_owner_name,
    )
    production_environments: re.Pattern[str] = setting(
        default=re.compile(r"^(production|prod)$", re.IGNORECASE),
        before=_regex,
        description="Regex searched in environment names; only matching environments are tracked.",
    )
    incident_label: str | None = setting(
        default=None, description="Issue label marking incidents (issues events); unset: no incidents."
    )
    incident_environment_prefix: str = setting(
        default="environment:",
        min_length=1,
        description="Label prefix naming the environment an incident concerns (environment:staging).",
    )
    incident_default_environment: str = setting(
        default="production",
        min_length=1,
        description="Environment of an incident without such a label.",
    )
    change_failure: Literal["incidents", "deployments", "both"] = setting(
        default="incidents",
        description="Change failures: deployments that caused an incident (DORA, Four Keys, DevLake), "
        "failed deployment runs, or both. Also chooses the headline recovery time.",
    )
    deploy_workflows: CommaList = setting(
        default_factory=list,
        description="Workflow names or file names whose completed runs count as deployments.",
    )
    workflow_environment: str = setting(
        default="production", min_length=1, description="Environment recorded for deploy workflow runs."
    )
    poll_interval: float = setting(default=60.0, ge=1, le=86400, description="Seconds between API polls.")
    backfill_days: int = setting(default=30, ge=1, le=400, description="History read on the very first poll.")
    recompute_interval: float = setting(
        default=60.0, gt=0, le=3600, description="Seconds between recomputes of the window gauges."
    )

    def openssl_needs(self) -> dict[str, str]:
        # Webhooks: HMAC-SHA256 (OpenSSL's is faster); polling an https API: TLS.
        needs = {"hashes": "webhook_secret"} if self.webhook_secret is not None else {}
        if self.token is not None and self.api_url.startswith("https:"):
            needs["tls"] = "api_url"
        return needs

    @model_check
    def _token_needs_repositories(self) -> None:
        if self.token is not None and not self.repositories:
            raise ValueError(
                "COLLECTOR_GITHUB__TOKEN is set but COLLECTOR_GITHUB__REPOSITORIES is empty: "
                "name the repositories to poll"
            )


class DeploymentsSettings(SourceSettings):
    """POST /deployments: CI pipelines report deployments that are not GitHub deployments."""

    config_fields: ClassVar[tuple[str, ...]] = ("token",)

    token: Secret | None = setting(default=None, description="Bearer token CI sends to POST /deployments.")
    change_failure: Literal["incidents", "deployments", "both"] = setting(
        default="incidents",
        description="As COLLECTOR_GITHUB__CHANGE_FAILURE, when the github source is off (it wins when on).",
    )


class HttpSettings(Model):
    """HTTP server limits (`COLLECTOR_HTTP__*`), per listener; every refusal is counted in `collector_http_*`."""

    max_body_bytes: int = setting(
        default=5 * 1024 * 1024, ge=1024, le=1024**3, description="Largest request body; larger ones get 413."
    )
    max_header_bytes: int = setting(
        default=16 * 1024, ge=1024, le=1024 * 1024, description="Largest request head; larger ones get 431."
    )
    header_timeout: float = setting(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a client may take to send a request head (and TLS handshake).",
    )
    body_timeout: float = setting(
        default=30.0, gt=0, le=3600, description="Seconds a client may take to send a request body; then 408."
    )
    idle_timeout: float = setting(
        default=75.0, gt=0, le=3600, description="Seconds an idle keep-alive connection stays open."
    )
    max_concurrent_requests: int = setting(
        default=128,
        ge=1,
        le=100_000,
        description="Webhook and /deployments requests handled at once per listener; more get 503.",
    )
    max_concurrent_scrapes: int = setting(
        default=16, ge=1, le=100_000, description="/metrics requests handled at once per listener."
    )
    max_concurrent_health: int = setting(
        default=16,
        ge=1,
        le=100_000,
        description="/health, /health/live and /health/ready at once per listener.",
    )
    max_concurrent_probes: int = setting(
        default=16, ge=1, le=100_000, description="/probe requests handled at once per listener."
    )
    max_concurrent_other: int = setting(
        default=32, ge=1, le=100_000, description="Requests to every other path (/, /dora, 404s) at once."
    )
    max_client_share: float = setting(
        default=0.5,
        gt=0,
        le=1,
        description="Share of a route class's budget one client address may hold (at least one request).",
    )
    min_body_rate: int = setting(
        default=1024,
        ge=0,
        le=1024**3,
        description="Bytes per second a request body must average after its first second; slower: 408 (0: off).",
    )
    auth_concurrency: int = setting(
        default=1, ge=1, le=64, description="bcrypt checks of uncached basic-auth credentials at once."
    )
    auth_queue: int = setting(
        default=32,
        ge=0,
        le=100_000,
        description="Uncached basic-auth checks that may wait for a bcrypt slot; more get 503.",
    )
    config_reload_interval: float = setting(
        default=5.0, gt=0, le=3600, description="Seconds between checks of the web config file for changes."
    )
    webhook_tls: bool = setting(
        default=False,
        description="Serve COLLECTOR_WEBHOOK_LISTEN with the web config's certificate (never asks for client certificates).",
    )


def _whsec(value: list[Secret]) -> list[Secret]:
    if any(not s.get_secret_value().startswith("whsec_") for s in value):
        raise ValueError(
            "every webhook secret must start with whsec_ (Dashboard > Webhooks > Signing secret)"
        )
    return value


def _stripe_key(value: Secret | None) -> Secret | None:
    if value is not None and not value.get_secret_value().startswith(("sk_", "rk_")):
        raise ValueError(
            "expected a secret key (sk_...) or restricted key (rk_...) with read access to events"
        )
    return value


def _stripe_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("expected an http(s) URL, e.g. https://api.stripe.com")
    return value.rstrip("/")


class StripeSettings(SourceSettings):
    """Stripe events by webhook and/or Events API polling into business metrics (docs/stripe.md)."""

    config_fields: ClassVar[tuple[str, ...]] = ("webhook_secrets", "api_key")

    webhook_secrets: SecretList = setting(
        default_factory=list,
        description="Endpoint signing secrets (whsec_...), comma-separated; several while rotating.",
        check=_whsec,
    )
    tolerance: int = setting(
        default=300, ge=1, le=86400, description="Maximum age in seconds of a webhook's signed timestamp."
    )
    max_body_bytes: int = setting(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Larger webhook bodies get 413."
    )
    api_key: Secret | None = setting(
        default=None,
        description="Secret or restricted key (sk_/rk_) for Events API polling.",
        check=_stripe_key,
    )
    api_base: str = setting(
        default="https://api.stripe.com", description="Stripe API base URL.", check=_stripe_url
    )
    poll_interval: float = setting(
        default=10.0, ge=0.05, le=3600, description="Seconds between Events API polls."
    )
    backfill: float = setting(
        default=0.0,
        ge=0,
        le=30 * 86400,
        description="Seconds of event history read on the very first poll (0: start at the newest event).",
    )
    reconcile_interval: float = setting(
        default=0.0, ge=0, le=7 * 86400, description="Seconds between subscription reconciliations (0: off)."
    )
    refetch_on_tie: bool = setting(
        default=True,
        description="With api_key: re-read a subscription from the API when two of its events share a second.",
    )

    def openssl_needs(self) -> dict[str, str]:
        # Webhooks: HMAC-SHA256 of every one (OpenSSL's is faster); polling an https API: TLS.
        needs = {"hashes": "webhook_secrets"}
        if self.api_key is not None and self.api_base.startswith("https:"):
            needs["tls"] = "api_base"
        return needs
