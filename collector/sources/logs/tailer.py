"""The tailer: which files are followed, from where, and how rotation, truncation and copies are handled.

Streams are keyed by (device, inode) and carry a fingerprint of their first bytes. `apply()` turns a
`Scan` (made in a worker thread) into decisions; `read()` pulls chunks off the loop and hands complete
lines to the consumer, advancing the offset in the same synchronous step (exactly-once, with the
checkpoint in `collector.sources.logs.source`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from collector.logpipe import BatchResult, LineConsumer
from collector.logsetup import LogFirst
from collector.metrics import MetricState
from collector.rules.decode import plain_lines
from collector.sources.logs.identity import Fingerprint
from collector.sources.logs.lines import Split, line_offset, split_lines
from collector.sources.logs.scan import FileObs, Key, Scan

__all__ = ["CHUNK", "Stream", "Tailer"]

#: Bytes per read; lines are split and decoded a chunk at a time. 1 MiB keeps the per-chunk cost
#: (a thread hop, a batch) small against its ~4,000+ lines, while the decoded objects of one chunk
#: stay a few MB: 4 MiB chunks of short lines left ~20 MB more heap behind at 100k series.
CHUNK = 512 * 1024


@dataclass(eq=False, slots=True)
class Stream:
    """One file content followed by inode; its path may change (rename rotation) or vanish (delete)."""

    path: str
    dev: int
    ino: int
    fp: Fingerprint
    offset: int  # bytes consumed: the next line starts here (or we are inside a skipped long line)
    skipping: bool = False
    fd: int | None = None  # None: restored from a checkpoint, not found on disk yet
    size: int = 0
    gone_since: float | None = None  # when no glob match led to it any more (rotated away, deleted)
    tied_to: Stream | None = None  # a copy of that stream's content: read only when it is truncated

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "head": base64.b64encode(self.fp.head).decode(),
            "offset": self.offset,
            "skipping": self.skipping,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stream:
        return cls(
            str(d["path"]),
            int(d["dev"]),
            int(d["ino"]),
            Fingerprint(base64.b64decode(d["head"])),
            int(d["offset"]),
            bool(d.get("skipping", False)),
        )


class Tailer:
    """Followed streams, their self-metrics, and the read -> split -> consume -> advance step.

    Args:
        consumer: turns complete lines into metric updates.
        metrics: the metric state (self-metrics families are registered here).
        log: the source's logger.
        max_line: `COLLECTOR_LOGS__MAX_LINE_BYTES`.
        grace: seconds a rotated-away or deleted file is still drained before it is closed.
        max_series: series limit of the per-file families.
        on_error: called with (reason, message) for each newly unreadable path.
    """

    def __init__(
        self,
        consumer: LineConsumer,
        metrics: MetricState,
        log: logging.Logger,
        max_line: int,
        grace: float,
        max_series: int = 10_000,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.log = log
        self.max_line = max_line
        self.grace = grace
        self.on_error = on_error  # ctx.error: /health shows the last unreadable file
        self.streams: dict[Key, Stream] = {}
        self.path_owner: dict[str, Key] = {}  # path -> inode it led to at the last pass (rotation check)
        self.bad_paths: dict[str, str] = {}  # path -> reason, so a bad file is counted and logged once
        self.log_first = LogFirst(log)
        m, ms = metrics, max_series
        self.lines = m.counter("collector_log_lines_total", "Log lines read, by result.", ["result"])
        for result in ("parsed", "unmatched", "invalid_json", "invalid_utf8", "too_long"):
            self.lines.inc((result,), 0)
        self.read_lines = m.counter(
            "collector_log_read_lines_total", "Complete log lines read, per file.", ["path"], max_series=ms
        )
        self.read_bytes = m.counter(
            "collector_log_read_bytes_total", "Log bytes consumed, per file.", ["path"], max_series=ms
        )
        self.behind = m.gauge(
            "collector_log_behind_bytes", "File size minus read offset, per file.", ["path"], max_series=ms
        )
        self.watched = m.gauge("collector_log_files_watched", "Log files currently open and followed.")
        self.rotations = m.counter(
            "collector_log_rotations_total",
            "Times a followed path was renamed away, deleted or replaced by a new file.",
            ["path"],
            max_series=ms,
        )
        self.truncations = m.counter(
            "collector_log_truncations_total",
            "Times a followed file shrank below the read offset or its first bytes changed (copytruncate).",
            ["path"],
            max_series=ms,
        )
        self.file_errors = m.counter(
            "collector_log_file_errors_total",
            "Matched paths that could not be followed, by reason.",
            ["reason"],
        )

    def checkpoint_families(self) -> list[str]:
        """Families that count lines: checkpointed with the offsets so they continue across restarts."""
        fams = (self.lines, self.read_lines, self.read_bytes, self.rotations, self.truncations)
        return [f.name for f in fams]

    # -- state ------------------------------------------------------------------------------------
    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Streams from a checkpoint; they resume once a scan finds their inode with the same content."""
        for row in rows:
            s = Stream.from_json(row)
            self.streams[s.key] = s

    def snapshot(self) -> list[dict[str, Any]]:
        # Tied copies are not saved: after a restart they are found again and tied again.
        return [s.as_json() for s in self.streams.values() if s.tied_to is None]

    def open_fds(self) -> dict[Key, int]:
        return {k: s.fd for k, s in self.streams.items() if s.fd is not None}

    def close(self) -> None:
        for s in self.streams.values():
            _close(s)

    # -- decisions --------------------------------------------------------------------------------
    def apply(self, scan: Scan, now: float, start_end: Callable[[FileObs], bool]) -> None:
        """Decide what each observed file is: the same stream, a rotation, a truncation, a copy, or new.

        Args:
            scan: what the worker thread saw.
            now: monotonic seconds (for the drain grace of rotated files).
            start_end: whether a new file starts at its end (`start_at=end` at first sight) or at 0.
        """
        truncated: list[tuple[Stream, int, bool]] = []
        for key, fo in scan.fds.items():
            s = self.streams.get(key)
            if s is None:
                continue
            if s.tied_to is not None and not s.tied_to.fp.ties(fo.prefix):
                # It grew apart from the file it seemed to copy: a new file after all, never read yet.
                s.tied_to, s.offset, s.fp = None, 0, Fingerprint.of(fo.prefix)
            # Shrunk below an offset it once reached (a copy resumed past its end never did), or new
            # first bytes: truncated.
            if fo.size < s.offset <= s.size or not s.fp.matches(fo.prefix):
                truncated.append((s, s.offset, s.skipping))
            elif len(fo.prefix) > s.fp.size:
                s.fp = Fingerprint.of(fo.prefix)  # identity grows with the file, up to FP_BYTES
            s.size = fo.size
        seen: set[Key] = set()
        new: list[FileObs] = []
        orphans: list[Stream] = []
        for path in [p for p in self.bad_paths if p not in scan.files]:
            del self.bad_paths[path]  # gone or listable again: a new failure there is reported anew
        for path, fo in scan.files.items():
            if fo.error is not None:
                self._bad(path, fo)
                continue
            self.bad_paths.pop(path, None)
            s = self.streams.get(fo.key)
            if s is not None and s.fd is None:
                if fo.fd is not None and s.fp.matches(fo.prefix) and fo.size >= s.offset:
                    s.fd, s.size = fo.fd, fo.size  # resumed exactly where the checkpoint says
                else:
                    # Same inode, other content: reused inode, or truncated while we were down.
                    orphans.append(self.streams.pop(fo.key))
                    s = None
            if s is None:
                if fo.fd is not None:
                    new.append(fo)
                continue
            seen.add(fo.key)
            s.path = path
            s.gone_since = None
        for key in [k for k, s in self.streams.items() if s.fd is None and k not in seen]:
            orphans.append(self.streams.pop(key))  # checkpointed file not found at any matched path
        known = list(self.streams.values())  # a copy ties only to a file followed before this scan
        for fo in new:
            self._add(fo, known, orphans, start_end)
            seen.add(fo.key)
        for s, old_offset, old_skipping in truncated:
            self._truncated(s, old_offset, old_skipping, scan.fds[s.key].prefix)
        for s in orphans:
            self.log.warning(
                "a file from the last checkpoint is gone; lines written to it after that are lost",
                extra={"path": s.path, "offset": s.offset},
            )
            self._untie_from(s)
            self._forget_path(s.path)
        self._rotations(scan, seen, now)

    def _add(
        self,
        fo: FileObs,
        known: list[Stream],
        orphans: list[Stream],
        start_end: Callable[[FileObs], bool],
    ) -> None:
        s = Stream(fo.path, fo.dev, fo.ino, Fingerprint.of(fo.prefix), 0, fd=fo.fd, size=fo.size)
        for orphan in orphans:
            if orphan.key != fo.key and orphan.fp.ties(fo.prefix):
                # The file we were reading, moved or copied here while we were down: carry on in it.
                orphans.remove(orphan)
                s.offset, s.skipping = orphan.offset, orphan.skipping
                self.log.info("continuing a checkpointed file under a new name", extra={"path": fo.path})
                self.streams[s.key] = s
                return
        source = next((t for t in known if t.tied_to is None and t.fp.ties(fo.prefix)), None)
        if source is not None:
            s.tied_to = source  # a copy (copytruncate, backup): read from it only if the source is truncated
        elif start_end(fo):
            s.offset, s.skipping = fo.end
        self.streams[s.key] = s

    def _truncated(self, s: Stream, old_offset: int, old_skipping: bool, prefix: bytes) -> None:
        for copy in self.streams.values():
            if copy.tied_to is s:
                # The copy holds what was written between our last read and the truncation. (If it is
                # shorter than our offset, reading past its end yields nothing: nothing is read twice.)
                copy.tied_to = None
                copy.offset, copy.skipping = old_offset, old_skipping
        s.offset, s.skipping, s.fp = 0, False, Fingerprint.of(prefix)
        self.truncations.inc((s.path,))
        self.log.info("log file truncated; reading it from the start", extra={"path": s.path})

    def _untie_from(self, gone: Stream) -> None:
        for copy in self.streams.values():
            if copy.tied_to is gone:
                copy.tied_to = None
                copy.offset, copy.skipping = gone.offset, gone.skipping

    def _rotations(self, scan: Scan, seen: set[Key], now: float) -> None:
        owners = {path: fo.key for path, fo in scan.files.items() if fo.error is None}
        for path, key in self.path_owner.items():
            if owners.get(path) != key and key in self.streams:
                self.rotations.inc((path,))
                self.log.info("log file rotated", extra={"path": path})
        self.path_owner = {p: k for p, k in owners.items() if k in self.streams}
        for s in self.streams.values():
            if s.key not in seen and s.gone_since is None:
                s.gone_since = now  # rotated away or deleted: drain it for `grace` seconds, then close

    def _bad(self, path: str, fo: FileObs) -> None:
        assert fo.error is not None
        if self.bad_paths.get(path) == fo.error:
            return
        self.bad_paths[path] = fo.error
        self.file_errors.inc((fo.error,))
        if self.on_error is not None:
            self.on_error(fo.error, f"{path}: {fo.detail}")
        self.log_first(fo.error, "cannot follow log file", path=path, reason=fo.error, error=fo.detail)

    def _forget_path(self, path: str) -> None:
        if any(s.path == path for s in self.streams.values()):
            return
        for fam in (self.read_lines, self.read_bytes, self.behind, self.rotations, self.truncations):
            fam.remove((path,))

    def expire(self, now: float) -> None:
        """Close rotated-away or deleted files drained to their end once their grace period is over."""
        for key, s in list(self.streams.items()):
            # Called after a read pass, so what is complete has been read; a never-finished line is dropped.
            if s.gone_since is not None and now - s.gone_since >= self.grace:
                _close(s)
                del self.streams[key]
                self._untie_from(s)
                self._forget_path(s.path)

    def update_gauges(self) -> None:
        behind: dict[str, int] = {}
        for s in self.streams.values():
            if s.fd is not None and s.tied_to is None:
                behind[s.path] = behind.get(s.path, 0) + max(0, s.size - s.offset)
        for labels in [k for k in self.behind.series if k[0] not in behind]:
            self.behind.remove(labels)
        for path, n in behind.items():
            self.behind.set((path,), n)
        self.watched.set((), sum(1 for s in self.streams.values() if s.fd is not None))

    # -- reading ----------------------------------------------------------------------------------
    async def read(self, s: Stream, stop: asyncio.Event, between: Callable[[], Awaitable[None]]) -> None:
        """Read a stream to its current end, a chunk at a time; `between` runs after each batch."""
        fd = s.fd
        size = CHUNK
        while fd is not None and s.tied_to is None and not stop.is_set():
            offset = s.offset
            data = await asyncio.to_thread(os.pread, fd, size, offset)
            if s.offset != offset or s.fd != fd:
                return  # the stream was reset meanwhile (cannot happen today: one task owns it)
            if not data:
                return
            fast = self._fast_step(s, offset, data)
            if fast:
                if len(data) < size:
                    return
                await between()
                continue
            split = split_lines(data, s.skipping, self.max_line)
            if split.consumed == 0:
                if len(data) == size and size <= self.max_line:
                    size = min(size * 2, self.max_line + 1)  # one line longer than a chunk: read more
                    continue
                return  # a partial last line waits for its newline
            self._step(s, offset, split)
            if len(data) < size:
                return
            size = CHUNK
            await between()

    def _fast_step(self, s: Stream, base: int, data: bytes) -> bool:
        """The usual chunk (valid complete lines, none too long) consumed unsplit; False: split it."""
        consume_buffer = getattr(self.consumer, "consume_buffer", None)
        if consume_buffer is None or s.skipping:
            return False
        last = data.rfind(b"\n")
        if last <= 0 or len(data) - last - 1 > self.max_line:
            return False
        count = plain_lines(data, last, self.max_line)
        result = consume_buffer(memoryview(data)[:last], count) if count else None
        if result is None:
            return False
        self._step(s, base, Split([], last + 1), result, count)
        return True

    def _step(
        self, s: Stream, base: int, split: Split, result: BatchResult | None = None, count: int = 0
    ) -> None:
        """Consume a batch and advance the offset in one synchronous step (no await in between).

        `_fast_step` passes the `result` of the `count` lines it consumed unsplit.
        """
        if result is None:
            result = self.consumer.consume(split.lines) if split.lines else BatchResult()
            count = len(split.lines)
        s.offset = base + split.consumed
        s.skipping = split.skipping
        s.size = max(s.size, s.offset)
        inc = self.lines.inc
        if result.parsed:
            inc(("parsed",), result.parsed)
        if result.unmatched:
            inc(("unmatched",), result.unmatched)
        if result.invalid_json:
            inc(("invalid_json",), result.invalid_json)
        if result.invalid_utf8:
            inc(("invalid_utf8",), result.invalid_utf8)
        if split.too_long:
            inc(("too_long",), split.too_long)
            self.log_first(
                "too_long",
                "log line longer than COLLECTOR_LOGS__MAX_LINE_BYTES skipped",
                path=s.path,
                near_offset=base,
                max_line_bytes=self.max_line,
            )
        self.read_lines.inc((s.path,), count + split.too_long)
        self.read_bytes.inc((s.path,), split.consumed)
        for index, reason in result.bad:
            self.log_first(
                reason,
                "bad log line skipped",
                path=s.path,
                offset=line_offset(split, base, index),
                reason=reason,
                line=split.lines[index][:200].decode("utf-8", "replace"),
            )


def _close(s: Stream) -> None:
    if s.fd is not None:
        with contextlib.suppress(OSError):
            os.close(s.fd)
        s.fd = None
