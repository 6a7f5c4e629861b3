"""File identity: device + inode plus a fingerprint of the first bytes, so inode reuse and copies are seen.

Pure functions: the tailer reads the bytes, these decide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FP_BYTES", "Fingerprint", "end_offset", "rotated_name"]

#: Bytes of a file's start that identify its content (grows with the file up to this many).
FP_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A file's first bytes as last seen (up to `FP_BYTES`); empty means the file was empty."""

    head: bytes

    @classmethod
    def of(cls, prefix: bytes) -> Fingerprint:
        return cls(prefix[:FP_BYTES])

    @property
    def size(self) -> int:
        return len(self.head)

    def matches(self, prefix: bytes) -> bool:
        """True when a file whose first bytes are `prefix` still holds the content we saw."""
        return prefix.startswith(self.head)

    def within(self, prefix: bytes) -> bool:
        """True when `prefix` holds all of our first bytes (a copy at least as long as what we saw).

        Unlike `ties`, a shorter file (a copy still being written) does not qualify: a stream's
        offset moves to another file only on the whole fingerprint.
        """
        return bool(self.head) and prefix.startswith(self.head)

    def ties(self, prefix: bytes) -> bool:
        """True when another file holds the same content: a copy (copytruncate) or a moved file.

        The shorter of the two must be a prefix of the other: a copy may have been taken before our
        last look (shorter) or hold bytes we have not seen yet (longer).
        """
        if not self.head or not prefix:
            return False
        n = min(len(self.head), len(prefix))
        return self.head[:n] == prefix[:n]


def end_offset(tail: bytes, size: int) -> tuple[int, bool]:
    """Where `start_at=end` begins in a file of `size` bytes ending in `tail`.

    Returns:
        (offset, skipping): the end of the file; `skipping` when it ends in an unfinished line, so the
        rest of that line (already under way at start) is skipped instead of read as a fragment.
    """
    if size == 0:
        return 0, False
    return size, not tail.endswith(b"\n")


# What rotation tools append: `.1`, `-20261201`, `.2026-12-01`, `_1`, then maybe a compression suffix.
_ROTATED_SUFFIX = re.compile(r"[.\-_]\d[\w.\-]*")


def rotated_name(name: str, live: str) -> bool:
    """Whether file `name` looks like a rotated copy of the live file `live` (both base names).

    `app.log.1`, `app.log.2.gz`, `app.log-20261201` (logrotate numbered and `dateext`) and
    `app-20261201.log` (`dateext` with `extension .log`) are; `app-error.log` and `app.log.bak` are not.
    """
    if name == live:
        return False
    if name.startswith(live) and _ROTATED_SUFFIX.fullmatch(name[len(live) :]):
        return True
    stem, dot, ext = live.partition(".")
    if not dot or not name.startswith(stem):
        return False
    rest = name[len(stem) :]
    # dateext with `extension`: the date goes between the stem and the extension.
    m = re.fullmatch(r"[.\-_]\d[\d\-_]*\." + re.escape(ext) + r"(\.\w+)?", rest)
    return m is not None
