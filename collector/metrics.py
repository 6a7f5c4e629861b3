"""Metric state: families of series in plain dicts, snapshot/restore, cardinality guard.

prometheus_client's per-sample objects cost too much at 10k+ series and 100k+ updates/s, so the
collector's own catalog lives here as plain data (see docs/design.md): a family maps a tuple of label
values to a float (counter, gauge) or to a list of per-bucket counts plus the sum (histogram).
Rendering lives in `collector.exposition`.
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_left

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

__all__ = [
    "COUNTER",
    "GAUGE",
    "HISTOGRAM",
    "OVERFLOW",
    "Family",
    "MetricDefinitionError",
    "MetricState",
]

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
KINDS = (COUNTER, GAUGE, HISTOGRAM)

#: Label value of the one series that absorbs label sets beyond a family's series limit.
OVERFLOW = "__overflow__"

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


class MetricDefinitionError(ValueError):
    """A family definition that Prometheus would reject or that conflicts with an existing one."""


class Family:
    """One metric family and its series.

    Args:
        name: Prometheus metric name; counters must end in `_total`, nothing else may.
        kind: `counter`, `gauge` or `histogram`.
        help: HELP text.
        labelnames: label names, in the order label tuples use.
        buckets: histogram upper bounds (seconds, bytes, ...), ascending, without +Inf.
        max_series: series limit; label sets beyond it fold into one `__overflow__` series.
        on_overflow: called with the family name each time a new label set is folded.
        track_changes: keep the set of series changed since `take_changes()` (checkpoints write only
            those); `collector replay` never checkpoints and does not pay for it.

    Raises:
        MetricDefinitionError: on an invalid name, label or bucket list.
    """

    __slots__ = (
        "_keys",
        "_template",
        "_text",
        "buckets",
        "changed",
        "fold",
        "help",
        "kind",
        "labelnames",
        "max_series",
        "name",
        "on_overflow",
        "overflow_key",
        "rewrite",
        "series",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
        max_series: int = 10_000,
        on_overflow: Callable[[str], None] | None = None,
        track_changes: bool = True,
    ) -> None:
        _validate(name, kind, labelnames, buckets)
        self.name = name
        self.kind = kind
        self.help = help
        self.labelnames: tuple[str, ...] = tuple(labelnames)
        self.buckets: tuple[float, ...] = tuple(float(b) for b in buckets or ()) if kind == HISTOGRAM else ()
        self.max_series = max_series
        self.on_overflow = on_overflow
        self.overflow_key: tuple[str, ...] = (OVERFLOW,) * len(self.labelnames)
        # per label: folded into __overflow__ past the series limit? Bounded labels (status_code,
        # method) are kept, so totals per status stay exact and error alerts see errors in an attack.
        self.fold: tuple[bool, ...] = (True,) * len(self.labelnames)
        # series: label values -> number (an int while only whole counts were added: exact at any size,
        # and rendered ~2x faster than a float), or for histograms [count per bucket..., count above last, sum]
        self.series: dict[tuple[str, ...], Any] = {}
        # the series keys `_template` was built for, and the sample lines of all of them with `%`
        # placeholders for values (see `series_template`)
        self._keys: list[tuple[str, ...]] = []
        self._template = ""
        # rendered text of the whole family per format, dropped on any change
        self._text: dict[bool, str] = {}
        # -- change tracking, for checkpoints that write only what changed (see `take_changes`) --
        # keys of series set, updated or removed since the last `take_changes()`; code that writes
        # `series` directly (compiled rules) adds to it too. The set object is never replaced.
        self.changed: set[tuple[str, ...]] | None = set() if track_changes else None
        # every series must be written again (new, cleared or restored family): `changed` is not enough
        self.rewrite = True

    # -- identity ---------------------------------------------------------------------------------
    def signature(self) -> tuple[Any, ...]:
        """What must match for a restored or reloaded family to keep its values."""
        return (self.name, self.kind, self.labelnames, self.buckets)

    # -- updates (hot path) -----------------------------------------------------------------------
    def fold_only(self, labelnames: Sequence[str]) -> None:
        """Past the series limit fold only these labels (all of them when none is named)."""
        fold = tuple(name in labelnames for name in self.labelnames)
        self.fold = fold if any(fold) else (True,) * len(self.labelnames)

    @property
    def folded(self) -> tuple[str, ...]:
        """The labels the series limit folds."""
        return tuple(n for n, f in zip(self.labelnames, self.fold, strict=True) if f)

    def admit(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """Return the key a new label set is stored under: itself, or past the limit the set with its
        unbounded labels folded to `__overflow__` (the bounded ones kept: at most their product more)."""
        if labels in self.series or len(self.series) < self.max_series or not self.labelnames:
            return labels
        if self.on_overflow is not None:
            self.on_overflow(self.name)
        if all(self.fold):
            return self.overflow_key
        return tuple(OVERFLOW if f else v for f, v in zip(self.fold, labels, strict=True))

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        series = self.series
        value = series.get(labels)
        if value is None:
            labels = self.admit(labels)
            value = series.get(labels, 0)
        series[labels] = value + amount
        self._text.clear()
        if self.changed is not None:
            self.changed.add(labels)

    def set(self, labels: tuple[str, ...], value: float) -> None:
        if labels not in self.series:
            labels = self.admit(labels)
        self.series[labels] = float(value)
        self._text.clear()
        if self.changed is not None:
            self.changed.add(labels)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        cells = self.series.get(labels)
        if cells is None:
            labels = self.admit(labels)
            cells = self.series.get(labels)
            if cells is None:
                cells = self.series[labels] = [0] * (len(self.buckets) + 1) + [0.0]
        cells[bisect_left(self.buckets, value)] += 1
        cells[-1] += value
        self._text.clear()
        if self.changed is not None:
            self.changed.add(labels)

    def set_cells(self, labels: tuple[str, ...], cells: list[Any]) -> None:
        """Replace a histogram series with cells computed elsewhere (e.g. from a whole history): one
        count per bucket, the count above the last bucket, then the sum, as `observe` keeps them.

        Raises:
            ValueError: `cells` does not have that shape (it would render wrong buckets).
        """
        if len(cells) != len(self.buckets) + 2:
            raise ValueError(f"{self.name}: {len(cells)} cells for {len(self.buckets)} buckets")
        if labels not in self.series:
            labels = self.admit(labels)
        self.series[labels] = cells
        self._text.clear()
        if self.changed is not None:
            self.changed.add(labels)

    def remove(self, labels: tuple[str, ...]) -> None:
        if self.series.pop(labels, None) is not None:
            self._text.clear()
            if self.changed is not None:
                self.changed.add(labels)

    def clear(self) -> None:
        self.series.clear()
        self._keys, self._template = [], ""
        self._text.clear()
        if self.changed is not None:
            self.changed.clear()
        self.rewrite = True

    def touch(self) -> None:
        """Mark the family changed after code updated `series` directly (compiled rules do)."""
        self._text.clear()

    # -- rendering cache (filled by `collector.exposition`, dropped by every update above) ----------
    def rendered(self, openmetrics: bool) -> str | None:
        """The family's text as last rendered in this format, or None when it changed since."""
        return self._text.get(openmetrics)

    def keep_rendered(self, openmetrics: bool, text: str) -> None:
        """Keep `text` as the family's rendering in this format until its next update."""
        self._text[openmetrics] = text

    def series_template(self, lines_of: Callable[[tuple[str, ...]], str]) -> str:
        """Every series' sample lines, in `series` order, with `%` placeholders for the values.

        `lines_of(key)` builds one series' lines; the result is kept while the keys stay the same and
        extended when series were only added (new keys come last in a dict), so label text is escaped
        once per series, not once per scrape.
        """
        keys = list(self.series)
        known = self._keys
        if keys != known:
            n = len(known)
            if n < len(keys) and keys[:n] == known:
                self._template += "".join([lines_of(k) for k in keys[n:]])
            else:
                self._template = "".join([lines_of(k) for k in keys])
            self._keys = keys
        return self._template

    # -- change tracking --------------------------------------------------------------------------
    def take_changes(self) -> tuple[bool, list[tuple[str, ...]]]:
        """What changed since the last call: (every series must be rewritten, keys set or removed).

        An untracked family always answers "rewrite everything". Call it together with reading the
        values (no await in between), so no update falls between what is taken and what is written.
        """
        changed, rewrite = self.changed, self.rewrite
        self.rewrite = False
        if changed is None:
            return True, []
        keys = list(changed)
        changed.clear()
        return rewrite, keys

    def mark_saved(self) -> None:
        """The stored copy is exactly `series` (just restored from it): nothing to write yet."""
        if self.changed is not None:
            self.changed.clear()
            self.rewrite = False

    # -- persistence ------------------------------------------------------------------------------
    def snapshot(self) -> list[list[Any]]:
        """Series as JSON-ready rows `[label values, value]`; histogram values are copied lists."""
        if self.kind == HISTOGRAM:
            return [[list(k), list(v)] for k, v in self.series.items()]
        return [[list(k), v] for k, v in self.series.items()]

    def restore(self, rows: Iterable[Sequence[Any]]) -> None:
        """Replace the series with rows from `snapshot()` (of a family with the same signature)."""
        self.clear()
        width = len(self.buckets) + 2
        for labels, value in rows:
            key = tuple(str(v) for v in labels)
            if len(key) != len(self.labelnames):
                continue
            if self.kind == HISTOGRAM:
                if not isinstance(value, list) or len(value) != width:
                    continue
                self.series[key] = [int(c) for c in value[:-1]] + [float(value[-1])]
            else:
                self.series[key] = value if type(value) is int else float(value)


