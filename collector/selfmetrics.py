"""The collector's own metrics: build info, source health, loop lag, store errors, process.

Small counters and gauges with client_python's calling style (`metric.labels(...).inc()`), kept in
`collector.metrics.Family` and rendered by `collector.exposition`, so the daemon never imports
prometheus_client (its import costs ~4.5 MB of resident memory: http.server, wsgiref, threading
helpers, ...). What they render is what client_python's registry rendered for the same events, with
`disable_created_metrics` (no `_created` samples): tests/test_selfmetrics.py compares the two.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from collector import __version__
from collector.exposition import render_family, render_header
from collector.metrics import COUNTER, GAUGE, Family

__all__ = [
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "ProcessMetrics",
    "SelfMetrics",
    "SelfRegistry",
    "read_process",
]

# The states of `collector.source.STATES` (not imported: collector.source imports this module).
_STATES = ("starting", "running", "degraded", "failed", "stopped")

#: `collector_state_store_errors_total{operation}` values known at start-up.
STORE_OPERATIONS = ("open", "logs_checkpoint")


class CounterChild:
    """One series of a counter."""

    __slots__ = ("family", "key")

    def __init__(self, family: Family, key: tuple[str, ...]) -> None:
        self.family = family
        self.key = key
        family.inc(key, 0.0)  # exists at 0 (a float: rendered `0.0`, as client_python spells it)

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (counters only go up: a negative amount raises ValueError)."""
        if amount < 0:
            raise ValueError(f"{self.family.name}: counters can only be incremented by non-negative amounts")
        self.family.inc(self.key, amount)


class GaugeChild:
    """One series of a gauge: set, moved up and down, or read from a function at each scrape."""

    __slots__ = ("family", "functions", "key")

    def __init__(
        self, family: Family, key: tuple[str, ...], functions: dict[tuple[str, ...], Callable[[], float]]
    ) -> None:
        self.family = family
        self.key = key
        self.functions = functions
        family.set(key, 0.0)

    def set(self, value: float) -> None:
        self.family.set(self.key, value)

    def inc(self, amount: float = 1.0) -> None:
        self.family.inc(self.key, amount)

    def dec(self, amount: float = 1.0) -> None:
        self.family.inc(self.key, -amount)

    def set_function(self, read: Callable[[], float]) -> None:
        """Take the value from `read()` at each scrape from now on."""
        self.functions[self.key] = read


_C = TypeVar("_C", CounterChild, GaugeChild)


