"""File identity: device + inode plus a fingerprint of the first bytes, so inode reuse and copies are seen.

Pure functions: the tailer reads the bytes, these decide.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FP_BYTES", "Fingerprint", "end_offset"]

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
