"""Blocking file-system work of the tailer, run in a worker thread: glob, stat, open, read prefixes.

Returns plain observations; every decision (and every metric update) happens on the event loop.
"""

from __future__ import annotations

import bz2
import errno
import glob
import gzip
import io
import lzma
import os
import stat
from dataclasses import dataclass, field

from collector.sources.logs.identity import FP_BYTES, end_offset

__all__ = [
    "Decompressed",
    "FdObs",
    "FileObs",
    "Scan",
    "fixed_base",
    "open_decompressed",
    "scan",
    "watch_roots",
]

Key = tuple[int, int]

# Magic numbers of gzip, zstd, xz and bzip2: rotated logs compressed by logrotate are not text.
_COMPRESSED = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")
# The ones the standard library can read back (zstd needs Python 3.14): magic -> codec name.
_CODECS = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"BZh": "bz2"}

_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")

# Last bytes read to see whether a file ends in an unfinished line (for `start_at=end`).
_TAIL_BYTES = 1


@dataclass(slots=True)
class FileObs:
    """One glob match."""

    path: str
    pattern: str
    dev: int = 0
    ino: int = 0
    size: int = 0
    prefix: bytes = b""
    fd: int | None = None  # opened here because its inode is not followed yet
    end: tuple[int, bool] = (0, False)  # start for `start_at=end` (only when asked for)
    error: str | None = None  # bounded reason: permission_denied, not_regular, open_failed
    detail: str = ""
    mtime: float = 0.0
    codec: str | None = None  # a compressed copy (found beside a stream): prefix is decompressed

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)


@dataclass(slots=True)
class FdObs:
    """A followed file seen through its open descriptor (still valid after rename or delete)."""

    size: int
    prefix: bytes


@dataclass(slots=True)
class Scan:
    files: dict[str, FileObs] = field(default_factory=dict)
    fds: dict[Key, FdObs] = field(default_factory=dict)
    roots: tuple[tuple[str, bool], ...] = ()
    # Every other file of the directories asked for (`look_in`), whatever its name: where a stream's
    # unread bytes may live after a rotation the patterns do not match (app.log.1, app.log-2026.gz).
    others: dict[str, FileObs] = field(default_factory=dict)
    # look_in directory -> "ok", "missing" or "unlistable" (a pending stream is lost only when "ok")
    dirs: dict[str, str] = field(default_factory=dict)

    def close_unused(self) -> None:
        """Close descriptors opened for files the tailer did not take (it sets `fd=None` on those it takes)."""
        for fo in (*self.files.values(), *self.others.values()):
            if fo.fd is not None:
                os.close(fo.fd)
                fo.fd = None


def scan(
    patterns: list[str], open_fds: dict[Key, int], want_end: bool, look_in: frozenset[str] = frozenset()
) -> Scan:
    """Glob every pattern, stat every match, open the ones not followed yet; look at open descriptors.

    Args:
        patterns: glob patterns (`**` allowed).
        open_fds: followed inode -> descriptor (those are not opened again).
        want_end: also find where `start_at=end` would begin in newly opened files.
        look_in: directories whose every regular file is observed too (`Scan.others`), compressed
            copies included (their first bytes decompressed).
    """
    out = Scan(roots=watch_roots(patterns))
    # Open files first: a copytruncate copy is made before the truncation, so when a truncation is
    # seen here, the glob below already sees the copy that holds the lines written just before it.
    for key, fd in open_fds.items():
        try:
            size = os.fstat(fd).st_size
            out.fds[key] = FdObs(size, os.pread(fd, FP_BYTES, 0))
        except OSError:
            continue  # a descriptor cannot really go bad; if it does, the file looks unchanged
    for pattern in patterns:
        # glob() silently finds nothing in a directory it may not list: report the directory instead.
        denied = _unlistable_base(pattern)
        if denied is not None:
            out.files.setdefault(denied.path, denied)
        for path in sorted(glob.glob(pattern, recursive=True)):
            if path not in out.files:
                obs = _observe(path, pattern, open_fds, want_end)
                if obs is not None:
                    out.files[path] = obs
    for directory in sorted(look_in):
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            out.dirs[directory] = "missing"
            continue
        except OSError:
            out.dirs[directory] = "unlistable"
            continue
        out.dirs[directory] = "ok"
        for name in names:
            path = os.path.join(directory, name)
            if path in out.files:
                continue
            obs = _observe(path, "", open_fds, False, other=True)
            if obs is not None:
                out.others[path] = obs
    return out


def open_decompressed(path: str, codec: str) -> io.BufferedIOBase:
    """A compressed rotated copy opened for reading its decompressed bytes (GzipFile, BZ2File and
    LZMAFile are all buffered binary readers)."""
    if codec == "gzip":
        return gzip.open(path, "rb")
    if codec == "bz2":
        return bz2.open(path, "rb")
    return lzma.open(path, "rb")


