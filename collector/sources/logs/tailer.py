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
import glob
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from collector.logpipe import BatchResult, LineConsumer
from collector.logsetup import LogFirst
from collector.metrics import MetricState
from collector.rules.decode import plain_lines
from collector.sources.logs.identity import Fingerprint, rotated_name
from collector.sources.logs.lines import Split, line_offset, split_lines
from collector.sources.logs.scan import Decompressed, FileObs, Key, Scan

__all__ = ["CHECKPOINT_FAMILIES", "CHUNK", "Stream", "Tailer"]

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
    fd: int | None = None
    size: int = 0  # the largest size seen (lower bound of what a lost file held)
    gone_since: float | None = None  # when no glob match led to it any more (rotated away, deleted)
    tied_to: Stream | None = None  # a copy of that stream's content: read only when it is truncated
    codec: str | None = None  # a compressed copy read through decompression (`zf`)
    zf: Decompressed | None = None
    eof: bool = False  # a compressed copy read to its end (it never grows): closed at once
    why: str = "missing"  # pending only: missing, unreadable, copying, truncated
    # Empty when first seen: nothing to compare yet. It may be a copy still being written (a slow
    # copier), so it is read only once a scan has compared its first bytes with the other streams.
    undecided: bool = False

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)

    @property
    def is_open(self) -> bool:
        return self.fd is not None or self.zf is not None

    def as_json(self) -> dict[str, Any]:
        row = {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "head": base64.b64encode(self.fp.head).decode(),
            "offset": self.offset,
            "skipping": self.skipping,
            "size": self.size,
        }
        if self.codec is not None:
            row["codec"] = self.codec
        return row

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stream:
        s = cls(
            str(d["path"]),
            int(d["dev"]),
            int(d["ino"]),
            Fingerprint(base64.b64decode(d["head"])),
            int(d["offset"]),
            bool(d.get("skipping", False)),
        )
        s.size = max(int(d.get("size", 0)), s.offset)
        s.why = str(d.get("why", "missing"))
        return s


