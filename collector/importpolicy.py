"""Keep OpenSSL out of a collector whose settings need neither TLS nor OpenSSL's hashes.

asyncio imports `ssl` when it loads (asyncio.sslproto), aiohttp builds default SSL contexts at import
(loading the CA bundle), and `urllib.request`, which aiohttp imports, imports `hashlib`, which loads
`_hashlib`: libssl, libcrypto and the contexts are ~7 MB of a logs-only daemon's resident memory. All of
them tolerate the modules' absence (asyncio and aiohttp check `ssl is None`; `hashlib` falls back to
CPython's built-in sha256, md5, ...; `hmac.compare_digest` comes from `_operator`). So `collector run`
decides, once its settings are loaded and before asyncio is imported, what this process may need:

- TLS (`ssl`, `_ssl`, and `_hashlib`, whose libcrypto libssl maps anyway), or
- OpenSSL's hashes only (`_hashlib`: HMAC-SHA256 of every webhook is several times faster with it),

from declarations, never from source names: each source's settings answer `openssl_needs()` (the
fields that ask for it given their values), and the core's own settings are read here (a web config
file may serve TLS, now or after a reload). What nothing needs is made unimportable for the process
by a meta-path finder whose ModuleNotFoundError says why and what enables it, so a need we did not
foresee fails loudly instead of silently paying for OpenSSL; `COLLECTOR_LEAN_IMPORTS=false` turns the
policy off.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from collector.settings.base import LEAN_IMPORTS

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from collector.settings import Settings
    from collector.sources import SourceSpec

__all__ = ["ENV", "HASHES", "TLS", "Need", "Refuse", "blocked", "install", "needs"]

#: The escape hatch: `false` (or 0, no, off) lets the process import OpenSSL whatever the settings say.
ENV = LEAN_IMPORTS

#: What a setting may need of OpenSSL (the keys of `SourceSettings.openssl_needs()`).
TLS = "tls"
HASHES = "hashes"

#: The modules each need allows: a TLS context needs libcrypto too, so TLS allows the hashes.
_MODULES = {TLS: ("ssl", "_ssl", "_hashlib"), HASHES: ("_hashlib",)}


@dataclass(frozen=True)
class Need:
    """Something of OpenSSL this process may use: `what` (TLS or HASHES), because of `setting` (the
    COLLECTOR_* variable that asks for it, or a library's name)."""

    what: str
    setting: str


def needs(settings: Settings, registry: Mapping[str, SourceSpec] | None = None) -> list[Need]:
    """What of OpenSSL `settings` may need: the core's settings, then each enabled source's declaration.

    Reads settings only (no I/O, no import of a source's module or library).
    """
    from collector.sources import SOURCES

    out = []
    if settings.web_config_file is not None:
        # Its tls_server_config may be there now or come with a reload (SIGHUP or the file poll).
        out.append(Need(TLS, "COLLECTOR_WEB_CONFIG_FILE"))
    # Installed: `collector run` uses it, and it imports ssl.
    if importlib.util.find_spec("uvloop") is not None:
        out.append(Need(TLS, "uvloop"))
    for name in SOURCES if registry is None else registry:
        cfg = settings.source_settings(name)
        if cfg.is_enabled():
            for what, field in cfg.openssl_needs().items():
                out.append(Need(what, f"COLLECTOR_{name}__{field}".upper()))
    return out


def _disabled(environ: Mapping[str, str]) -> bool:
    return environ.get(ENV, "").strip().lower() in ("false", "0", "no", "off")


def _builtin_hashes() -> bool:
    """Whether hashlib has CPython's own sha256 without OpenSSL (some distributions build without it)."""
    return any(importlib.util.find_spec(m) is not None for m in ("_sha2", "_sha256"))


def blocked(found: Sequence[Need], loaded: Mapping[str, object] | None = None) -> dict[str, str]:
    """The modules to refuse given the needs `found`, each with the message its import raises.

    Modules already imported are not listed: their libraries are mapped, refusing them saves nothing.
    """
    allowed = {m for need in found for m in _MODULES[need.what]}
    if not _builtin_hashes():
        allowed.add("_hashlib")  # without it hashlib would have no sha256 at all
    loaded = sys.modules if loaded is None else loaded
    if any(m in loaded for m in _MODULES[TLS] if m != "_hashlib"):
        return {}  # ssl is in: libssl and libcrypto are mapped whatever else is refused
    hint = (
        "no setting of this collector needs OpenSSL{what}, so it is kept out of memory "
        "(collector/importpolicy.py). A setting that does allows it (COLLECTOR_WEB_CONFIG_FILE, a "
        "source polling an https API, webhook secrets, the websocket source); "
        f"for anything else set {ENV}=false"
    )
    out = {}
    for name in _MODULES[TLS]:
        if name not in allowed and name not in loaded:
            what = "'s hashes" if name == "_hashlib" else " for TLS"
            out[name] = f"{name} is not importable in this process: " + hint.format(what=what)
    return out


class Refuse:
    """A meta-path finder that raises ModuleNotFoundError (with its message) for the modules it refuses.

    Code that tolerates a missing module (`try: import ssl except ImportError`) carries on without it;
    code that does not fails with the message, which names the settings that would allow it.
    """

    def __init__(self, refused: Mapping[str, str]) -> None:
        self.refused = dict(refused)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        message = self.refused.get(fullname)
        if message is not None:
            raise ModuleNotFoundError(message, name=fullname)
        return None  # not ours: the next finder looks

    def __repr__(self) -> str:
        return f"Refuse({', '.join(self.refused)})"


def _no_system_mime_types() -> None:
    """aiohttp.web builds a `mimetypes.MimeTypes()` at import (for FileResponse, which the collector
    never serves), and that reads the system's /etc/mime.types: ~0.3 MB of RSS. Python's built-in
    table still answers the common types."""
    import mimetypes

    if not mimetypes.inited:
        mimetypes.knownfiles = []


def install(
    settings: Settings,
    registry: Mapping[str, SourceSpec] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Refuse | None:
    """Refuse, for the rest of this process, the OpenSSL modules no setting needs; returns the finder
    (None: nothing refused, because something needs TLS, the modules are loaded already, or `ENV` is off).
    Also skips the system's MIME table (`_no_system_mime_types`). Call it before asyncio or aiohttp is
    imported, or it saves nothing.
    """
    if _disabled(environ):
        return None
    _no_system_mime_types()
    refused = blocked(needs(settings, registry))
    if not refused:
        return None
    finder = Refuse(refused)
    sys.meta_path.insert(0, finder)
    return finder
