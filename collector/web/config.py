"""Prometheus exporter-toolkit web configuration (`COLLECTOR_WEB_CONFIG_FILE`): parse and validate.

The same YAML that node_exporter's `--web.config.file` takes (and `promtool check web-config` checks):

    tls_server_config: {cert_file, key_file, client_ca_file, client_auth_type, min_version, max_version}
    http_server_config: {headers: {...}, http2: ...}
    basic_auth_users: {user: <bcrypt hash>}

`parse_web_config` is pure (text in, `WebConfig` out); `load_web_config` reads the file and the
certificates it names and builds the TLS context, so a bad certificate is rejected like bad YAML.
Unknown keys are errors, as exporter-toolkit's strict YAML decoding makes them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported where TLS is configured: a collector without it keeps OpenSSL out (collector.importpolicy).
    import ssl

__all__ = [
    "ALLOWED_HEADERS",
    "CLIENT_AUTH_TYPES",
    "TLS_VERSIONS",
    "TlsConfig",
    "WebConfig",
    "WebConfigError",
    "build_tls_context",
    "load_web_config",
    "parse_web_config",
]

#: exporter-toolkit's closed list of settable headers; a tuple value lists the only values allowed.
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

#: exporter-toolkit's TLS version names -> the `ssl.TLSVersion` members (by name: ssl loads with TLS only).
TLS_VERSIONS: dict[str, str] = {"TLS10": "TLSv1", "TLS11": "TLSv1_1", "TLS12": "TLSv1_2", "TLS13": "TLSv1_3"}

#: Go's tls.ClientAuthType names -> the `ssl.VerifyMode` members (by name). Python's ssl module always
#: verifies a certificate it asks for, so the two "any certificate" modes are refused below.
CLIENT_AUTH_TYPES: dict[str, str] = {
    "": "CERT_NONE",
    "NoClientCert": "CERT_NONE",
    "VerifyClientCertIfGiven": "CERT_OPTIONAL",
    "RequireAndVerifyClientCert": "CERT_REQUIRED",
}
_UNVERIFIED_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")

_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
    # Accepted only when empty: Go cipher/curve names have no exact OpenSSL mapping here.
    "cipher_suites",
    "curve_preferences",
    "client_allowed_sans",
}
_HTTP_KEYS = {"headers", "http2"}
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
# bcrypt's modular crypt format: $2a$/$2b$/$2y$, two-digit cost, 22 salt + 31 hash characters.
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


class WebConfigError(ValueError):
    """The web config file is unreadable or invalid; the message says where and why (never a hash)."""


@dataclass(frozen=True)
class TlsConfig:
    """`tls_server_config`, with paths resolved against the config file's directory."""

    cert_file: Path
    key_file: Path
    client_auth: ssl.VerifyMode
    min_version: ssl.TLSVersion
    client_ca_file: Path | None = None
    max_version: ssl.TLSVersion | None = None
    prefer_server_ciphers: bool = False