#: The tailer's families checkpointed with the offsets (they continue across restarts).
CHECKPOINT_FAMILIES = (
    "collector_log_lines_total",
    "collector_log_read_lines_total",
    "collector_log_read_bytes_total",
    "collector_log_rotations_total",
    "collector_log_truncations_total",
    "collector_log_lost_bytes_total",
    "collector_log_losses_total",
)
#: Closed streams remembered (identity + final offset), so a rotated file met again (renamed, or
#: compressed by a later rotation) is not read again. A few rotations' worth; kept in the checkpoint.
MAX_FINISHED = 16
#: Bytes of a closed stream's fingerprint kept: its first line identifies it (timestamps).
FINISHED_FP_BYTES = 256
#: Offset of a file known in full without being read (present at the first start, before `start_at`).
ALL = 1 << 62
#: Bounded reasons of `collector_log_lost_bytes_total` / `collector_log_losses_total`.
LOSS_REASONS = ("deleted", "truncated", "unfinished_line")
#: Seconds a possible copy shorter than a pending stream's fingerprint is waited for (a slow copier).
COPY_WAIT = 30.0
#: Bounded reasons of `collector_log_pending_files`.
PENDING_REASONS = ("missing", "unreadable", "copying", "truncated")


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
        # Content we owe reading from `offset` but found in no file yet: checkpointed files missing or
        # unreadable at start-up, and the old content of a truncated file until its copy is found.
        self.pending: list[Stream] = []
        self.finished: list[Stream] = []  # closed streams, newest last (bounded by MAX_FINISHED)
        self.path_owner: dict[str, Key] = {}  # path -> inode it led to at the last pass (rotation check)
        self.bad_paths: dict[str, str] = {}  # path -> reason, so a bad file is counted and logged once
        self.log_first = LogFirst(log)
        # Set by restore(): the first scan also looks for rotated copies written while we were down.
        self.saved_at: float | None = None
        self.first_look = True
        self.changes = 0  # bumped by every step that changes offsets or metrics (checkpoint dirtiness)
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
        self.lost_bytes = m.counter(
            "collector_log_lost_bytes_total",
            "Unread log bytes that exist in no file any more (at least this many), by reason.",
            ["reason"],
        )
        self.losses = m.counter(
            "collector_log_losses_total", "Times unread log bytes were lost, by reason.", ["reason"]
        )
        for reason in LOSS_REASONS:
            self.lost_bytes.inc((reason,), 0)
            self.losses.inc((reason,), 0)
        self.pending_files = m.gauge(
            "collector_log_pending_files",
            "Checkpointed files whose unread bytes are owed but not readable yet, by reason.",
            ["reason"],
        )

    def checkpoint_families(self) -> list[str]:
        """Families that count lines: checkpointed with the offsets so they continue across restarts."""
        return list(CHECKPOINT_FAMILIES)

    # -- state ------------------------------------------------------------------------------------
    def restore(
        self,
        rows: list[dict[str, Any]],
        pending: list[dict[str, Any]] | None = None,
        finished: list[dict[str, Any]] | None = None,
        saved_at: float | None = None,
    ) -> None:
        """Streams from a checkpoint: all pending until a scan finds their content (any name, same dir)."""
        for row in [*rows, *(pending or [])]:
            self.pending.append(Stream.from_json(row))
        self.finished = [Stream.from_json(row) for row in finished or []][-MAX_FINISHED:]
        self.saved_at = saved_at
        self.first_look = True

    def snapshot(self) -> list[dict[str, Any]]:
        # Tied copies are not saved: after a restart they are found again and tied again.
        return [s.as_json() for s in self.streams.values() if s.tied_to is None]

    def snapshot_pending(self) -> list[dict[str, Any]]:
        return [{**s.as_json(), "why": s.why} for s in self.pending]

    def snapshot_finished(self) -> list[dict[str, Any]]:
        return [s.as_json() for s in self.finished]

    def look_dirs(self, patterns: list[str]) -> frozenset[str]:
        """Directories whose every file the next scan observes: where pending content may be."""
        dirs = {os.path.dirname(s.path) for s in self.pending}
        if self.first_look:
            dirs |= {os.path.dirname(s.path) for s in self.finished}
            dirs |= {os.path.dirname(p) for p in patterns if not glob.has_magic(os.path.dirname(p))}
        return frozenset(d for d in dirs if d)

    def open_fds(self) -> dict[Key, int]:
        return {k: s.fd for k, s in self.streams.items() if s.fd is not None}

    def close(self) -> None:
        for s in self.streams.values():
            _close(s)

    # -- decisions --------------------------------------------------------------------------------
    def apply(self, scan: Scan, now: float, start_end: Callable[[FileObs], bool]) -> None:
        """Decide what each observed file is: the same stream, a rotation, a truncation, a copy, or new.

        Descriptors of observed files the tailer does not take are closed.

        Args:
            scan: what the worker thread saw.
            now: monotonic seconds (for the drain grace of rotated files).
            start_end: whether a new file starts at its end (`start_at=end` at first sight) or at 0.
        """
        before = (len(self.streams), len(self.pending), len(self.finished))
        try:
            self._apply(scan, now, start_end)
        finally:
            scan.close_unused()
            if before != (len(self.streams), len(self.pending), len(self.finished)):
                self.changes += 1

    def _apply(self, scan: Scan, now: float, start_end: Callable[[FileObs], bool]) -> None:
        truncated: list[tuple[Stream, int, bool, Fingerprint, int]] = []
        for key, fd_obs in scan.fds.items():
            s = self.streams.get(key)
            if s is None:
                continue
            if s.undecided:
                if not fd_obs.prefix:
                    continue
                s.undecided, s.fp = False, Fingerprint.of(fd_obs.prefix)
                source = next(
                    (
                        t
                        for t in self.streams.values()
                        if t is not s and t.tied_to is None and t.fp.ties(fd_obs.prefix)
                    ),
                    None,
                )
                source = source or next((p for p in self.pending if p.fp.ties(fd_obs.prefix)), None)
                if source is not None and source.key in self.streams:
                    s.tied_to = source
                elif source is not None:
                    self.streams.pop(key)  # a copy of a pending stream's content: matched below
                    _close(s)
                    continue
            if s.tied_to is not None and not s.tied_to.fp.ties(fd_obs.prefix):
                # It grew apart from the file it seemed to copy: a new file after all, never read yet.
                s.tied_to, s.offset, s.fp = None, 0, Fingerprint.of(fd_obs.prefix)
            # Shrunk below an offset it once reached (a copy resumed past its end never did), or new
            # first bytes: truncated.
            if fd_obs.size < s.offset <= s.size or not s.fp.matches(fd_obs.prefix):
                truncated.append((s, s.offset, s.skipping, s.fp, s.size))
            elif len(fd_obs.prefix) > s.fp.size:
                s.fp = Fingerprint.of(fd_obs.prefix)  # identity grows with the file, up to FP_BYTES
            s.size = fd_obs.size
        seen: set[Key] = set()
        new: list[FileObs] = []
        for path in [p for p in self.bad_paths if p not in scan.files]:
            del self.bad_paths[path]  # gone or listable again: a new failure there is reported anew
        for path, fo in scan.files.items():
            if fo.error is not None:
                self._bad(path, fo)
                continue
            self.bad_paths.pop(path, None)
            s = self.streams.get(fo.key)
            if s is None:
                if fo.fd is not None:
                    new.append(fo)
                continue
            seen.add(fo.key)
            if s.path != path:
                s.path = path
                self.changes += 1
            s.gone_since = None
        held = self._resolve_pending(scan, now, seen)
        if self.first_look:
            self._first_look(scan, now, start_end)
        known = list(self.streams.values())  # a copy ties only to a file followed before this scan
        for fo in new:
            if fo.fd is None or fo.key in self.streams or fo.key in held:
                continue  # taken by a pending stream above, or held as its possible copy
            if any(p.fp.ties(fo.prefix) for p in self.pending):
                continue  # may be a (slow) copy of a pending stream: wait until it can be compared
            self._add(fo, known, start_end)
            seen.add(fo.key)
        for s, old_offset, old_skipping, old_fp, old_size in truncated:
            self._truncated(s, old_offset, old_skipping, old_fp, old_size, scan.fds[s.key].prefix)
        self._rotations(scan, seen, now)
        self._count_pending()

    def _resolve_pending(self, scan: Scan, now: float, seen: set[Key]) -> set[Key]:
        """Attach pending streams to the file now holding their content; count the ones lost.

        Returns:
            Keys of files held back this scan: possible copies still too short to compare.
        """
        if not self.pending:
            return set()
        candidates = [fo for fo in (*scan.files.values(), *scan.others.values()) if fo.key[1]]
        held: set[Key] = set()
        still: list[Stream] = []
        replaced: set[int] = set()
        # The same inode with the same first bytes first (renamed, or the file itself), then copies.
        for p in self.pending:
            fo = next(
                (c for c in candidates if c.key == p.key and c.codec is None and c.key not in self.streams),
                None,
            )
            if fo is not None and fo.error is not None:
                p.why = "unreadable"  # chmod 000: kept with its offset until it can be opened
                still.append(p)
            elif fo is not None and fo.fd is not None and p.fp.matches(fo.prefix) and fo.size >= p.offset:
                self._attach(p, fo, scan, now, seen)
            else:
                if fo is not None:
                    replaced.add(id(p))  # its inode now holds other content: truncated, or reused
                still.append(p)
        self.pending = []
        for p in still:
            if p.why == "unreadable" and any(c.key == p.key and c.error for c in candidates):
                self.pending.append(p)
                continue
            copy = next(
                (
                    c
                    for c in candidates
                    if c.error is None
                    and c.key not in self.streams
                    and (c.fd is not None or c.codec is not None)
                    and p.fp.within(c.prefix)
                ),
                None,
            )
            if copy is not None:
                self.log.info(
                    "continuing a file's unread bytes in its copy",
                    extra={"path": p.path, "copy": copy.path, "offset": p.offset},
                )
                self._attach(p, copy, scan, now, seen)
                continue
            short = [
                c for c in candidates if c.error is None and c.key not in self.streams and p.fp.ties(c.prefix)
            ]
            state = scan.dirs.get(os.path.dirname(p.path))
            if p.why != "copying":
                p.gone_since = now  # (pending streams use it for: copying since)
            if short and now - (p.gone_since or now) < COPY_WAIT:
                p.why = "copying"  # a copy shorter than our fingerprint: still being written
                held.update(c.key for c in short)
                self.pending.append(p)
            elif state == "ok" or (state is None and p.why == "truncated"):
                self._lost(p, "truncated" if id(p) in replaced else None)
            else:
                if state is not None:
                    p.why = "missing" if state == "missing" else "unreadable"
                self.pending.append(p)
        return held

    def _attach(self, p: Stream, fo: FileObs, scan: Scan, now: float, seen: set[Key]) -> None:
        s = Stream(fo.path, fo.dev, fo.ino, Fingerprint.of(fo.prefix), p.offset, p.skipping)
        # The size as seen, even below the offset: a copy made before our last read is shorter than
        # our offset, and "shrunk below an offset it once reached" must not take it for a truncation.
        s.size = fo.size if fo.codec is None else p.offset
        if fo.codec is not None:
            try:
                s.zf, s.codec = Decompressed(fo.path, fo.codec), fo.codec
            except OSError:
                self.pending.append(p)
                return
        else:
            s.fd, fo.fd = fo.fd, None
        old = self.streams.pop(s.key, None)
        if old is not None:
            _close(old)
        self.streams[s.key] = s
        if fo.path in scan.files:
            seen.add(s.key)
        else:
            s.gone_since = now  # not a pattern match (app.log.1 for PATHS=app.log): drain, then close

    def _first_look(self, scan: Scan, now: float, start_end: Callable[[FileObs], bool]) -> None:
        """After a restart: rotated copies of a followed file written while we were down are read from 0.

        A file beside a followed one whose name is a rotation of it (`app.log.1`, `app.log-20261201.gz`),
        modified after the last checkpoint and unknown by identity, holds lines no checkpoint has seen:
        several rotations while the collector was down. At a first start (no checkpoint), those files
        are remembered as read in full instead, like `start_at=end`.
        """
        self.first_look = False
        lives = {os.path.basename(fo.path) for fo in scan.files.values()}
        lives |= {os.path.basename(s.path) for s in (*self.finished, *self.streams.values())}
        known = [*self.finished, *self.streams.values(), *self.pending]
        for fo in scan.others.values():
            if fo.error is not None or fo.key in self.streams or (fo.fd is None and fo.codec is None):
                continue
            name = os.path.basename(fo.path)
            if not fo.prefix or not any(rotated_name(name, live) for live in lives):
                continue
            if any(k.key == fo.key or k.fp.ties(fo.prefix) for k in known):
                continue  # content we know (a finished rotation, perhaps compressed since)
            if self.saved_at is None:
                self._finish(Stream(fo.path, fo.dev, fo.ino, Fingerprint.of(fo.prefix), ALL))
                continue
            if fo.mtime < self.saved_at:
                continue  # older than the checkpoint: from before the collector followed this file
            p = Stream(fo.path, fo.dev, fo.ino, Fingerprint.of(fo.prefix), 0)
            self.log.info("reading a file rotated while the collector was down", extra={"path": fo.path})
            self._attach(p, fo, scan, now, set())

    def _lost(self, p: Stream, reason: str | None = None) -> None:
        """Count and log content that exists in no file. A checkpointed file always counts (what was
        written after the checkpoint is unknown); a truncation seen while running only with unread bytes."""
        nbytes = max(0, p.size - p.offset)
        if reason is None:
            if p.why == "truncated" and nbytes == 0:
                return  # truncated while running exactly at our offset: nothing was unread
            reason = "truncated" if p.why == "truncated" else "deleted"
        self.lost_bytes.inc((reason,), nbytes)
        self.losses.inc((reason,))
        self.changes += 1
        self.log.warning(
            "unread log bytes exist in no file any more; lines in them are lost",
            extra={"path": p.path, "reason": reason, "from_byte": p.offset, "to_byte": p.size},
        )

    def _add(self, fo: FileObs, known: list[Stream], start_end: Callable[[FileObs], bool]) -> None:
        s = Stream(fo.path, fo.dev, fo.ino, Fingerprint.of(fo.prefix), 0, size=fo.size)
        s.fd, fo.fd = fo.fd, None
        s.undecided = not fo.prefix
        done = next((f for f in self.finished if f.key == fo.key and f.fp.matches(fo.prefix)), None)
        source = next((t for t in known if t.tied_to is None and t.fp.ties(fo.prefix)), None)
        if done is not None:
            s.offset, s.skipping = min(done.offset, fo.size), done.skipping  # a closed file met again
            self.finished.remove(done)
        elif source is not None:
            s.tied_to = source  # a copy (copytruncate, backup): read from it only if the source is truncated
        elif start_end(fo):
            s.offset, s.skipping = fo.end
        self.streams[s.key] = s

    def _truncated(
        self,
        s: Stream,
        old_offset: int,
        old_skipping: bool,
        old_fp: Fingerprint,
        old_size: int,
        prefix: bytes,
    ) -> None:
        tied = False
        for copy in self.streams.values():
            if copy.tied_to is s:
                # The copy holds what was written between our last read and the truncation. (If it is
                # shorter than our offset, reading past its end yields nothing: nothing is read twice.)
                copy.tied_to = None
                copy.offset, copy.skipping = old_offset, old_skipping
                tied = True
        if not tied:
            # The copy is not a pattern match (copytruncate with PATHS=app.log): the old content is
            # pending, and the next scan looks for it by fingerprint in the directory (compressed too).
            old = Stream(s.path, s.dev, s.ino, old_fp, old_offset, old_skipping, size=old_size)
            old.why = "truncated"
            self.pending.append(old)
        s.offset, s.skipping, s.fp = 0, False, Fingerprint.of(prefix)
        self.changes += 1
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

    def _count_pending(self) -> None:
        counts = dict.fromkeys(PENDING_REASONS, 0)
        for p in self.pending:
            counts[p.why] = counts.get(p.why, 0) + 1
        for reason, n in counts.items():
            self.pending_files.set((reason,), n)

    def pending_report(self) -> list[dict[str, Any]]:
        """For /health: each pending file, why, and the offset it resumes at."""
        return [{"path": p.path, "reason": p.why, "offset": p.offset} for p in self.pending]

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

    def _finish(self, s: Stream) -> None:
        s.fp = Fingerprint(s.fp.head[:FINISHED_FP_BYTES])
        self.finished = [*[f for f in self.finished if f.key != s.key][-(MAX_FINISHED - 1) :], s]

    def expire(self, now: float) -> None:
        """Close rotated-away or deleted files drained to their end once their grace period is over."""
        for key, s in list(self.streams.items()):
            # Called after a read pass, so what is complete has been read; a never-finished line is dropped.
            if s.eof or (s.gone_since is not None and now - s.gone_since >= self.grace):
                if s.size > s.offset and s.tied_to is None:
                    self.lost_bytes.inc(("unfinished_line",), s.size - s.offset)
                    self.losses.inc(("unfinished_line",))
                    self.log.warning(
                        "a closed file ends in a line that never got its newline; it is not counted",
                        extra={"path": s.path, "from_byte": s.offset, "to_byte": s.size},
                    )
                _close(s)
                del self.streams[key]
                self._untie_from(s)
                self._forget_path(s.path)
                if s.tied_to is None:
                    self._finish(s)
                self.changes += 1

    def update_gauges(self) -> None:
        behind: dict[str, int] = {}
        for s in self.streams.values():
            if s.fd is not None and s.tied_to is None:
                behind[s.path] = behind.get(s.path, 0) + max(0, s.size - s.offset)
        for labels in [k for k in self.behind.series if k[0] not in behind]:
            self.behind.remove(labels)
        for path, n in behind.items():
            self.behind.set((path,), n)
        self.watched.set((), sum(1 for s in self.streams.values() if s.is_open))

    # -- reading ----------------------------------------------------------------------------------
    async def read(self, s: Stream, stop: asyncio.Event, between: Callable[[], Awaitable[None]]) -> None:
        """Read a stream to its current end, a chunk at a time; `between` runs after each batch."""
        fd, zf = s.fd, s.zf
        size = CHUNK
        while (
            (fd is not None or zf is not None) and s.tied_to is None and not s.undecided and not stop.is_set()
        ):
            offset = s.offset
            if zf is not None:
                try:
                    data = await asyncio.to_thread(zf.pread, size, offset)
                except (OSError, EOFError, ValueError) as exc:
                    # A damaged or unfinished compressed copy: what it held up to here was read.
                    self.log_first(
                        "decompress_failed", "cannot read a compressed copy", path=s.path, error=str(exc)
                    )
                    s.eof = True
                    return
                s.size = max(s.size, offset + len(data))
                if len(data) < size:
                    s.eof = True  # compressed copies do not grow: closed after this pass
            else:
                assert fd is not None
                data = await asyncio.to_thread(os.pread, fd, size, offset)
            if s.offset != offset or s.fd != fd or s.zf is not zf:
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
        self.changes += 1
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
    if s.zf is not None:
        with contextlib.suppress(OSError):
            s.zf.close()
        s.zf = None