def _validate(name: str, kind: str, labelnames: Sequence[str], buckets: Sequence[float] | None) -> None:
    if kind not in KINDS:
        raise MetricDefinitionError(f"{name}: type must be one of {', '.join(KINDS)}, not {kind!r}")
    if not _NAME_RE.match(name):
        raise MetricDefinitionError(f"{name!r} is not a valid Prometheus metric name")
    if kind == COUNTER and not name.endswith("_total"):
        raise MetricDefinitionError(f"{name}: counter names must end in _total")
    if kind != COUNTER and name.endswith("_total"):
        raise MetricDefinitionError(f"{name}: only counters may end in _total")
    if name.endswith(_RESERVED_SUFFIXES):
        raise MetricDefinitionError(f"{name}: name ends in a suffix Prometheus reserves")
    seen: set[str] = set()
    for label in labelnames:
        if not _LABEL_RE.match(label) or label.startswith("__"):
            raise MetricDefinitionError(f"{name}: {label!r} is not a valid label name")
        if label in seen:
            raise MetricDefinitionError(f"{name}: label {label!r} given twice")
        if kind == HISTOGRAM and label == "le":
            raise MetricDefinitionError(f"{name}: histograms cannot have a label named le")
        seen.add(label)
    if kind == HISTOGRAM:
        if not buckets:
            raise MetricDefinitionError(f"{name}: a histogram needs at least one bucket")
        bounds = [float(b) for b in buckets]
        if any(b != b or b in (float("inf"), float("-inf")) for b in bounds):
            raise MetricDefinitionError(f"{name}: buckets must be finite (+Inf is implicit)")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise MetricDefinitionError(f"{name}: buckets must be strictly ascending")


