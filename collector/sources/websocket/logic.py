"""Pure parts of the WebSocket prober: failure classification, reply matching, allow-list, cert expiry.

No I/O here: these take data (an exception and the phase it happened in, a message, a URL) and are
tested without servers.
"""

from __future__ import annotations

import fnmatch
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = [
    "PHASES",
    "REASONS",
    "PhaseClock",
    "ProbeResult",
    "allowed",
    "classify",
    "earliest_expiry",
    "encode_send",
    "normalize_ws_url",
    "reply_matches",
]

#: Phases of `probe_websocket_duration_seconds`, in the order a probe goes through them.
PHASES = ("resolve", "connect", "tls", "handshake", "exchange")

#: Every `reason` of `probe_websocket_failures_total` (bounded; pre-initialised to 0 per target).
REASONS = (
    "dns",  # the host name did not resolve
    "refused",  # TCP connection refused
    "connect",  # other TCP connect errors (network or host unreachable, reset)
    "timeout",  # a phase, the reply or the pong did not come within the timeout
    "tls",  # TLS handshake or certificate verification failed
    "handshake",  # the HTTP upgrade failed (non-101 status, bad headers, no HTTP response)
    "closed",  # the server closed an established connection
    "unexpected_reply",  # replies came, but none matched `expect` in time
    "error",  # a local problem (unreadable token or CA file) or an unforeseen exception
)


@dataclass
class ProbeResult:
    """What one probe (or one persistent connection attempt) found."""

    success: bool = False
    reason: str | None = None  # one of REASONS when not successful
    detail: str = ""  # the error text, for the log
    phase: str | None = None  # the phase the failure happened in
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    status_code: int = 0  # HTTP status of the upgrade response; 0 when none came
    ping_rtt: float | None = None
    cert_expiry: float | None = None  # earliest NotAfter of the server's chain, Unix seconds
    unexpected: int = 0  # replies that did not match `expect`, to tell "wrong reply" from "no reply"


class PhaseClock:
    """Times consecutive phases into `ProbeResult.phases`; remembers the current one for classification.

    Args:
        result: where durations go (only names in PHASES are recorded).
        now: monotonic clock.
    """

    def __init__(self, result: ProbeResult, now: Callable[[], float] = time.perf_counter) -> None:
        self.result = result
        self.now = now
        self.phase: str | None = None
        self.began = 0.0

    def begin(self, phase: str) -> None:
        now = self.now()
        self.finish(now)  # the next phase starts the instant the last one ended
        self.phase = phase
        self.began = now

    def finish(self, now: float | None = None) -> None:
        """Record the current phase's duration (up to now: a failed phase shows how long it took)."""
        if self.phase in self.result.phases:
            self.result.phases[self.phase] = (self.now() if now is None else now) - self.began
        self.result.phase = self.phase


def classify(exc: BaseException, phase: str | None, unexpected: int = 0) -> str:
    """Map a probe exception, and the phase it was raised in, to one of REASONS."""
    if isinstance(exc, TimeoutError):
        return "unexpected_reply" if phase == "exchange" and unexpected else "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, ConnectionClosed):
        return "handshake" if phase == "handshake" else "closed"
    if isinstance(exc, InvalidHandshake):
        return "handshake"
    if isinstance(exc, OSError):
        return {"resolve": "dns", "connect": "connect", "tls": "tls", "handshake": "handshake"}.get(
            phase or "", "closed"
        )
    return "error"


def encode_send(send: str | dict[str, Any] | list[Any]) -> str:
    """The text frame to send: a string as is, a JSON value serialised compactly."""
    return send if isinstance(send, str) else json.dumps(send, separators=(",", ":"))


def _field(doc: Any, path: str) -> tuple[bool, Any]:
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return False, None
    return True, doc


def reply_matches(expect: str | dict[str, Any], message: str | bytes) -> bool:
    """Whether a reply satisfies `expect`.

    Args:
        expect: a regex searched in the text, or `{dotted.path: value}` that the JSON reply must have.
        message: a text frame, or a binary frame (decoded as UTF-8, bad bytes replaced).
    """
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    if isinstance(expect, str):
        return re.search(expect, text) is not None
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    for path, want in expect.items():
        found, got = _field(doc, path)
        if not found or got != want:
            return False
    return True


def _split_netloc(netloc: str) -> tuple[str, str]:
    """`host:port` of a URL or pattern without parsing the port (patterns may hold `*`)."""
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = netloc.partition(":")
    return host, port


# RFC 3986 2.3: unreserved characters are the same whether percent-encoded or not.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters that may stay raw in a path or query (RFC 3986 3.3/3.4); anything else is encoded.
_PCHAR = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_QCHAR = _PCHAR | frozenset("?")


