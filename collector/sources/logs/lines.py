"""Pure line splitting for the tailer: complete lines out of a chunk; over-long lines skipped, not stalled."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Split", "line_offset", "split_lines"]


@dataclass(slots=True)
class Split:
    """What one chunk yields.

    `consumed` bytes may be dropped from the file position; anything after them (a partial last line)
    is read again next time, so the file offset always sits at a line start (or inside a skipped line).
    """

    lines: list[bytes]
    consumed: int
    too_long: int = 0
    skipping: bool = False  # the offset now sits inside an over-long line being skipped
    # (index in `lines` before which, byte count) of bytes skipped, so bad lines' offsets can be logged
    dropped: list[tuple[int, int]] = field(default_factory=list)


def split_lines(data: bytes, skipping: bool, max_line: int) -> Split:
    """Split a chunk read at a line start (or inside a skipped line) into complete lines.

    Args:
        data: bytes read from the file at the current offset.
        skipping: the offset is inside a line already counted as too long; drop up to its newline.
        max_line: longest line (without its newline) that is processed; longer ones are counted once.

    Returns:
        The complete lines (without newlines), how many bytes they and skipped bytes cover, and the
        skip state to carry to the next chunk. `consumed == 0` means: no complete line yet.
    """
    n = len(data)
    pos = 0
    dropped: list[tuple[int, int]] = []
    if skipping:
        nl = data.find(b"\n")
        if nl < 0:
            return Split([], n, 0, True)  # still inside the long line: drop the whole chunk
        pos = nl + 1
        dropped.append((0, pos))
    last = data.rfind(b"\n", pos)
    if last < 0:
        if n - pos > max_line:
            return Split([], n, 1, True, dropped)
        return Split([], pos, 0, False, dropped)
    lines = data[pos:last].split(b"\n")
    too_long = 0
    # Only a chunk longer than the limit can hold an over-long line; `max(map(len))` runs in C.
    if last - pos > max_line and max(map(len, lines)) > max_line:
        kept: list[bytes] = []
        for line in lines:
            if len(line) > max_line:
                too_long += 1
                dropped.append((len(kept), len(line) + 1))
            else:
                kept.append(line)
        lines = kept
    consumed = last + 1
    if n - consumed > max_line:
        # The unfinished last line is already too long: count it now and skip it as it grows.
        return Split(lines, n, too_long + 1, True, dropped)
    return Split(lines, consumed, too_long, False, dropped)


def line_offset(split: Split, base: int, index: int) -> int:
    """Byte offset in the file of `split.lines[index]` for a chunk read at `base` (for log messages)."""
    offset = base + sum(len(line) + 1 for line in split.lines[:index])
    return offset + sum(nbytes for before, nbytes in split.dropped if before <= index)