class _Metric(Generic[_C]):
    """A family and its children by label values; an unlabelled one is its own single series."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self._children: dict[tuple[object, ...], _C] = {}  # by label values as strings
        self._only: _C | None = self.labels() if not family.labelnames else None

    def _child(self, key: tuple[str, ...]) -> _C:
        raise NotImplementedError

    def labels(self, *values: object) -> _C:
        """The series of these label values (in `labelnames` order), made at 0 the first time.

        Raises:
            ValueError: not one value per label name.
        """
        child = self._children.get(values)  # label values are nearly always strings already
        if child is None:
            if len(values) != len(self.family.labelnames):
                raise ValueError(f"{self.family.name}: labels {self.family.labelnames}, got {values!r}")
            key = tuple(str(v) for v in values)  # `labels(200)` is `labels("200")`
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._child(key)
        return child

    def _single(self) -> _C:
        if self._only is None:
            raise ValueError(f"{self.family.name} has labels {self.family.labelnames}: call labels() first")
        return self._only


class Counter(_Metric[CounterChild]):
    def _child(self, key: tuple[str, ...]) -> CounterChild:
        return CounterChild(self.family, key)

    def inc(self, amount: float = 1.0) -> None:
        self._single().inc(amount)


class Gauge(_Metric[GaugeChild]):
    def __init__(self, family: Family) -> None:
        self.functions: dict[tuple[str, ...], Callable[[], float]] = {}
        super().__init__(family)

    def _child(self, key: tuple[str, ...]) -> GaugeChild:
        return GaugeChild(self.family, key, self.functions)

    def set(self, value: float) -> None:
        self._single().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._single().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._single().dec(amount)

    def set_function(self, read: Callable[[], float]) -> None:
        self._single().set_function(read)

    def refresh(self) -> None:
        """Read the gauges whose value comes from a function (before each render)."""
        family = self.family
        for key, read in self.functions.items():
            family.set(key, read())


class SelfRegistry:
    """The collector's own families, rendered in registration order after the sources' families.

    A counter's or gauge's family shows its HELP and TYPE even while it has no series (as
    client_python's labelled metrics do); a family filled at scrape time (`computed`, `add_scraped`)
    shows nothing while it has none. Updates come from the event loop; the one exception, the store's
    reset counter (bumped on the store's thread), has no labels, so it never adds a series under a
    render's feet.
    """

    def __init__(self) -> None:
        self._families: list[tuple[Family, bool]] = []  # (family, HELP and TYPE shown with no series)
        self._names: set[str] = set()
        self._gauges: list[Gauge] = []
        self._before: list[Callable[[], None]] = []

    def _add(self, family: Family, header_when_empty: bool) -> Family:
        if family.name in self._names:
            raise ValueError(f"{family.name}: already registered")
        self._names.add(family.name)
        self._families.append((family, header_when_empty))
        return family

    def _family(self, name: str, kind: str, help: str, labelnames: Iterable[str]) -> Family:
        # every label value is bounded by the code that sets it: no series limit to fold at
        return Family(name, kind, help, tuple(labelnames), max_series=1 << 62, track_changes=False)

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        return Counter(self._add(self._family(name, COUNTER, help, labelnames), True))

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
        gauge = Gauge(self._add(self._family(name, GAUGE, help, labelnames), True))
        self._gauges.append(gauge)
        return gauge

    def computed(self, name: str, help: str, read: Callable[[], float | None]) -> None:
        """An unlabelled gauge read at each scrape; absent (no HELP either) while `read()` is None."""
        family = self._add(self._family(name, GAUGE, help, ()), False)

        def refresh() -> None:
            value = read()
            if value is None:
                family.remove(())
            else:
                family.set((), value)

        self._before.append(refresh)

    def add_scraped(self, families: Iterable[Family], refresh: Callable[[], None]) -> None:
        """Families that `refresh()` fills right before each render (absent while they have no series)."""
        for family in families:
            self._add(family, False)
        self._before.append(refresh)

    def render(self, openmetrics: bool) -> str:
        """Every family's text (an unchanged family reuses its text from the last scrape)."""
        for gauge in self._gauges:
            if gauge.functions:
                gauge.refresh()
        for refresh in self._before:
            refresh()
        parts = []
        for family, header_when_empty in self._families:
            text = render_family(family, openmetrics)
            if not text and header_when_empty:
                text = render_header(family, openmetrics)
            parts.append(text)
        return "".join(parts)


# --- process_*: what client_python's ProcessCollector read from /proc ------------------------------


def read_process(proc: str, pid: str, ticks: float, pagesize: int, btime: float) -> dict[str, float]:
    """`process_*` values from `<proc>/<pid>/{stat,limits,fd}`, computed as ProcessCollector does.

    The CPU, memory and start time come from `stat` and the descriptor figures from `limits` and
    `fd/`; either group is left out when its files cannot be read (an unlimited descriptor limit is
    +Inf, where ProcessCollector failed the scrape).
    """
    base = os.path.join(proc, pid)
    out: dict[str, float] = {}
    try:
        with open(os.path.join(base, "stat"), "rb") as f:
            parts = f.read().split(b")")[-1].split()
        out["process_virtual_memory_bytes"] = float(parts[20])
        out["process_resident_memory_bytes"] = float(parts[21]) * pagesize
        out["process_start_time_seconds"] = float(parts[19]) / ticks + btime
        out["process_cpu_seconds_total"] = float(parts[11]) / ticks + float(parts[12]) / ticks
    except (OSError, IndexError, ValueError):
        pass
    try:
        max_fds = None
        with open(os.path.join(base, "limits"), "rb") as f:
            for line in f:
                if line.startswith(b"Max open file"):
                    soft = line.split()[3]
                    max_fds = float("inf") if soft == b"unlimited" else float(soft)
                    break
        open_fds = float(len(os.listdir(os.path.join(base, "fd"))))
        if max_fds is not None:
            out["process_open_fds"] = open_fds
            out["process_max_fds"] = max_fds
    except (OSError, IndexError, ValueError):
        pass
    return out


def _boot_time(proc: str) -> float:
    try:
        with open(os.path.join(proc, "stat"), "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0.0


def _sysconf(name: str, default: int) -> int:
    try:
        return os.sysconf(name)
    except (ValueError, OSError, AttributeError):  # not this platform's name
        return default


class ProcessMetrics:
    """The collector's `process_*` families (names, types and help as client_python's ProcessCollector
    exposes them, so dashboards and alert rules written for any Python exporter apply), read from
    /proc at each scrape. Without /proc (not Linux) there are none, as with ProcessCollector.

    Args:
        proc: where procfs is mounted (tests point it at a copy).
        pid: the process directory under it.
    """

    HELP = {
        "process_virtual_memory_bytes": (GAUGE, "Virtual memory size in bytes."),
        "process_resident_memory_bytes": (GAUGE, "Resident memory size in bytes."),
        "process_start_time_seconds": (GAUGE, "Start time of the process since unix epoch in seconds."),
        "process_cpu_seconds_total": (COUNTER, "Total user and system CPU time spent in seconds."),
        "process_open_fds": (GAUGE, "Number of open file descriptors."),
        "process_max_fds": (GAUGE, "Maximum number of open file descriptors."),
    }

    def __init__(self, proc: str = "/proc", pid: str = "self") -> None:
        self.proc, self.pid = proc, pid
        self.ticks = float(_sysconf("SC_CLK_TCK", 100))
        self.pagesize = _sysconf("SC_PAGE_SIZE", 4096)
        self.btime = _boot_time(proc)  # 0: no readable /proc, no process metrics
        self.families = {
            name: Family(name, kind, help, track_changes=False) for name, (kind, help) in self.HELP.items()
        }

    def refresh(self) -> None:
        """Set each family from a fresh read; a family whose files could not be read has no series."""
        values = (
            read_process(self.proc, self.pid, self.ticks, self.pagesize, self.btime) if self.btime else {}
        )
        for name, family in self.families.items():
            value = values.get(name)
            if value is None:
                family.remove(())
            else:
                family.set((), value)


class SelfMetrics:
    """Self-metrics with the `collector_` prefix, plus the collector's own `process_*` metrics.

    Args:
        registry: where to register (a fresh one by default).
        process: the `process_*` reader (tests give one over a copy of /proc).
    """

    def __init__(self, registry: SelfRegistry | None = None, process: ProcessMetrics | None = None) -> None:
        self.registry = registry if registry is not None else SelfRegistry()
        r = self.registry
        self.process = process if process is not None else ProcessMetrics()
        r.add_scraped(self.process.families.values(), self.process.refresh)
        r.gauge(
            "collector_build_info", "Collector build information; always 1.", ["version", "python"]
        ).labels(__version__, platform.python_version()).set(1)
        self.source_up = r.gauge(
            "collector_source_up",
            "1 when the source is running (also when degraded), 0 while it is starting, failed or stopped.",
            ["source"],
        )
        self.source_state = r.gauge(
            "collector_source_state",
            "1 for the source's current state (starting, running, degraded, failed, stopped), 0 for the others.",
            ["source", "state"],
        )
        self.source_errors = r.counter(
            "collector_source_errors_total", "Errors seen by each source, by reason.", ["source", "reason"]
        )
        self.source_restarts = r.counter(
            "collector_source_restarts_total", "Times a failed source was restarted.", ["source"]
        )
        self.loop_lag = r.gauge(
            "collector_event_loop_lag_seconds",
            "How late the event loop woke a 1 s timer, last measurement.",
        )
        self.store_resets = r.counter(
            "collector_state_store_resets_total",
            "Times the state store was unusable (corrupt or incompatible) and was moved aside for a fresh one.",
        )
        self.store_errors = r.counter(
            "collector_state_store_errors_total",
            "Failed state store operations, by operation.",
            ["operation"],
        )
        for op in STORE_OPERATIONS:
            self.store_errors.labels(op)
        self.series_overflow = r.counter(
            "collector_series_overflow_total",
            "Label sets folded into a family's __overflow__ series because it hit its series limit.",
            ["metric"],
        )
        self.scrape_duration = r.gauge(
            "collector_scrape_render_seconds", "Time the last /metrics response took to render."
        )

    def init_source(self, source: str, error_reasons: tuple[str, ...] = ()) -> None:
        """Series of one enabled source that exist from start-up at 0 (exporter guidelines), so dashboards
        show 0 instead of "No data" and `increase()` sees the first error."""
        self.set_source_state(source, "starting")
        self.source_restarts.labels(source)
        for reason in error_reasons:
            self.source_errors.labels(source, reason)

    def set_source_state(self, source: str, state: str) -> None:
        """`collector_source_up` and the one-hot `collector_source_state` for `source`."""
        self.source_up.labels(source).set(1 if state in ("running", "degraded") else 0)
        for s in _STATES:
            self.source_state.labels(source, s).set(1 if s == state else 0)

    def render(self, openmetrics: bool) -> bytes:
        """The self metrics' exposition; in OpenMetrics it ends with `# EOF` (it comes last)."""
        text = self.registry.render(openmetrics)
        return (text + "# EOF\n").encode() if openmetrics else text.encode()
