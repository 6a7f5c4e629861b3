"""The logs source: follow glob patterns, feed complete lines to the consumer, checkpoint exactly-once.

One task owns the tailer: scan (worker thread) -> decide (loop) -> read chunks (worker thread) ->
consume and advance (loop, one synchronous step). Every `checkpoint_interval` seconds, between two
steps, offsets + fingerprints + the line-counting metric series that changed are written in ONE store
transaction (nothing when nothing changed, see `checkpoint.py`); on start that state is restored and reading resumes from those offsets, so lines read
after the last checkpoint are read again into state that has not seen them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from collector.logpipe import LineConsumer
from collector.settings import LogsSettings
from collector.source import SourceBase, SourceContext, Table
from collector.sources.logs import notify
from collector.sources.logs.checkpoint import CHECKPOINT_VERSION, Checkpointer, decode_row
from collector.sources.logs.consumer import build_consumer
from collector.sources.logs.scan import FileObs, Key, Scan, fixed_base, scan
from collector.sources.logs.tailer import CHECKPOINT_FAMILIES, Tailer
from collector.store import WriteChain

if TYPE_CHECKING:
    from collector.selfmetrics import SelfRegistry

__all__ = ["CHECKPOINT_KEY", "CHECKPOINT_VERSION", "LogsSource"]

#: Store owner/key of the checkpoint document (offsets, fingerprints, family signatures); the metric
#: series are rows of the store's `series` table under the same owner (see `checkpoint.py`).
OWNER = "logs"
CHECKPOINT_KEY = "checkpoint"
#: Followed files the status page lists (the most behind first when there are more).
MAX_FILE_ROWS = 200


class LogsSource(SourceBase):
    """Tails `COLLECTOR_LOGS__PATHS` and counts each complete line exactly once."""

    name = "logs"
    #: `collector_source_errors_total{reason}` values, at 0 from start-up.
    error_reasons = (
        "permission_denied", "not_regular", "open_failed", "read_failed", "checkpoint_failed",
        "checkpoint_unreadable",
    )  # fmt: skip

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.settings: LogsSettings = ctx.settings
        self.consumer: LineConsumer | None = None
        self.consumer_error: Exception | None = None
        try:
            self.consumer = build_consumer(self.settings, ctx.metrics, ctx.log)
        except ValueError as exc:
            # Reported by run(), so the supervisor shows it in /health and retries (the file may be fixed).
            self.consumer_error = exc
        self.tailer: Tailer | None = None
        self.last_checkpoint: float | None = None  # monotonic time of the last successful checkpoint
        self.checkpointer = Checkpointer(ctx.metrics)  # what the store holds; replaced at each restore
        self.chain = WriteChain()  # checkpoint writes in flight build on each other (see _write_checkpoint)
        # The last checkpoint write queued (its document and future): scrapes wait for it before their
        # own take, and join it when their take holds the same state (see `scrape_ready`).
        self._queued: tuple[bytes, asyncio.Future[None]] | None = None
        self.checkpointed_changes = -1  # `tailer.changes` at the last checkpoint taken
        self.scanned_at = 0.0  # wall time the last scan began (checkpointed: see Tailer._first_look)
        self.saved_at = 0.0  # the `saved_at` of the last checkpoint taken
        self.wake = asyncio.Event()
        self.last_pass = 0.0  # monotonic start of the last read pass (notifications coalesce after it)
        self.busy_until = 0.0  # monotonic time until which files count as busy (lines kept coming)
        # Status page: when each stream last had nothing unread (monotonic), for its lag in seconds.
        self._caught_up: dict[Key, float] = {}
        self._last_scan: Scan | None = None
        self.unmatched: deque[tuple[float, str]] = deque(maxlen=5)  # (time, line) no rule matched
        _checkpoint_age(ctx.self_metrics.registry, self.checkpoint_age)

    def _new_tailer(self) -> Tailer:
        assert self.consumer is not None
        s = self.settings
        return Tailer(
            _Sampler(self.consumer, self.unmatched, self.ctx.clock),
            self.ctx.metrics,
            self.ctx.log,
            s.max_line_bytes,
            grace=max(5.0, 3 * s.poll_interval),
            max_series=s.max_series,
            on_error=self.ctx.error,
        )

    async def run(self) -> None:
        if self.consumer is None:
            try:
                self.consumer = build_consumer(self.settings, self.ctx.metrics, self.ctx.log)
            except ValueError:
                raise
        tailer = self.tailer = self._new_tailer()
        clean = False
        tasks: list[asyncio.Task[None]] = []
        watcher: _Watcher | None = None
        try:
            first_start, known_patterns = await self._restore(tailer)
            patterns = list(self.settings.paths)

            def start_end(fo: FileObs) -> bool:
                # `start_at` only for files present at the first start (or the first start of a pattern).
                return self.settings.start_at == "end" and (first_start or fo.pattern not in known_patterns)

            self.scanned_at = self.ctx.clock()
            found, missing = await asyncio.to_thread(
                _scan, patterns, {}, self.settings.start_at == "end", tailer.look_dirs(patterns)
            )
            tailer.apply(found, time.monotonic(), start_end)
            self._report(found, missing)
            tailer.update_gauges()
            self._report_pending(tailer)
            await self._checkpoint(tailer)  # the start positions are durable before anything is read
            self.ctx.started()
            tasks.append(asyncio.create_task(self._relay_stop(), name="logs-stop"))
            watcher = _Watcher(self, found.roots)
            run_consumer = getattr(self.consumer, "run", None)
            if run_consumer is not None:
                tasks.append(asyncio.create_task(run_consumer(self.ctx.stop), name="logs-consumer"))
            never = lambda _fo: False  # noqa: E731 - files found after the first scan start at 0
            while not self.ctx.stop.is_set():
                moved = await self._read_all(tailer)
                now = time.monotonic()
                if moved:  # busy: poll once per read window, without per-write notifications
                    self.busy_until = now + max(1.0, 4 * self.settings.read_window)
                    watcher.pause()
                elif now >= self.busy_until:  # quiet again: notifications wake us
                    watcher.resume()
                tailer.expire(time.monotonic())
                tailer.update_gauges()
                self._note_lag(tailer)
                if self._checkpoint_due():
                    await self._checkpoint(tailer)
                if not any(p.why == "truncated" for p in tailer.pending):
                    # (a truncated file's copy is looked for at once, before the next rotation moves it)
                    await self._wait()
                if self.ctx.stop.is_set():
                    break
                self.wake.clear()
                watcher.listen()  # changes from now on wake the next pass
                self.scanned_at = self.ctx.clock()
                found, missing = await asyncio.to_thread(
                    _scan, patterns, tailer.open_fds(), False, tailer.look_dirs(patterns)
                )
                tailer.apply(found, time.monotonic(), never)
                self._report(found, missing)
                self._report_pending(tailer)
                watcher.follow(found.roots)
            clean = True
        finally:
            if watcher is not None:
                await watcher.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if clean:
                await self._checkpoint(tailer)
            tailer.close()

    def _report_pending(self, tailer: Tailer) -> None:
        """/health lists files whose unread bytes are owed but cannot be read yet."""
        self.ctx.status.detail["pending_files"] = tailer.pending_report()

    async def _read_all(self, tailer: Tailer) -> bool:
        """Read every stream to its end; True when any bytes were consumed."""
        self.last_pass = time.monotonic()
        before = sum(s.offset for s in tailer.streams.values())

        async def between() -> None:
            if self._checkpoint_due():
                await self._checkpoint(tailer)

        for s in list(tailer.streams.values()):
            if self.ctx.stop.is_set():
                break
            if s.fd is not None and s.size <= s.offset:
                # The scan just before this pass saw no byte past the offset: no read (each was a
                # thread hop per file per poll, most of an idle pass). Bytes written since that scan
                # set `wake` (it was cleared before the scan) or, while notifications are paused,
                # are read at the next poll one read window later.
                continue
            await tailer.read(s, self.ctx.stop, between)
        return sum(s.offset for s in tailer.streams.values()) != before

    async def _wait(self) -> None:
        now = time.monotonic()
        # Busy (and one window after notifications resume, so nothing written while they were being
        # re-armed waits for the poll): the next pass is one read window away.
        busy = now < self.busy_until + self.settings.read_window
        timeout = (
            min(self.settings.read_window, self.settings.poll_interval)
            if busy
            else self.settings.poll_interval
        )
        if self.last_checkpoint is not None:
            due = self.last_checkpoint + self.settings.checkpoint_interval - time.monotonic()
            timeout = max(0.0, min(timeout, due))
        # One future and one timer per wait (the stop relay sets `wake` too), not two tasks and
        # asyncio.wait's own future, timer and callbacks: this runs at every idle poll.
        if not self.wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
        # Coalesce: a notification soon after a read pass waits for the rest of the read window,
        # so a trickle of lines costs one pass per window, not one per write (the latency budget).
        hold = self.last_pass + self.settings.read_window - time.monotonic()
        if self.wake.is_set() and hold > 0 and not self.ctx.stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(hold):
                    await self.ctx.stop.wait()

    async def _relay_stop(self) -> None:
        """A stop wakes `_wait` (which waits on `wake` alone)."""
        await self.ctx.stop.wait()
        self.wake.set()

    # -- health and status ------------------------------------------------------------------------
    def _report(self, found: Scan, missing: set[str]) -> None:
        """Degraded while a pattern matches no file (saying whether its directory exists) or a matched
        file cannot be followed; each problem is logged once when it begins and once when it ends."""
        self._last_scan = found
        matched = {fo.pattern for fo in found.files.values() if fo.error is None}
        for pattern in self.settings.paths:
            key = f"pattern:{pattern}"
            if pattern in matched:
                self.ctx.recovered(key)
            elif pattern in missing:
                self.ctx.degraded(key, f"directory {fixed_base(pattern)} does not exist (pattern {pattern})")
            else:
                self.ctx.degraded(key, f"pattern {pattern} matches no file")
        bad = {f"file:{path}": fo for path, fo in found.files.items() if fo.error is not None}
        for key in [k for k in self.ctx.status.problems if k.startswith("file:") and k not in bad]:
            self.ctx.recovered(key)
        for key, fo in list(bad.items())[:10]:  # a bounded number of reasons, however many files
            self.ctx.degraded(key, f"cannot follow {fo.path}: {fo.detail or fo.error}")

    def _note_lag(self, tailer: Tailer) -> None:
        now = time.monotonic()
        for key, s in tailer.streams.items():
            if s.size <= s.offset or key not in self._caught_up:
                self._caught_up[key] = now
        for key in [k for k in self._caught_up if k not in tailer.streams]:
            del self._caught_up[key]

    def status_tables(self) -> list[Table]:
        """Followed files (offset, size, lag, rotations, errors) and the rule metrics with their counts."""
        tables = []
        tailer = self.tailer
        now = time.monotonic()
        rows: list[list[Any]] = []
        if tailer is not None:
            for key, s in sorted(tailer.streams.items(), key=lambda kv: kv[1].path):
                behind = max(0, s.size - s.offset) if s.tied_to is None else 0
                since = self._caught_up.get(key, now)
                note = "copy (read if the original is truncated)" if s.tied_to is not None else ""
                if s.gone_since is not None:
                    note = "rotated away or deleted; draining"
                elif s.fd is None:
                    note = "from the checkpoint; not found yet"
                rotations = int(tailer.rotations.series.get((s.path,), 0))
                lag_s = round(now - since, 1) if behind else 0.0
                rows.append([s.path, s.offset, s.size, behind, lag_s, rotations, note])
            scan_files = self._last_scan.files if self._last_scan is not None else {}
            for path, fo in sorted(scan_files.items()):
                if fo.error is not None:
                    rows.append([path, None, None, None, None, None, f"{fo.error}: {fo.detail}"])
        shown = (
            sorted(rows, key=lambda r: -(r[3] or 0))[:MAX_FILE_ROWS] if len(rows) > MAX_FILE_ROWS else rows
        )
        more = (
            f"; {len(rows) - len(shown)} more not shown (the most behind are)"
            if len(shown) < len(rows)
            else ""
        )
        tables.append(
            Table(
                "Followed files",
                ["path", "offset", "size", "lag_bytes", "lag_seconds", "rotations", "last_error"],
                shown,
                note=f"patterns: {', '.join(self.settings.paths)}{more}",
            )
        )
        consumer = self.consumer
        compiled = getattr(consumer, "_compiled", None)
        families = getattr(compiled, "families", None)
        if families is None and consumer is not None:
            families = {n: self.ctx.metrics.families[n] for n in consumer.family_names()}
        lines = tailer.lines.series if tailer is not None else {}
        loaded = getattr(consumer, "rules_loaded", None)  # the rules engine's collector_rules_loaded gauge
        n_rules = int(loaded.series.get((), 0)) if loaded is not None else 0
        rule_matches = getattr(consumer, "rule_matches", None)  # the rules engine: per rule
        if rule_matches is not None and families:
            rule_rows = [
                [spec.name or f"{spec.origin} #{spec.index}", spec.metric, spec.kind, len(families[spec.metric].series),
                 count]
                for spec, count in rule_matches()
            ]  # fmt: skip
            columns = ["rule", "metric", "type", "series", "matches"]
        else:
            rule_rows = [[f.name, f.kind, len(f.series), _total(f)] for f in (families or {}).values()]
            columns = ["metric", "type", "series", "matches"]
        if families:
            tables.append(
                Table(
                    "Rules",
                    columns,
                    rule_rows,
                    note=f"{n_rules} rules (matches: lines each matched since it was loaded); presets: "
                    f"{', '.join(self.settings.preset) or 'none'}; rules file: "
                    f"{self.settings.rules or 'none'}; lines parsed {int(lines.get(('parsed',), 0))}, "
                    f"unmatched {int(lines.get(('unmatched',), 0))}, invalid JSON "
                    f"{int(lines.get(('invalid_json',), 0))}",
                )
            )
        tables.append(
            Table(
                "Unmatched lines",
                ["time", "line"],
                [[t, text] for t, text in self.unmatched],
                note="samples of lines no rule used (taken at most every 5 s from batches no line of "
                "which matched)",
            )
        )
        return tables

    # -- checkpoint -------------------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        last = self.last_checkpoint
        return last is None or time.monotonic() - last >= self.settings.checkpoint_interval

    def _families(self, tailer: Tailer) -> list[str]:
        assert self.consumer is not None
        return [*self.consumer.family_names(), *tailer.checkpoint_families()]

    def _write_checkpoint(self, tailer: Tailer) -> asyncio.Future[None] | None:
        """Take the checkpoint of this instant (between two steps, no await) and queue its write.

        Returns:
            The write, queued in order on the store thread; None when the store already holds this
            state. Writes in flight build on each other (each delta assumes the ones before it
            committed), so they share a `WriteChain`: once one fails the rest are refused, and the
            next checkpoint rewrites every family.
        """
        if tailer.changes != self.checkpointed_changes:
            # Files modified since the last scan began may hold lines no checkpoint has seen (kept
            # as it was while nothing changed, so an idle collector writes nothing).
            self.saved_at, self.checkpointed_changes = self.scanned_at, tailer.changes
        # Offsets, metric changes and the state a consumer keeps between lines (a join's pending
        # requests) taken together.
        consumer_state = getattr(self.consumer, "checkpoint_state", None)
        pending = self.checkpointer.take(
            self._families(tailer),
            tailer.snapshot(),
            list(self.settings.paths),
            consumer_state() if consumer_state is not None else None,
            extra={
                "pending": tailer.snapshot_pending(),
                "finished": tailer.snapshot_finished(),
                "saved_at": self.saved_at,
            },
        )
        if pending is None:
            return None
        queued = self._queued
        if queued is not None and not queued[1].done() and not pending.delta and pending.doc == queued[0]:
            # Exactly the state of the write in flight (nothing changed since it was taken): wait for
            # that one instead of queuing the same document again behind it.
            return queued[1]
        chain = self.chain
        write = self.ctx.store.put_with_series_nowait(
            OWNER, [(CHECKPOINT_KEY, pending.doc)], pending.delta, chain
        )

        def done(fut: asyncio.Future[None]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                self.checkpointer.failed(pending)
                if self.chain is chain:
                    self.chain = WriteChain()  # the next take rewrites everything: a fresh chain
            else:
                self.checkpointer.committed(pending)

        write.add_done_callback(done)
        self._queued = (pending.doc, write)
        return write

    def scrape_ready(self) -> asyncio.Future[None] | None:
        """What a scrape waits for before `before_scrape`: the checkpoint write in flight, if any.

        A slow disk must not make each scrape queue a write of its own behind the one in flight
        (8 scrapers at 1,000 lines/s with 100 ms commits had p99 920 ms and a growing queue): a scrape
        first waits for the write in flight, then takes; the scrapes that woke together find the same
        state and share one write (`_write_checkpoint`). At most one write in flight, each scrape's
        wait at most two commits. The promise is unchanged: a scrape renders right after its take and
        answers once a write holding at least that state committed.
        """
        queued = self._queued
        if queued is None or queued[1].done():
            return None
        return queued[1]

    def held_families(self) -> list[str]:
        """Families restored from the checkpoint: not served before the restore (see `durable_render`)."""
        names = list(self.consumer.family_names()) if self.consumer is not None else []
        return [*names, *CHECKPOINT_FAMILIES]

    def before_scrape(self) -> asyncio.Future[None] | None:
        """Called by /metrics right before it renders (no await in between): make what it serves durable.

        A scrape then never shows a count that a crash could take back, so after a restart no counter
        is ever below a value served before (Prometheus would read that as a reset). Nothing is written
        when nothing changed since the last checkpoint.
        """
        tailer = self.tailer
        if tailer is None:
            return None
        # The per-file gauges (behind bytes, files watched) as of now: the poll loop sets them after a
        # whole read pass, and a scrape between two batches of a pass would serve the counts of the
        # new lines beside the size-minus-offset of before them (seen: 10 bytes "behind" a file read
        # to its end).
        tailer.update_gauges()
        if self.ctx.status.phase != "running" or not self.ctx.store.is_open:
            return None
        return self._write_checkpoint(tailer)

    async def _checkpoint(self, tailer: Tailer) -> None:
        began = time.monotonic()
        write = self._write_checkpoint(tailer)
        if write is None:  # the store already holds exactly this state: nothing to write
            self.last_checkpoint = began
            return
        try:
            await write
        except Exception as exc:
            self.ctx.self_metrics.store_errors.labels("logs_checkpoint").inc()
            self.ctx.error("checkpoint_failed", str(exc))
            tailer.log_first("checkpoint_failed", "cannot write the logs checkpoint", error=str(exc))
            self.last_checkpoint = began  # retry at the next interval, not in a tight loop
            return
        self.last_checkpoint = began

    async def _restore(self, tailer: Tailer) -> tuple[bool, set[str]]:
        """Load the last checkpoint into the metric state and the tailer.

        Returns:
            (first start, patterns already used at the last checkpoint)
        """
        self.checkpointer = Checkpointer(self.ctx.metrics)
        raw = await self.ctx.store.get(OWNER, CHECKPOINT_KEY)
        if raw is None:
            self.ctx.restored.set()  # a first start: our families hold a first start's values
            return True, set()
        try:
            data: dict[str, Any] = msgspec.json.decode(raw)
            if not isinstance(data, dict):
                raise ValueError("the checkpoint is not a JSON object")
            rows = None
            if data.get("version") == CHECKPOINT_VERSION:
                rows = await self.ctx.store.series_rows(OWNER, decode_row)
            restored = self.checkpointer.restore(data, rows)
            saved_at = data.get("saved_at")
            tailer.restore(
                restored.streams,
                list(data.get("pending") or []),
                list(data.get("finished") or []),
                float(saved_at) if saved_at is not None else None,
            )
            restore_consumer = getattr(self.consumer, "restore_state", None)
            if restore_consumer is not None:
                restore_consumer(data.get("consumer"))
            # Only now (after the await for the series rows) do our families hold restored values.
            self.ctx.restored.set()
        except (msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
            for name in self._families(tailer):  # nothing half-restored stays
                fam = self.ctx.metrics.families.get(name)
                if fam is not None:
                    fam.clear()
            tailer.streams.clear()
            tailer.pending.clear()
            tailer.finished.clear()
            tailer.saved_at = None
            self.checkpointer = Checkpointer(self.ctx.metrics)
            self.ctx.restored.set()  # nothing half-restored is left: served as a first start
            self.ctx.error("checkpoint_unreadable", str(exc))
            self.ctx.log.error(
                "logs checkpoint unreadable; starting as on a first start", extra={"error": str(exc)}
            )
            return True, set()
        if restored.skipped:
            self.ctx.log.warning(
                "checkpointed metric families changed definition; their counts restart",
                extra={"families": restored.skipped},
            )
        self.ctx.log.info(
            "resuming from checkpoint", extra={"files": len(tailer.streams), "paths": restored.patterns}
        )
        return False, set(restored.patterns)

    def checkpoint_age(self) -> float | None:
        return None if self.last_checkpoint is None else time.monotonic() - self.last_checkpoint


def _scan(
    patterns: list[str], open_fds: dict[Key, int], want_end: bool, look_in: frozenset[str] = frozenset()
) -> tuple[Scan, set[str]]:
    """`scan`, plus the patterns whose leading directory does not exist (worker thread: it stats)."""
    found = scan(patterns, open_fds, want_end, look_in)
    missing = {p for p in patterns if not os.path.isdir(fixed_base(p))}
    return found, missing


def _total(fam: Any) -> float:
    """Matches a rule metric counted: the sum of its counter series, or of its histogram counts."""
    total = 0.0
    for v in fam.series.values():
        total += sum(v[:-1]) if isinstance(v, list) else v  # histogram: [per-bucket counts..., sum]
    return round(total, 3)


class _Sampler:
    """The consumer the tailer feeds, keeping a few recent lines that no rule used for the status page.

    A batch's result only counts its unmatched lines, so a sample is taken only from a batch in which
    no line matched (then its first line is one): at most one every `SAMPLE_EVERY` seconds, one
    comparison per batch otherwise.
    """

    SAMPLE_EVERY = 5.0

    def __init__(self, inner: LineConsumer, samples: deque[tuple[float, str]], clock: Any) -> None:
        self.inner = inner
        self.samples = samples
        self.clock = clock
        self.next_at = 0.0

    def family_names(self) -> Any:
        return self.inner.family_names()

    def consume(self, lines: Any) -> Any:
        result = self.inner.consume(lines)
        if result.unmatched and not result.parsed and lines:
            self._sample(bytes(lines[0][:300]))
        return result

    def consume_buffer(self, buf: bytes | memoryview, count: int) -> Any:
        fast = getattr(self.inner, "consume_buffer", None)
        if fast is None:
            return None  # the tailer splits the chunk and calls consume()
        result = fast(buf, count)
        if result is not None and result.unmatched and not result.parsed:
            self._sample(bytes(buf[:300]).split(b"\n", 1)[0])
        return result

    def _sample(self, line: bytes) -> None:
        now = self.clock()
        if now >= self.next_at:
            self.next_at = now + self.SAMPLE_EVERY
            self.samples.appendleft((now, line.decode("utf-8", "replace")))


def _checkpoint_age(registry: SelfRegistry, read: Callable[[], float | None]) -> None:
    """`collector_log_checkpoint_age_seconds`, read at scrape time; absent before the first checkpoint."""
    registry.computed(
        "collector_log_checkpoint_age_seconds",
        "Seconds since log offsets and metric state were last checkpointed.",
        read,
    )


class _Watcher:
    """File change notifications on the patterns' directories; the poll interval covers what they miss.

    On Linux, for non-recursive roots, an inotify descriptor read by the event loop
    (`sources/logs/notify.py`): no thread, nothing runs until a change. Otherwise watchfiles'
    notifier (inotify/FSEvents) on one thread of its own, driven directly rather than through
    `watchfiles.awatch`, which hops through an AnyIO worker thread for every batch of changes.
    Notifications only set `wake`; `LogsSource._wait` coalesces them into one read pass per
    `read_window` (COLLECTOR_LOGS__READ_WINDOW).
    """

    #: Use the loop-read inotify backend where it is available (tests force either backend).
    native = notify.available()

    def __init__(self, source: LogsSource, roots: tuple[tuple[str, bool], ...]) -> None:
        self.source = source
        self.loop = asyncio.get_running_loop()
        self.roots: tuple[tuple[str, bool], ...] = ()
        self.thread: threading.Thread | None = None
        self.inotify: notify.Inotify | None = None
        self.listening = False  # the loop reads `inotify` (off from a wake-up until the source clears `wake`)
        self.stop = threading.Event()
        self.paused = False  # while lines keep arriving: the source polls once per read window
        self.broken: tuple[tuple[str, bool], ...] | None = None  # roots whose watch failed: poll only
        self.follow(roots)

    def pause(self) -> None:
        """Stop notifications while files are busy: each write would cost an event, and the source
        reads once per window anyway."""
        if not self.paused:
            self.paused = True
            self.stop.set()
            self.thread = None
            self._disarm()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            roots, self.roots = self.roots, ()
            self.follow(roots)

    def follow(self, roots: tuple[tuple[str, bool], ...]) -> None:
        """(Re)start watching when the directories to watch changed (e.g. a log directory appeared)."""
        armed = self.thread is not None or self.inotify is not None
        if roots == self.roots and (armed or self.paused or not roots):
            return
        self.roots = roots
        self.stop.set()  # the old thread sees it within one step and exits
        self.stop = threading.Event()
        self.thread = None
        self._disarm()
        if not roots or self.paused or roots == self.broken:
            return
        if self.native and not any(r for _p, r in roots):
            try:
                self.inotify = notify.Inotify([p for p, _r in roots])
            except OSError as exc:  # inotify limits, a directory removed since the scan
                self._failed(roots, exc)
                return
            self.listen()
            return
        self.thread = threading.Thread(
            target=self._watch, args=(roots, self.stop), name="logs-watch", daemon=True
        )
        self.thread.start()

    def listen(self) -> None:
        """The source cleared `wake` (before its scan): the next change wakes it again.

        Between a wake-up and this, the descriptor is not read: `wake` is already set, so more events
        would add nothing, and a busy file beside the followed ones (not paused: it is not ours) would
        cost a loop callback per write. The kernel keeps them queued (identical ones merged), so a
        change made meanwhile wakes the source as soon as it listens again.
        """
        ino = self.inotify
        if ino is not None and not self.listening:
            self.loop.add_reader(ino.fd, self._readable)
            self.listening = True

    def _readable(self) -> None:
        """The inotify descriptor has events (on the loop): wake the source."""
        ino = self.inotify
        if ino is None:
            return
        intact = ino.drain()
        self.loop.remove_reader(ino.fd)
        self.listening = False
        if not intact:
            # A watched directory went away or moved: watch again after the scan this wake-up
            # starts (it finds the directories as they are now; `follow` re-arms on any roots).
            self._disarm()
            self.roots = ()
        self.source.wake.set()

    def _disarm(self) -> None:
        ino, self.inotify = self.inotify, None
        if ino is not None:
            if self.listening:
                self.loop.remove_reader(ino.fd)
                self.listening = False
            ino.close()

    def _watch(self, roots: tuple[tuple[str, bool], ...], stop: threading.Event) -> None:
        """The notifier loop (its own thread): each batch of changes sets `wake` on the event loop."""
        window = self.source.settings.read_window
        # Changes are grouped for up to one read window; the notifier wakes every `step` ms to check
        # `stop` even when idle, so it is not 10 ms (~100 wake-ups a second for nothing).
        debounce, step = max(10, int(window * 1000)), min(100, max(10, int(window * 500)))
        try:
            # imported here: only recursive patterns and non-Linux systems use it (~1 MB of RSS)
            from watchfiles._rust_notify import RustNotify

            with RustNotify([p for p, _r in roots], False, False, 300, any(r for _p, r in roots), True) as w:
                while not stop.is_set():
                    changes = w.watch(debounce, step, 5000, stop)
                    if isinstance(changes, set) and changes:
                        self._call(self.source.wake.set)
        except Exception as exc:  # inotify limits, a watched directory removed, network volumes
            self._call(self._failed, roots, exc)

    def _call(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            self.loop.call_soon_threadsafe(fn, *args)

    def _failed(self, roots: tuple[tuple[str, bool], ...], exc: Exception) -> None:
        self.broken = roots  # not retried at every resume: counted and logged once per set of roots
        src = self.source
        if src.tailer is not None:
            src.tailer.file_errors.inc(("watch_failed",))
            src.tailer.log_first(
                "watch_failed",
                "file change notifications unavailable; polling only",
                error=f"{type(exc).__name__}: {exc}",
                poll_interval_s=src.settings.poll_interval,
            )

    async def close(self) -> None:
        self.stop.set()
        self._disarm()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 5.0)
