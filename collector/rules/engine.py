"""The rules engine: a `LineConsumer` that turns batches of JSON log lines into metric updates.

`RuleSet` loads presets and a rules file, compiles them (the pipeline is described in
`collector.rules.compile`), applies a batch synchronously in `consume`, and in `run` hot-reloads the
rules file (a bad file keeps the old rules) and expires idle series. Its own health is in
`collector_log_*` and `collector_rules_*`; `rule_matches()` says how many lines each rule matched.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

from collector.logpipe import BatchResult
from collector.metrics import OVERFLOW, Family, MetricState
from collector.rules.compile import Compiled, build, plan
from collector.rules.presets import preset_rules, preset_stages
from collector.rules.schema import RulesError, RuleSpec, load_yaml, parse_text
from collector.rules.stages import Join, StageSpec, parse_stages

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    import asyncio  # imported where used: `collector replay` never starts an event loop
    import logging
    from collections.abc import Callable, Sequence
    from typing import Any

    from collector.logsetup import LogFirst

__all__ = ["RuleSet", "load_specs", "load_stages"]


def load_specs(
    presets: Sequence[str],
    rules_text: str | None,
    rules_origin: str = "rules",
    load: Callable[[str], Any] = load_yaml,
) -> list[RuleSpec]:
    """Preset rules first, then the rules file's (which add to them); `load` parses its YAML.

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
            specs.extend(parse_text(rules_text, rules_origin, load))
        except RulesError as exc:
            errors.extend(exc.errors)
    if errors:
        raise RulesError(errors)
    if not specs:
        raise RulesError(["no rules: set COLLECTOR_LOGS__PRESET or COLLECTOR_LOGS__RULES"])
    return specs