class Decompressed:
    """`os.pread` over a compressed copy, read forward once (a partial last line is re-served from memory).

    A decompressing file object can only seek forward cheaply (backwards decompresses again from 0), so
    the last chunk is kept: re-reading the unconsumed end of it, as the tailer does at a partial line,
    costs nothing.
    """

    def __init__(self, path: str, codec: str) -> None:
        self.f = open_decompressed(path, codec)
        self.base = 0
        self.last = b""

    def pread(self, size: int, offset: int) -> bytes:
        head = b""
        if self.base <= offset <= self.base + len(self.last):
            head = self.last[offset - self.base : offset - self.base + size]
            if len(head) == size:
                return head
            offset += len(head)
        if self.f.tell() != offset:
            self.f.seek(offset)
        data = head + self.f.read(size - len(head))
        self.base, self.last = offset - len(head), data
        return data

    def close(self) -> None:
        self.f.close()


def _decompressed_prefix(path: str, codec: str) -> bytes:
    try:
        with open_decompressed(path, codec) as f:
            return f.read(FP_BYTES)
    except (OSError, EOFError, lzma.LZMAError):
        return b""  # still being written by the compressor, or damaged: looked at again next scan


def _observe(
    path: str, pattern: str, open_fds: dict[Key, int], want_end: bool, other: bool = False
) -> FileObs | None:
    if path.endswith(_COMPRESSED_SUFFIXES) and not other:
        return None  # logrotate writes `app.log.2.gz` under its final name: skip it before it has bytes
    obs = FileObs(path, pattern)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None  # gone between glob and stat (a rotation in progress): the next pass sees it
    except OSError as exc:
        obs.error, obs.detail = _reason(exc), exc.strerror or str(exc)
        return obs
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            return None  # a directory matched by a `*` pattern is just a path step, not a log file
        obs.error, obs.detail = "not_regular", "not a regular file (FIFO, socket or device)"
        return obs
    obs.dev, obs.ino, obs.size, obs.mtime = st.st_dev, st.st_ino, st.st_size, st.st_mtime
    if obs.key in open_fds:
        return obs
    try:
        # O_NONBLOCK: a FIFO swapped in after the stat must not hang the worker thread.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        obs.error, obs.detail = _reason(exc), exc.strerror or str(exc)
        return obs
    try:
        st = os.fstat(fd)  # identity of what we opened, not of what the path pointed at a moment ago
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            obs.error, obs.detail = "not_regular", "not a regular file"
            return obs
        obs.dev, obs.ino, obs.size = st.st_dev, st.st_ino, st.st_size
        obs.prefix = os.pread(fd, FP_BYTES, 0)
        if obs.prefix.startswith(_COMPRESSED):
            os.close(fd)
            codec = next((c for magic, c in _CODECS.items() if obs.prefix.startswith(magic)), None)
            if not other or codec is None:
                return None  # a compressed rotation (app.log.2.gz) matched by a wide pattern: not a log
            # Beside a stream, a compressed copy may hold its unread tail (logrotate `compress`).
            obs.codec, obs.prefix = codec, _decompressed_prefix(path, codec)
            return obs
        if want_end and obs.size:
            start = max(0, obs.size - _TAIL_BYTES)
            obs.end = end_offset(os.pread(fd, obs.size - start, start), obs.size)
    except OSError as exc:
        os.close(fd)
        obs.error, obs.detail = "read_failed", exc.strerror or str(exc)
        return obs
    obs.fd = fd
    return obs


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission_denied"
    return "open_failed"


def fixed_base(pattern: str) -> str:
    """The pattern's leading directory without glob magic (`/var/log/app` for `/var/log/app/*.log`)."""
    fixed: list[str] = []
    for part in pattern.split(os.sep)[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or (os.sep if pattern.startswith(os.sep) else ".")


def _unlistable_base(pattern: str) -> FileObs | None:
    base = fixed_base(pattern)
    try:
        with os.scandir(base):
            return None
    except (FileNotFoundError, NotADirectoryError):
        return None  # not there yet: it is watched for and picked up when it appears
    except OSError as exc:
        return FileObs(base, pattern, error=_reason(exc), detail=f"cannot list the directory: {exc.strerror}")


def watch_roots(patterns: list[str]) -> tuple[tuple[str, bool], ...]:
    """Directories to watch for change notifications: (dir, recursive) per pattern.

    A pattern's fixed leading directory is watched (recursively for `**`); while it does not exist,
    its nearest existing ancestor is watched without recursion, so its creation wakes the tailer.
    """
    roots: set[tuple[str, bool]] = set()
    for pattern in patterns:
        base = fixed_base(pattern)
        recursive = "**" in pattern
        while not os.path.isdir(base):
            parent = os.path.dirname(base.rstrip(os.sep)) or "."
            if parent == base:
                break
            base, recursive = parent, False
        roots.add((base, recursive))
    return tuple(sorted(roots))