@dataclass(frozen=True)
class WebConfig:
    """A validated web config. `users` maps user name to bcrypt hash (bytes)."""

    tls: TlsConfig | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, bytes] = field(default_factory=dict)
    #: Digest of the file and of every certificate it names: a change in any of them means reload.
    fingerprint: str = ""
    #: Built from `tls` by `load_web_config`; None without TLS.
    tls_context: ssl.SSLContext | None = None


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise WebConfigError(
            f"{where}: unknown field {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WebConfigError(f"{where}.{key}: expected a string")
    return value


def _parse_tls(data: Mapping[str, Any], base: Path) -> TlsConfig | None:
    where = "tls_server_config"
    _check_keys(data, _TLS_KEYS, where)
    for key in ("cipher_suites", "curve_preferences", "client_allowed_sans"):
        if data.get(key):
            raise WebConfigError(f"{where}.{key}: not supported by the collector; remove it")
    cert, key = _str(data, "cert_file", where), _str(data, "key_file", where)
    ca, auth = _str(data, "client_ca_file", where), _str(data, "client_auth_type", where)
    if not (cert or key or ca or auth):
        return None  # an empty block means plain HTTP, as in exporter-toolkit
    import ssl  # TLS is configured: COLLECTOR_WEB_CONFIG_FILE allows it (collector.importpolicy)

    if not cert:
        raise WebConfigError(f"{where}: missing cert_file")
    if not key:
        raise WebConfigError(f"{where}: missing key_file")
    if auth in _UNVERIFIED_AUTH:
        raise WebConfigError(
            f"{where}.client_auth_type: {auth} (an unverified client certificate) is not supported; "
            "use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
        )
    if auth not in CLIENT_AUTH_TYPES:
        raise WebConfigError(f"{where}.client_auth_type: invalid ClientAuth: {auth}")
    mode = ssl.VerifyMode[CLIENT_AUTH_TYPES[auth]]
    if ca and mode == ssl.CERT_NONE:
        raise WebConfigError(f"{where}: client_ca_file is set without a client_auth_type that verifies it")
    if mode != ssl.CERT_NONE and not ca:
        raise WebConfigError(f"{where}.client_auth_type: {auth} needs client_ca_file")

    def version(name: str, default: ssl.TLSVersion | None) -> ssl.TLSVersion | None:
        text = _str(data, name, where)
        if not text:
            return default
        if text not in TLS_VERSIONS:
            raise WebConfigError(f"{where}.{name}: unknown TLS version {text!r} (TLS10, TLS11, TLS12, TLS13)")
        return ssl.TLSVersion[TLS_VERSIONS[text]]

    low, high = version("min_version", ssl.TLSVersion.TLSv1_2), version("max_version", None)
    if low is not None and high is not None and high < low:
        raise WebConfigError(f"{where}: max_version is lower than min_version")
    prefer = data.get("prefer_server_cipher_suites", False)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{where}.prefer_server_cipher_suites: expected true or false")
    return TlsConfig(
        cert_file=base / cert,
        key_file=base / key,
        client_ca_file=base / ca if ca else None,
        client_auth=mode,
        min_version=low or ssl.TLSVersion.TLSv1_2,
        max_version=high,
        prefer_server_ciphers=prefer,
    )


def _parse_headers(data: Mapping[str, Any]) -> dict[str, str]:
    where = "http_server_config"
    _check_keys(data, _HTTP_KEYS, where)
    if "http2" in data and not isinstance(data["http2"], bool):
        raise WebConfigError(f"{where}.http2: expected true or false")
    headers = _mapping(data.get("headers"), f"{where}.headers")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name not in ALLOWED_HEADERS:
            raise WebConfigError(f"{where}.headers: HTTP header {name!r} can not be configured")
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise WebConfigError(f"{where}.headers.{name}: expected a single-line string")
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value.lower() not in allowed:
            raise WebConfigError(f"{where}.headers.{name}: invalid value; allowed: {', '.join(allowed)}")
        out[name] = value
    return out


def _parse_users(data: Mapping[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for user, hashed in data.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError("basic_auth_users: user names must be non-empty strings without ':'")
        match = _BCRYPT.match(hashed) if isinstance(hashed, str) else None
        # Never echo the hash: it is crackable offline.
        if match is None or not 4 <= int(match.group(1)) <= 31:
            raise WebConfigError(
                f"basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 10 '' | tr -d ':')"
            )
        out[user] = hashed.encode()
    return out


def parse_web_config(text: str, base: Path = Path(".")) -> WebConfig:
    """Validate web config YAML; relative file names resolve against `base` (the file's directory).

    Raises:
        WebConfigError: the first problem found, naming the field.
    """
    import yaml  # only with a web config file: most sidecars have none

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise WebConfigError(f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    data = _mapping(data, "web config")
    _check_keys(data, _TOP_KEYS, "web config")
    return WebConfig(
        tls=_parse_tls(_mapping(data.get("tls_server_config"), "tls_server_config"), base),
        headers=_parse_headers(_mapping(data.get("http_server_config"), "http_server_config")),
        users=_parse_users(_mapping(data.get("basic_auth_users"), "basic_auth_users")),
    )


def build_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context for `tls`; loads (and so checks) the certificate, key and client CA.

    Raises:
        WebConfigError: a file is missing or unreadable, or the key does not match the certificate.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = tls.min_version
    if tls.max_version is not None:
        ctx.maximum_version = tls.max_version
    if tls.prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"tls_server_config: cannot load cert_file {tls.cert_file} / key_file {tls.key_file}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"tls_server_config: cannot load client_ca_file {tls.client_ca_file}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    ctx.verify_mode = tls.client_auth
    return ctx


def _digest(paths: list[Path], text: bytes) -> str:
    h = hashlib.sha256(text)
    for path in paths:
        try:
            h.update(path.read_bytes())
        except OSError as exc:
            h.update(f"unreadable:{exc.errno}".encode())
    return h.hexdigest()


def fingerprint(path: Path) -> str:
    """Digest of the config file and the files it names (cheap change detection for reloads)."""
    try:
        raw = path.read_bytes()
        cfg = parse_web_config(raw.decode("utf-8", "replace"), path.parent)
    except (OSError, WebConfigError):
        try:
            return _digest([], path.read_bytes())
        except OSError as exc:
            return f"unreadable:{exc.errno}"
    return _digest(_tls_files(cfg.tls), raw)


def _tls_files(tls: TlsConfig | None) -> list[Path]:
    if tls is None:
        return []
    return [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p is not None]


def load_web_config(path: Path) -> WebConfig:
    """Read, validate and build the web config at `path` (blocking: call it off the event loop).

    Raises:
        WebConfigError: unreadable or invalid file, or certificates that do not load.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WebConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WebConfigError(f"{path}: not UTF-8 text") from None
    cfg = parse_web_config(text, path.parent)
    ctx = build_tls_context(cfg.tls) if cfg.tls is not None else None
    return WebConfig(
        tls=cfg.tls,
        headers=cfg.headers,
        users=cfg.users,
        fingerprint=_digest(_tls_files(cfg.tls), raw),
        tls_context=ctx,
    )
