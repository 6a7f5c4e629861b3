"""The rules engine: a `LineConsumer` that turns batches of JSON log lines into metric updates.

`RuleSet` loads presets and a rules file, compiles them (see `collector.rules.compile`), applies a
batch synchronously in `consume`, and in `run` hot-reloads the rules file (a bad file keeps the old
rules) and expires idle series. Its own health is in `collector_log_*` and `collector_rules_*`.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.logpipe import BatchResult
from collector.logsetup import LogFirst
from collector.metrics import Family, MetricState
from collector.rules.compile import Compiled, build, plan
from collector.rules.presets import preset_rules
from collector.rules.schema import RulesError, RuleSpec, parse_text

if TYPE_CHECKING:
    import asyncio  # imported where used: `collector replay` never starts an event loop

__all__ = ["RuleSet", "load_specs"]

#: Families created by rules, per metric state: a rule set rebuilt after a source restart may reuse
#: them (and keep their values), but rules can never write into a family another part owns.
_OWNED: weakref.WeakKeyDictionary[MetricState, set[str]] = weakref.WeakKeyDictionary()


def load_specs(presets: Sequence[str], rules_text: str | None, rules_origin: str = "rules") -> list[RuleSpec]:
    """Preset rules first, then the rules file's (which add to them).

    Raises:
        RulesError: unknown preset, or invalid rules (every problem, one line each).
    """
    specs: list[RuleSpec] = []
    errors: list[str] = []
    for name in presets:
        try:
            specs.extend(preset_rules(name))
        except RulesError as exc:
            errors.extend(exc.errors)
    if rules_text is not None:
        try:
            specs.extend(parse_text(rules_text, rules_origin))
        except RulesError as exc:
            errors.extend(exc.errors)
    if errors:
        raise RulesError(errors)
    if not specs:
        raise RulesError(["no rules: set COLLECTOR_LOGS__PRESET or COLLECTOR_LOGS__RULES"])
    return specs


class RuleSet:
    """Compiled presets + rules file over a shared `MetricState`; implements `LineConsumer`.

    Args:
        metrics: the collector's metric state (the rule families are registered there).
        log: where reload results and bad values are logged.
        presets: preset names, applied first.
        rules_path: YAML rules file, added after the presets and watched for changes.
        max_series: default series limit per metric.
        clock: wall clock for idle expiry.
        reload_interval: seconds between checks of the rules file.

    Raises:
        RulesError: the presets or rules file cannot be used.
    """

    def __init__(
        self,
        metrics: MetricState,
        log: logging.Logger,
        presets: Sequence[str] = (),
        rules_path: Path | None = None,
        max_series: int = 10_000,
        clock: Callable[[], float] = time.time,
        reload_interval: float = 1.0,
    ) -> None:
        self.metrics = metrics
        self.log = log
        self.presets = list(presets)
        self.rules_path = rules_path
        self.max_series = max_series
        self.clock = clock
        self.reload_interval = reload_interval
        self._log_first = LogFirst(log, limit=1)
        self._core_overflow = metrics.on_overflow  # the collector-wide overflow counter, kept too
        self.overflow = metrics.counter(
            "collector_log_series_overflow_total",
            "Updates folded into a log metric's __overflow__ series because it reached its series limit.",
            ["metric"],
        )
        self.value_errors = metrics.counter(
            "collector_log_value_errors_total",
            "Lines a rule matched whose value field was not a usable number (counted, then skipped).",
            ["metric"],
        )
        self.reload_failures = metrics.counter(
            "collector_rules_reload_failures_total",
            "Rules file changes that were rejected (invalid or unreadable); the previous rules stay.",
        )
        self.reload_failures.inc((), 0.0)  # present from the start, so increase() alerts work
        self.reload_success = metrics.gauge(
            "collector_rules_last_reload_success_timestamp_seconds",
            "When the rules in use were loaded, Unix seconds.",
        )
        self.rules_loaded = metrics.gauge("collector_rules_loaded", "Rules in use (presets + rules file).")
        self._file_state: tuple[Any, ...] | None = None
        self._file_hash: str | None = None
        text = self._read_rules() if rules_path is not None else None
        self._compiled = self._compile(text)

    # -- LineConsumer ----------------------------------------------------------------------------
    def family_names(self) -> list[str]:
        """Rule families plus the line-driven error counters (checkpointed with the offsets)."""
        return [*self._compiled.families, self.overflow.name, self.value_errors.name]

    def consume(self, lines: Sequence[bytes]) -> BatchResult:
        """Decode and apply a batch synchronously; bad lines are counted, never raised."""
        result = BatchResult()
        if not lines:
            return result
        c = self._compiled  # a reload swaps this between batches, never during one
        collecting = gc.isenabled()
        gc.disable()  # a batch allocates ~10 objects a line, none in cycles: no collector passes
        try:
            return self._apply(c, c.decoder.decode(lines, result), result)
        finally:
            if collecting:
                gc.enable()

    def consume_buffer(self, buf: bytes | memoryview, count: int) -> BatchResult | None:
        """`consume` for `count` complete lines joined by newlines, without splitting them.

        None (and nothing applied) unless every line is one valid object: the caller then splits and
        calls `consume`, which counts the bad lines. The replay command and the tailer use it per chunk.
        """
        c = self._compiled
        collecting = gc.isenabled()
        gc.disable()
        try:
            objs = c.decoder.decode_buffer(buf, count)
            return None if objs is None else self._apply(c, objs, BatchResult())
        finally:
            if collecting:
                gc.enable()

    def _apply(self, c: Compiled, objs: list[Any], result: BatchResult) -> BatchResult:
        c.now[0] = self.clock()
        parsed = c.apply(objs)
        result.parsed = parsed
        result.unmatched = len(objs) - parsed
        for fam in c.families.values():
            fam.touch()
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Hot-reload the rules file and expire idle series until `stop` is set."""
        import asyncio

        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.reload_interval)
                return
            except TimeoutError:
                pass
            try:
                if self.rules_path is not None:
                    await self.check_reload()
                self.expire()
            except Exception as exc:  # never let housekeeping take the tailer down
                self.log.error("rules housekeeping failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    # -- reload ----------------------------------------------------------------------------------
    def _stat(self) -> tuple[Any, ...] | None:
        assert self.rules_path is not None
        try:
            st = os.stat(self.rules_path)  # follows symlinks: a ConfigMap swap changes the inode
        except OSError as exc:
            return ("missing", exc.strerror)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read_rules(self) -> str:
        assert self.rules_path is not None
        self._file_state = self._stat()
        try:
            data = self.rules_path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError([f"{self.rules_path}: cannot read the rules file: {exc}"]) from None
        self._file_hash = hashlib.sha256(data).hexdigest()
        return text

    def _compile(self, text: str | None, specs: list[RuleSpec] | None = None) -> Compiled:
        if specs is None:
            specs = load_specs(self.presets, text, str(self.rules_path))
        owned = _OWNED.setdefault(self.metrics, set())
        p = plan(specs, self.metrics, owned, self.max_series)
        compiled = build(p, self.metrics, self._on_overflow, self._on_bad_value)
        mine = set(self._compiled.families) if hasattr(self, "_compiled") else set()
        for name in mine - set(compiled.families):
            self.metrics.unregister(name)  # a metric the new rules no longer define
            owned.discard(name)
        owned.update(compiled.families)
        self.reload_success.set((), self.clock())
        self.rules_loaded.set((), float(len(specs)))
        return compiled

    async def check_reload(self) -> bool:
        """Reload the rules file if it changed; True when new rules are in use."""
        import asyncio

        state = await asyncio.to_thread(self._stat)
        if state == self._file_state:
            return False
        self._file_state = state
        try:
            if state is not None and state[0] == "missing":
                raise RulesError([f"{self.rules_path}: cannot read the rules file: {state[1]}"])
            try:
                data = await asyncio.to_thread(self.rules_path.read_bytes)  # type: ignore[union-attr]
            except OSError as exc:
                raise RulesError([f"{self.rules_path}: cannot read the rules file: {exc}"]) from None
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._file_hash:
                return False  # touched, not changed
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RulesError([f"{self.rules_path}: not UTF-8: {exc}"]) from None
            specs = await asyncio.to_thread(load_specs, self.presets, text, str(self.rules_path))
            self._compiled = self._compile(text, specs)
            self._file_hash = digest
        except RulesError as exc:
            self.reload_failures.inc()
            self.log.error(
                "rules file rejected; keeping the previous rules",
                extra={"path": str(self.rules_path), "errors": exc.errors},
            )
            return False
        self.log.info(
            "rules reloaded",
            extra={"path": str(self.rules_path), "rules": len(self._compiled.plan.rules)},
        )
        return True

    # -- guards ----------------------------------------------------------------------------------
    def _on_overflow(self, metric: str) -> None:
        self.overflow.inc((metric,))
        if self._core_overflow is not None:
            self._core_overflow(metric)
        fam = self.metrics.families.get(metric)
        self._log_first(
            f"overflow:{metric}",
            "log metric reached its series limit; new label sets fold into __overflow__",
            metric=metric,
            max_series=fam.max_series if fam else None,
        )

    def _on_bad_value(self, metric: str, raw: Any) -> None:
        self.value_errors.inc((metric,))
        self._log_first(
            f"value:{metric}", "log line matched a rule but its value is not a usable number",
            metric=metric, value=repr(raw)[:100],
        )  # fmt: skip

    def expire(self) -> int:
        """Drop series of metrics with `expire_after` that no line updated for that long."""
        c = self._compiled
        now = self.clock()
        dropped = 0
        for name, seen in c.seen.items():
            fam: Family = c.families[name]
            limit = c.plan.families[name].expire_after or 0.0
            for key in list(fam.series):
                last = seen.setdefault(key, now)  # restored from a checkpoint: start its clock now
                if now - last > limit:
                    fam.remove(key)
                    del seen[key]
                    dropped += 1
        return dropped