def _normalize_part(text: str, keep: frozenset[str]) -> str | None:
    """Percent-encoding normalised (RFC 3986 6.2.2.1-2): unreserved escapes decoded, other escapes
    upper-cased, raw characters outside `keep` encoded. None for a control character (raw or encoded)
    or a broken escape: such a target is refused, never sent."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            code = text[i + 1 : i + 3]
            if len(code) != 2 or any(c not in "0123456789abcdefABCDEF" for c in code):
                return None
            value = int(code, 16)
            if value < 0x20 or value == 0x7F:
                return None
            decoded = chr(value)
            out.append(decoded if decoded in _UNRESERVED else "%" + code.upper())
            i += 3
            continue
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return None
        out.append(ch if ch in keep else "".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on a normalised absolute path (`/ws/../admin` -> `/admin`)."""
    segments: list[str] = []
    parts = path.split("/")[1:]
    for i, seg in enumerate(parts):
        last = i == len(parts) - 1
        if seg == "..":
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif seg == ".":
            if last:
                segments.append("")
        else:
            segments.append(seg)
    return "/" + "/".join(segments)


def normalize_ws_url(url: str) -> str | None:
    """The URL `/probe` would connect to, normalised so the allow-list and the wire see the same thing:
    lower-case scheme and host, dot segments removed, percent-encoding normalised, no fragment.

    Returns None for anything that is not a plain ws:// or wss:// URL: credentials, a fragment, a bad
    port, whitespace in the host, or a control character anywhere.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not parts.hostname or "@" in parts.netloc or parts.fragment:
        return None
    if "#" in url or any(c in parts.netloc for c in " %\\"):
        return None
    host = parts.hostname.lower()
    path = _normalize_part(parts.path or "/", _PCHAR)
    query = _normalize_part(parts.query, _QCHAR)
    if path is None or query is None or not path.startswith("/"):
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{_remove_dot_segments(path)}" + (f"?{query}" if query else "")


def _segments_match(path: list[str], pattern: list[str]) -> bool:
    """Path globs over whole segments: a `*` segment is any one segment, a `**` segment any number
    (zero included), and a last segment ending in `*` (`/ws*`) is that segment and anything below it
    (`/ws`, `/ws/x`, never `/wsx`). Every other segment must equal the path's exactly."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_segments_match(path[i:], rest) for i in range(len(path) + 1))
    if not path:
        return False
    if head == "*":
        return _segments_match(path[1:], rest)
    if not rest and head.endswith("*"):
        return path[0] == head[:-1]
    return path[0] == head and _segments_match(path[1:], rest)


def allowed(url: str, patterns: Iterable[str]) -> bool:
    """Whether `/probe` may reach `url`: some pattern matches its scheme, host, port, path and query.

    A pattern is a URL whose host, port and path are shell globs matched separately, so
    `wss://*.example.com/*` cannot match `wss://evil.test/x.example.com/`. The URL is normalised first
    (`normalize_ws_url`: `/ws/../admin` is `/admin`, `%2e%2e` is `..`), and path globs match whole
    segments (`_segments_match`): `/ws/*` admits `/ws/x` but not `/ws/x/y`, `/ws/**` and `/ws*` admit
    `/ws` and anything below it, never `/wsx`, `/ws/../admin` becomes `/admin` and is refused. Without a port the scheme's default port is meant; without a path any
    path is allowed; without a query (`?...`, also a glob) no query is.
    """
    norm = normalize_ws_url(url)
    if norm is None:
        return False
    parts = urlsplit(norm)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    host = (parts.hostname or "").lower()
    path = parts.path.split("/")[1:]
    for pattern in patterns:
        p = urlsplit(pattern.strip())
        if p.scheme != parts.scheme:
            continue
        p_host, p_port = _split_netloc(p.netloc.lower())
        p_port = p_port or ("443" if p.scheme == "wss" else "80")
        if not fnmatch.fnmatchcase(host, p_host) or not fnmatch.fnmatchcase(str(port), p_port):
            continue
        if p.path and not _segments_match(path, p.path.split("/")[1:]):
            continue
        if parts.query and not (p.query and fnmatch.fnmatchcase(parts.query, p.query)):
            continue
        return True
    return False


def earliest_expiry(not_after: Iterable[str]) -> float | None:
    """The earliest certificate `notAfter` (OpenSSL text, e.g. `Jun  1 12:00:00 2030 GMT`) in Unix seconds."""
    times = [float(ssl.cert_time_to_seconds(t)) for t in not_after if t]
    return min(times) if times else None
