"""Secret redaction for every byte the collector writes: log lines (its own and third-party loggers such
as websockets, which print request headers at DEBUG), error lines and HTTP answers (pure, no I/O
besides reading `token_file`s once in `from_settings`).

Three rules, applied in order: every configured secret value becomes `***`; the value after a
credential-carrying header name (`Authorization: ...`, a target's `token_header`) becomes `***`; the
password of a URL's userinfo (`https://user:pw@host`) becomes `***` (`urlmask.py`, which settings use
too without depending on this module).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.settings.model import Model, Secret
from collector.urlmask import MASK, mask_url
from collector.urlmask import USERINFO as _USERINFO

if TYPE_CHECKING:
    from collector.settings import Settings
    from collector.settings.sources import WebSocketSettings

__all__ = ["MASK", "Redactor", "mask_url", "secret_values"]

#: Headers whose value is a credential wherever they appear.
CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
)
# A secret shorter than this would mask ordinary words; none of the collector's secrets is that short.
_MIN_SECRET = 4


def _secrets_in(value: Any) -> Iterable[str]:
    if isinstance(value, Secret):
        yield value.get_secret_value()
    elif isinstance(value, Model):
        for name in type(value).model_fields:
            yield from _secrets_in(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _secrets_in(item)


def _websocket(settings: Settings) -> WebSocketSettings:
    from collector.settings.sources import WebSocketSettings

    try:
        return settings.section("websocket", WebSocketSettings)
    except KeyError:  # a registry without the websocket source (tests): no targets
        return WebSocketSettings()


def _api_urls(settings: Settings) -> list[str]:
    """The API base URLs the settings name (a password in one is a secret too)."""
    from collector.settings.sources import GitHubSettings, StripeSettings

    urls = []
    with contextlib.suppress(KeyError):  # a registry without that source (tests)
        urls.append(settings.section("github", GitHubSettings).api_url)
    with contextlib.suppress(KeyError):
        urls.append(settings.section("stripe", StripeSettings).api_base)
    return urls


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: `Secret` fields (direct or from `_FILE`), WebSocket target
    headers, and the tokens a target reads from `token_env` or `token_file` (as they are now)."""
    import os

    out = list(_secrets_in(settings))
    for target in _websocket(settings).targets:
        if target.token_env:
            out.append(os.environ.get(target.token_env, ""))
        if target.token_file is not None:
            # An unreadable file is the probe's to report; there is nothing to mask yet.
            with contextlib.suppress(OSError, UnicodeDecodeError):
                out.append(Path(target.token_file).read_text(encoding="utf-8").strip())
    for url in _api_urls(settings):
        match = _USERINFO.search(url)
        if match:
            out.append(url[match.end(1) : match.end() - 1])
    return [s for s in out if s]


class Redactor:
    """Masks secrets in text.

    Args:
        secrets: exact values to mask (shorter than 4 characters are ignored).
        header_names: extra header names whose values are credentials (e.g. a `token_header`).
    """

    def __init__(self, secrets: Iterable[str] = (), header_names: Iterable[str] = ()) -> None:
        values = {s for s in secrets if len(s) >= _MIN_SECRET}
        # Also as they appear inside JSON strings (quotes and backslashes escaped).
        values |= {json.dumps(s, ensure_ascii=False)[1:-1] for s in values}
        self.secrets = sorted(values, key=len, reverse=True)
        self._raw = [s.encode("utf-8", "surrogateescape") for s in self.secrets]  # for `bytes`, per answer
        names = sorted({*CREDENTIAL_HEADERS, *(h.lower() for h in header_names if h)}, key=len, reverse=True)
        self._header = re.compile(
            r"(?i)(?<![\w-])(" + "|".join(re.escape(n) for n in names) + r")(\"?\s*[:=]\s*\"?)([^\r\n\"',}]+)"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        headers: set[str] = set()
        for target in _websocket(settings).targets:
            headers.add(target.token_header)
            headers.update(target.headers)
        return cls(secret_values(settings), headers)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = self._header.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
        return mask_url(text)

    def bytes(self, data: bytes) -> bytes:
        """The exact-value rule on bytes (HTTP bodies): cheap enough for every answer but /metrics."""
        for raw in self._raw:
            if raw in data:
                data = data.replace(raw, MASK.encode())
        return data
