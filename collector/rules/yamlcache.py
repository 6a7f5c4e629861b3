"""`collector replay`'s cache of parsed rules files: YAML text -> the data PyYAML made of it.

Importing PyYAML costs a replay ~15 ms of its start (parsing a rules file with libyaml, ~1 ms), about
a third of an empty file's replay; operators re-run replay with the same rules while they write them,
and CI runs `replay --check` on an unchanged file. So replay keeps the parsed data, in `marshal` format
(what Python's own bytecode cache uses: no import, loads in microseconds), under the user's cache
directory (`$XDG_CACHE_HOME/collector` or `~/.cache/collector`), one small file per rules text.

Only the YAML parse is cached: the data goes through the same validation and compilation as a fresh
parse, so a cached run behaves exactly as an uncached one. An entry is used only when it holds the very
same text (compared whole, not by a hash) and was written by the same collector version, Python and
installed PyYAML; anything else, including a missing, unreadable, truncated or foreign file, is a miss,
and a miss is parsed as without the cache. Entries are written to a temporary file then renamed (a
concurrent reader sees the old entry or the new one, two writers leave one whole entry), data PyYAML
makes that marshal cannot hold (timestamps) are not cached, and the directory keeps `MAX_ENTRIES`
files at most. The daemon does not use it: it parses its rules file once per change.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys

from collector import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["MAX_ENTRIES", "cache_dir", "cached_loader"]

#: Layout of an entry; a change makes older entries misses.
FORMAT = 1
#: Entries kept; past it, the oldest are removed when a new one is written.
MAX_ENTRIES = 32
_PREFIX = "rules-yaml-"


def cache_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """`$XDG_CACHE_HOME/collector`, or `~/.cache/collector`; None without a home directory."""
    base = env.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        home = env.get("HOME") or ""
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "collector")


def _stamp() -> tuple[Any, ...] | None:
    """What the parsed data depends on besides the text: this collector, Python, the PyYAML installed
    (its file, size and mtime: a reinstall changes them). None when PyYAML is not installed."""
    from importlib.util import find_spec

    spec = find_spec("yaml")
    if spec is None or spec.origin is None:
        return None
    try:
        st = os.stat(spec.origin)
    except OSError:
        return None
    return (FORMAT, __version__, sys.version, spec.origin, st.st_size, st.st_mtime_ns)


def cached_loader(directory: str | None, load: Callable[[str], Any]) -> Callable[[str], Any]:
    """`load` (YAML text -> data) with its results kept in `directory` (None: not kept)."""
    if directory is None:
        return load

    def cached(text: str) -> Any:
        stamp = _stamp()
        if stamp is None:
            return load(text)
        import zlib  # a file name per text; the entry holds the text itself, compared whole

        raw = text.encode("utf-8", "surrogatepass")
        path = os.path.join(directory, f"{_PREFIX}{zlib.crc32(raw):08x}-{len(raw)}")
        try:
            with open(path, "rb") as fh:
                entry = marshal.loads(fh.read())
            if entry[0] == stamp and entry[1] == text:
                return entry[2]
        except Exception:  # missing, unreadable, or not an entry (marshal raises several types): a miss
            pass
        data = load(text)  # raises on bad YAML: nothing is cached
        _store(directory, path, (stamp, text, data))
        return data

    return cached


def _store(directory: str, path: str, entry: tuple[Any, ...]) -> None:
    """Write `entry` to `path` atomically and trim the directory; any failure leaves it uncached."""
    try:
        blob = marshal.dumps(entry)
    except ValueError:
        return  # data marshal cannot hold (a YAML timestamp): parsed at every run, as before
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
        entries = [e for e in os.scandir(directory) if e.name.startswith(_PREFIX)]
        if len(entries) > MAX_ENTRIES:
            entries.sort(key=lambda e: e.stat().st_mtime_ns)
            for old in entries[: len(entries) - MAX_ENTRIES]:
                os.unlink(old.path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