class MetricState:
    """The collector's catalog: every family by name, in registration order.

    Args:
        on_overflow: passed to every family created here (counts folded label sets).
        on_family: called with the name of each new family that has labels (and so can overflow), so the
            overflow counter can exist at 0 for it.
        track_changes: families keep the series changed since the last checkpoint (see
            `Family.take_changes`); False where nothing is checkpointed (`collector replay`).
    """

    def __init__(
        self,
        on_overflow: Callable[[str], None] | None = None,
        track_changes: bool = True,
        on_family: Callable[[str], None] | None = None,
    ) -> None:
        self.families: dict[str, Family] = {}
        # Families a part (the rules engine) created here and may rebuild: kept with the catalog, not in
        # a module global, so two collectors in one process (tests) never see each other's claims.
        self._claims: dict[str, set[str]] = {}
        self.on_overflow = on_overflow
        self.track_changes = track_changes
        self.on_family = on_family

    def family(
        self,
        name: str,
        kind: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
        max_series: int = 10_000,
    ) -> Family:
        """Create a family, or return the existing one with the same signature.

        Raises:
            MetricDefinitionError: the name is taken by a family of another type, labels or buckets.
        """
        fam = Family(name, kind, help, labelnames, buckets, max_series, self.on_overflow, self.track_changes)
        existing = self.families.get(name)
        if existing is not None:
            if existing.signature() != fam.signature():
                raise MetricDefinitionError(
                    f"{name}: already defined as {existing.kind} with labels {list(existing.labelnames)}"
                )
            existing.help = help
            existing.max_series = max_series
            return existing
        self.families[name] = fam
        if self.on_family is not None and fam.labelnames:
            self.on_family(name)
        return fam

    def counter(self, name: str, help: str, labelnames: Sequence[str] = (), **kw: Any) -> Family:
        return self.family(name, COUNTER, help, labelnames, **kw)

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = (), **kw: Any) -> Family:
        return self.family(name, GAUGE, help, labelnames, **kw)

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float], **kw: Any
    ) -> Family:
        return self.family(name, HISTOGRAM, help, labelnames, buckets=buckets, **kw)

    def unregister(self, name: str) -> None:
        self.families.pop(name, None)

    def claimed(self, owner: str) -> set[str]:
        """The (mutable) set of family names `owner` created here and may reuse after a rebuild.

        A rule set rebuilt after a source restart or a reload keeps the families (and values) it made,
        but never writes into one another part registered.
        """
        return self._claims.setdefault(owner, set())

    def snapshot(self, names: Iterable[str]) -> dict[str, Any]:
        """JSON-ready state of the named families, with their signatures for a safe restore."""
        out: dict[str, Any] = {}
        for name in names:
            fam = self.families.get(name)
            if fam is not None:
                out[name] = {
                    "kind": fam.kind,
                    "labels": list(fam.labelnames),
                    "buckets": list(fam.buckets),
                    "series": fam.snapshot(),
                }
        return out

    def restore(self, data: dict[str, Any]) -> list[str]:
        """Load a `snapshot()` into the registered families whose signature still matches.

        Returns:
            Names of families in `data` that were skipped (unknown now, or redefined).
        """
        skipped = []
        for name, entry in data.items():
            fam = self.families.get(name)
            if fam is None or (
                fam.kind,
                list(fam.labelnames),
                [float(b) for b in fam.buckets],
            ) != (entry.get("kind"), entry.get("labels"), [float(b) for b in entry.get("buckets", [])]):
                skipped.append(name)
                continue
            fam.restore(entry.get("series", []))
        return skipped