def load_stages(
    presets: Sequence[str],
    rules_text: str | None,
    rules_origin: str = "rules",
    load: Callable[[str], Any] = load_yaml,
) -> list[StageSpec]:
    """The extract/join stages of the presets, then of the rules file (validated by `load_specs`).

    Raises:
        RulesError: invalid stages.
    """
    stages: list[StageSpec] = []
    for name in presets:
        stages.extend(preset_stages(name))
    if rules_text is not None:
        try:
            data = load(rules_text)
        except Exception as exc:
            import yaml  # only with a rules file: presets alone never load it

            if not isinstance(exc, yaml.YAMLError):
                raise
            data = None  # load_specs reported it
        stages.extend(parse_stages(data, rules_origin))
    return stages


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
        check_utf8: count lines with invalid UTF-8 in fields no rule reads as `invalid_utf8` too
            (the logs source's default level counter does; see `LineDecoder`).
        yaml_loader: YAML text -> data for the rules file (`collector replay` caches it).

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
        check_utf8: bool = False,
        yaml_loader: Callable[[str], Any] = load_yaml,
    ) -> None:
        self.metrics = metrics
        self.yaml_loader = yaml_loader
        self.check_utf8 = check_utf8
        self.log = log
        self.presets = list(presets)
        self.rules_path = rules_path
        self.max_series = max_series
        self.clock = clock
        self.reload_interval = reload_interval
        self._first: LogFirst | None = None  # made at the first warning (it loads logging)
        # Idle expiry sweeps only when one can drop something: (the compiled set swept, the time of
        # that sweep, (oldest stamp kept, expire_after) per metric); see `expire`.
        self._expiry: tuple[Any, float, list[tuple[float, float]]] | None = None
        self._core_overflow = metrics.on_overflow  # the collector-wide overflow counter, kept too
        self.overflow = metrics.counter(
            "collector_log_series_overflow_total",
            "Updates whose unbounded label (route, ...) was folded into __overflow__ because the log "
            "metric reached its series limit; bounded labels (method, status_code) stay as logged.",
            ["metric", "label"],
        )
        self.value_errors = metrics.counter(
            "collector_log_value_errors_total",
            "Lines a rule matched whose value field was missing or not a usable number (counted, skipped).",
            ["metric", "reason"],
        )
        self.label_budget = metrics.counter(
            "collector_log_label_values_overflow_total",
            "New values of a label past its value budget, replaced by one constant (counted once per "
            "distinct raw value seen; the other labels of those lines stay as logged).",
            ["label"],
        )
        self.extract_misses = metrics.counter(
            "collector_log_extract_misses_total",
            "Lines an extract stage selected whose field did not match its regex (no fields extracted).",
        )
        self.join_lines = metrics.counter(
            "collector_log_join_total",
            "Two-line joins (Fastify's incoming request + request completed), by outcome.",
            ["outcome"],
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
        self._file_bytes: bytes | None = None  # what the rules in use were read from
        text = self._read_rules() if rules_path is not None else None
        self._compiled = self._compile(text)

    # -- LineConsumer ----------------------------------------------------------------------------
    def family_names(self) -> list[str]:
        """Rule families plus the line-driven error counters (checkpointed with the offsets)."""
        return [
            *self._compiled.families, self.overflow.name, self.value_errors.name,
            self.label_budget.name, self.join_lines.name, self.extract_misses.name,
        ]  # fmt: skip

    def checkpoint_state(self) -> dict[str, Any]:
        """What is pending between lines (a join's started requests), checkpointed with the offsets."""
        return {"joins": [[st.spec.key, st.state()] for st in self._compiled.stages if isinstance(st, Join)]}

    def restore_state(self, data: Any) -> None:
        """Load `checkpoint_state()`; a join whose key changed starts empty."""
        rows = {tuple(key): state for key, state in (data or {}).get("joins", [])}
        for st in self._compiled.stages:
            if isinstance(st, Join) and tuple(st.spec.key) in rows:
                st.restore(rows[tuple(st.spec.key)])
        self._seed_budgets(self._compiled)  # the restored series' values count against the budgets
        self._expiry = None  # restored series have no stamp yet: the next sweep starts their clocks

    @staticmethod
    def _seed_budgets(c: Compiled) -> None:
        """Admit the label values the families already hold (restored or kept across a reload), so a
        restart or reload never grants a label a fresh budget on top of the values it already has."""
        for spec, budget in c.budgets.items():
            constants = {spec.default, spec.other, spec.unmatched, OVERFLOW}
            users = {rule.metric for rule in c.plan.rules if spec in rule.labels}  # not other `method`s
            held = {
                key[fam.labelnames.index(spec.name)]
                for name, fam in c.families.items()
                if name in users
                for key in fam.series
            }
            for value in sorted(held - constants - budget.values):
                if len(budget.values) >= budget.limit:
                    break
                budget.values.add(value)

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
        now = c.now[0] = self.clock()
        gate = self._expiry
        if gate is not None and now < gate[1]:
            self._expiry = None  # the clock went back: this batch stamps series older than the sweep
        n = len(objs)
        consumed = self._stages(c, objs, now) if c.stages else 0  # join start lines count as used
        parsed = c.apply(objs) + consumed
        result.parsed = parsed
        result.unmatched = n - parsed
        for fam in c.families.values():
            fam.touch()
        if c.budgets:
            for spec, budget in c.budgets.items():
                if budget.refused:
                    self.label_budget.inc((spec.name,), budget.refused)
                    budget.refused = 0
        return result

    def _stages(self, c: Compiled, objs: list[Any], now: float) -> int:
        """Run extract and join stages in place on `objs`; how many start lines a join consumed."""
        consumed = 0
        for st in c.stages:
            if isinstance(st, Join):
                kept, used = st.apply(objs, now)
                objs[:] = kept
                consumed += used
                for outcome, count in st.outcomes.items():
                    if count:
                        self.join_lines.inc((outcome,), count)
                        st.outcomes[outcome] = 0
            else:
                st.apply(objs)
                if st.failed:
                    self.extract_misses.inc((), st.failed)
                    st.failed = 0
        return consumed

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

    def rule_matches(self) -> list[tuple[RuleSpec, int]]:
        """Each rule in use and the lines it matched since it was loaded (a reload starts again at 0)."""
        c = self._compiled
        return list(zip(c.plan.rules, c.matches, strict=True))

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
        self._file_bytes = data  # kept, not hashed: a rules file is small, and hashlib costs start-up
        return text

    def _compile(self, text: str | None, specs: list[RuleSpec] | None = None) -> Compiled:
        if specs is None:
            specs = load_specs(self.presets, text, str(self.rules_path), self.yaml_loader)
        stages = load_stages(self.presets, text, str(self.rules_path), self.yaml_loader)
        owned = self.metrics.claimed("rules")
        p = plan(specs, self.metrics, owned, self.max_series, stages)
        compiled = build(
            p, self.metrics, self._on_overflow, self._on_bad_value, self._on_missing, self.check_utf8
        )
        if hasattr(self, "_compiled"):  # a reload: requests already started stay pending
            self._carry_joins(self._compiled, compiled)
        self._seed_budgets(compiled)
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
                assert self.rules_path is not None  # reloads run only with a rules file (as in _stat)
                data = await asyncio.to_thread(self.rules_path.read_bytes)
            except OSError as exc:
                raise RulesError([f"{self.rules_path}: cannot read the rules file: {exc}"]) from None
            if data == self._file_bytes:
                return False  # touched, not changed
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RulesError([f"{self.rules_path}: not UTF-8: {exc}"]) from None
            specs = await asyncio.to_thread(
                load_specs, self.presets, text, str(self.rules_path), self.yaml_loader
            )
            self._compiled = self._compile(text, specs)
            self._file_bytes = data
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

    @staticmethod
    def _carry_joins(old: Compiled, new: Compiled) -> None:
        joins = {st.spec: st for st in old.stages if isinstance(st, Join)}
        for st in new.stages:
            if isinstance(st, Join) and st.spec in joins:
                st.pending = joins[st.spec].pending

    # -- guards ----------------------------------------------------------------------------------
    def _log_first(self, key: str, msg: str, **extra: Any) -> None:
        """Log the first record per key (see `LogFirst`)."""
        if self._first is None:
            from collector.logsetup import LogFirst  # with logging: only once something is wrong

            self._first = LogFirst(self.log, limit=1)
        self._first(key, msg, **extra)

    def _on_overflow(self, metric: str) -> None:
        fam = self.metrics.families.get(metric)
        for label in fam.folded if fam is not None else ("",):
            self.overflow.inc((metric, label))
        if self._core_overflow is not None:
            self._core_overflow(metric)
        self._log_first(
            f"overflow:{metric}",
            "log metric reached its series limit; its unbounded labels of new label sets fold into __overflow__",
            metric=metric,
            labels=list(fam.folded) if fam else None,
            max_series=fam.max_series if fam else None,
        )

    def _on_missing(self, metric: str, count: int) -> None:
        self.value_errors.inc((metric, "missing"), count)
        self._log_first(
            f"missing:{metric}", "log lines matched a rule but lack its value field; counted, not observed",
            metric=metric,
        )  # fmt: skip

    def _on_bad_value(self, metric: str, raw: Any) -> None:
        from collector.rules.normalize import to_number

        self.value_errors.inc((metric, "negative" if to_number(raw) is not None else "not_a_number"))
        self._log_first(
            f"value:{metric}", "log line matched a rule but its value is not a usable number",
            metric=metric, value=repr(raw)[:100],
        )  # fmt: skip

    def expire(self) -> int:
        """Drop series of metrics with `expire_after` that no line updated for that long.

        A sweep reads every series of those metrics, so it runs only once one can be due: after a
        sweep at `t`, no series can expire before the earliest `last update + expire_after` of the
        ones kept, nor a series created later (stamped at `t` or after) before `t + expire_after`.
        Updates only move stamps later, so an idle collector sweeps nothing however many series it
        holds (it swept all of them every second: O(series) per tick with nothing changed). A
        reload (a new compiled set), a restore (series without a stamp) or a clock that went back
        (before this tick, or before a batch: stamps older than the sweep) sweeps at once.
        """
        c = self._compiled
        now = self.clock()
        gate = self._expiry
        if gate is not None and gate[0] is c and gate[1] <= now and all(now - e <= lim for e, lim in gate[2]):
            return 0  # the same test as below, on the oldest stamp of each metric
        dropped = 0
        oldest: list[tuple[float, float]] = []
        for name, seen in c.seen.items():
            fam: Family = c.families[name]
            limit = c.plan.families[name].expire_after or 0.0
            earliest = now  # a series created after this sweep is stamped at `now` or later
            for key in list(fam.series):
                last = seen.setdefault(key, now)  # restored from a checkpoint: start its clock now
                if now - last > limit:
                    fam.remove(key)
                    del seen[key]
                    dropped += 1
                elif last < earliest:
                    earliest = last
            oldest.append((earliest, limit))
        self._expiry = (c, now, oldest)
        return dropped
