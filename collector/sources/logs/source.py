"""The logs source: follow glob patterns, feed complete lines to the consumer, checkpoint exactly-once.

One task owns the tailer: scan (worker thread) -> decide (loop) -> read chunks (worker thread) ->
consume and advance (loop, one synchronous step). Every `checkpoint_interval` seconds, between two
steps, offsets + fingerprints + the line-counting metric families are written in ONE store
transaction; on start that state is restored and reading resumes from those offsets, so lines read
after the last checkpoint are read again into state that has not seen them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import watchfiles
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily

from collector.logpipe import LineConsumer, build_consumer
from collector.settings import LogsSettings
from collector.source import SourceContext
from collector.sources.logs.scan import FileObs, scan
from collector.sources.logs.tailer import CHECKPOINT_FAMILIES, Tailer

__all__ = ["CHECKPOINT_KEY", "CHECKPOINT_VERSION", "LogsSource"]

#: Store owner/key of the checkpoint (one JSON document: offsets, fingerprints, metric state).
OWNER = "logs"
CHECKPOINT_KEY = "checkpoint"
CHECKPOINT_VERSION = 1


class LogsSource:
    """Tails `COLLECTOR_LOGS__PATHS` and counts each complete line exactly once."""

    name = "logs"

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
        self.checkpointed_changes = -1  # `tailer.changes` at the last checkpoint taken
        self.checkpoint_ok = True  # the last checkpoint write succeeded
        self.scanned_at = 0.0  # wall time the last scan began (checkpointed: see Tailer._first_look)
        self.wake = asyncio.Event()
        ctx.self_metrics.registry.register(_CheckpointAge(self))

    def routes(self) -> list[web.RouteDef]:
        return []

    def _new_tailer(self) -> Tailer:
        assert self.consumer is not None
        s = self.settings
        return Tailer(
            self.consumer,
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
            found = await asyncio.to_thread(
                scan, patterns, {}, self.settings.start_at == "end", tailer.look_dirs(patterns)
            )
            tailer.apply(found, time.monotonic(), start_end)
            tailer.update_gauges()
            self._report_pending(tailer)
            await self._checkpoint(tailer)  # the start positions are durable before anything is read
            self.ctx.started()
            watcher = _Watcher(self, found.roots)
            run_consumer = getattr(self.consumer, "run", None)
            if run_consumer is not None:
                tasks.append(asyncio.create_task(run_consumer(self.ctx.stop), name="logs-consumer"))
            never = lambda _fo: False  # noqa: E731 - files found after the first scan start at 0
            while not self.ctx.stop.is_set():
                await self._read_all(tailer)
                tailer.expire(time.monotonic())
                tailer.update_gauges()
                if self._checkpoint_due():
                    await self._checkpoint(tailer)
                if not any(p.why == "truncated" for p in tailer.pending):
                    # (a truncated file's copy is looked for at once, before the next rotation moves it)
                    await self._wait()
                if self.ctx.stop.is_set():
                    break
                self.wake.clear()
                self.scanned_at = self.ctx.clock()
                found = await asyncio.to_thread(
                    scan, patterns, tailer.open_fds(), False, tailer.look_dirs(patterns)
                )
                tailer.apply(found, time.monotonic(), never)
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

    async def _read_all(self, tailer: Tailer) -> None:
        async def between() -> None:
            if self._checkpoint_due():
                await self._checkpoint(tailer)

        for s in list(tailer.streams.values()):
            if self.ctx.stop.is_set():
                return
            await tailer.read(s, self.ctx.stop, between)

    async def _wait(self) -> None:
        timeout = self.settings.poll_interval
        if self.last_checkpoint is not None:
            due = self.last_checkpoint + self.settings.checkpoint_interval - time.monotonic()
            timeout = max(0.0, min(timeout, due))
        stop = asyncio.ensure_future(self.ctx.stop.wait())
        wake = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait((stop, wake), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    # -- checkpoint -------------------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        last = self.last_checkpoint
        return last is None or time.monotonic() - last >= self.settings.checkpoint_interval

    def _state(self, tailer: Tailer) -> bytes:
        """Offsets and metric state taken together between two steps (no await here)."""
        assert self.consumer is not None
        names = [*self.consumer.family_names(), *tailer.checkpoint_families()]
        # state a consumer keeps between lines (a join's pending requests) goes with the offsets
        consumer_state = getattr(self.consumer, "checkpoint_state", None)
        return msgspec.json.encode(
            {
                "version": CHECKPOINT_VERSION,
                "patterns": list(self.settings.paths),
                "streams": tailer.snapshot(),
                "pending": tailer.snapshot_pending(),
                "finished": tailer.snapshot_finished(),
                # Files modified since the last scan began may hold lines no checkpoint has seen.
                "saved_at": self.scanned_at,
                "metrics": self.ctx.metrics.snapshot(names),
                "consumer": consumer_state() if consumer_state is not None else None,
            }
        )

    def _write_checkpoint(self, tailer: Tailer) -> asyncio.Future[None]:
        """Take the state now (between two steps) and queue its write; the store thread keeps the order."""
        self.checkpointed_changes = tailer.changes
        return self.ctx.store.put_nowait(OWNER, [(CHECKPOINT_KEY, self._state(tailer))])

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
        if tailer is None or self.ctx.status.state != "running" or not self.ctx.store.is_open:
            return None
        if tailer.changes == self.checkpointed_changes and self.checkpoint_ok:
            return None
        write = self._write_checkpoint(tailer)
        write.add_done_callback(self._scrape_checkpoint_done)
        return write

    def _scrape_checkpoint_done(self, write: asyncio.Future[None]) -> None:
        self.checkpoint_ok = not write.cancelled() and write.exception() is None

    async def _checkpoint(self, tailer: Tailer) -> None:
        began = time.monotonic()
        try:
            await self._write_checkpoint(tailer)
            self.checkpoint_ok = True
        except Exception as exc:
            self.checkpoint_ok = False
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
        raw = await self.ctx.store.get(OWNER, CHECKPOINT_KEY)
        self.ctx.restored.set()  # from here on our families hold restored values (or a first start's)
        if raw is None:
            return True, set()
        try:
            data: dict[str, Any] = msgspec.json.decode(raw)
            if data.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"unknown checkpoint version {data.get('version')!r}")
            skipped = self.ctx.metrics.restore(data.get("metrics", {}))
            saved_at = data.get("saved_at")
            tailer.restore(
                list(data.get("streams", [])),
                list(data.get("pending", [])),
                list(data.get("finished", [])),
                float(saved_at) if saved_at is not None else None,
            )
            restore_consumer = getattr(self.consumer, "restore_state", None)
            if restore_consumer is not None:
                restore_consumer(data.get("consumer"))
        except (msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
            self.ctx.error("checkpoint_unreadable", str(exc))
            self.ctx.log.error(
                "logs checkpoint unreadable; starting as on a first start", extra={"error": str(exc)}
            )
            return True, set()
        if skipped:
            self.ctx.log.warning(
                "checkpointed metric families changed definition; their counts restart",
                extra={"families": skipped},
            )
        self.ctx.log.info(
            "resuming from checkpoint", extra={"files": len(tailer.streams), "paths": data.get("patterns")}
        )
        return False, set(data.get("patterns", []))

    def checkpoint_age(self) -> float | None:
        return None if self.last_checkpoint is None else time.monotonic() - self.last_checkpoint


class _CheckpointAge:
    """`collector_log_checkpoint_age_seconds`, computed at scrape time (a collector on the self registry)."""

    def __init__(self, source: LogsSource) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []  # nothing to check at registration; collect() runs at scrape

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = self.source.checkpoint_age()
        if age is not None:
            yield GaugeMetricFamily(
                "collector_log_checkpoint_age_seconds",
                "Seconds since log offsets and metric state were last checkpointed.",
                value=age,
            )


class _Watcher:
    """watchfiles notifications on the patterns' directories; the poll interval covers what it misses."""

    def __init__(self, source: LogsSource, roots: tuple[tuple[str, bool], ...]) -> None:
        self.source = source
        self.roots: tuple[tuple[str, bool], ...] = ()
        self.task: asyncio.Task[None] | None = None
        self.stop = asyncio.Event()
        self.follow(roots)

    def follow(self, roots: tuple[tuple[str, bool], ...]) -> None:
        """(Re)start watching when the directories to watch changed (e.g. a log directory appeared)."""
        if roots == self.roots:
            return
        self.roots = roots
        if self.task is not None:
            self.stop.set()
            self.task.cancel()
        self.stop = asyncio.Event()
        if roots:
            self.task = asyncio.create_task(self._watch(roots, self.stop), name="logs-watch")

    async def _watch(self, roots: tuple[tuple[str, bool], ...], stop: asyncio.Event) -> None:
        src = self.source
        try:
            async for _changes in watchfiles.awatch(
                *(path for path, _r in roots),
                watch_filter=None,
                recursive=any(r for _p, r in roots),
                debounce=100,
                step=10,
                stop_event=stop,
                ignore_permission_denied=True,
            ):
                src.wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # inotify limits, a watched directory removed, network volumes: polling carries on.
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
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
