"""The logs checkpoint, written incrementally: the offsets document always, metric series only when changed.

Version 2 keeps one kv document (offsets, fingerprints, patterns and the signature of every
checkpointed family) and one `series` row per metric series. A checkpoint writes the document and the
rows of the series that changed since the last one (`Family.take_changes`) in ONE store transaction,
so offsets and counts stay exactly-once; when neither changed it writes nothing, so an idle collector
pays nothing for its state size. Version 1 (one JSON document holding every series) is still read: its
counts are restored and the first checkpoint rewrites them as version 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from collector.metrics import HISTOGRAM, Family, MetricState
from collector.store import SeriesDelta

__all__ = ["CHECKPOINT_VERSION", "Checkpointer", "Pending", "Restored", "decode_row"]

CHECKPOINT_VERSION = 2
_encode = msgspec.json.encode


@dataclass
class Pending:
    """One checkpoint taken between two steps, to be written in one transaction."""

    doc: bytes
    delta: SeriesDelta
    written: dict[str, Family | None]  # what the store holds once this commits


@dataclass
class Restored:
    """What a checkpoint gave back."""

    streams: list[dict[str, Any]]
    patterns: list[str]
    skipped: list[str] = field(default_factory=list)  # families whose definition changed


def _scalar(value: float) -> Any:
    # JSON has no infinities or NaN (msgspec would write null): spell them, float() reads them back
    return value if value - value == 0 else repr(float(value))


def _encoded(
    taken: list[tuple[str, bool, list[tuple[str, ...]], list[Any]]],
) -> Iterator[tuple[str, str, str]]:
    for name, hist, ks, vs in taken:
        for k, v in zip(ks, vs, strict=True):
            if hist:
                yield name, _encode(list(k)).decode(), _encode([*v[:-1], _scalar(v[-1])]).decode()
            else:
                yield name, _encode(list(k)).decode(), _encode(_scalar(v)).decode()


def decode_row(family: str, key: str, value: str) -> tuple[str, tuple[str, ...], Any]:
    """A stored row back as (family, label values, value); run on the store thread at restore."""
    return family, tuple(msgspec.json.decode(key)), msgspec.json.decode(value)


def _number(value: Any) -> float:
    return value if type(value) is int else float(value)  # float() reads "inf", "nan" of _scalar


def _signature(fam: Family) -> dict[str, Any]:
    return {"kind": fam.kind, "labels": list(fam.labelnames), "buckets": list(fam.buckets)}


def _matches(fam: Family, entry: Any) -> bool:
    return isinstance(entry, dict) and (
        fam.kind,
        list(fam.labelnames),
        [float(b) for b in fam.buckets],
    ) == (entry.get("kind"), entry.get("labels"), [float(b) for b in entry.get("buckets", [])])


class Checkpointer:
    """Takes checkpoints of some families of `metrics` as deltas against what the store holds.

    Args:
        metrics: the metric state the families live in.
    """

    def __init__(self, metrics: MetricState) -> None:
        self.metrics = metrics
        # family name -> the Family object whose series the store holds (None: rows of a family that
        # no longer matches; dropped at the next checkpoint). A name missing here is written whole.
        self.written: dict[str, Family | None] = {}
        self.last_doc: bytes | None = None  # the document the store holds

    def take(
        self,
        names: Iterable[str],
        streams: list[dict[str, Any]],
        patterns: list[str],
        consumer: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> Pending | None:
        """The checkpoint of this instant (no await here), or None when the store already holds it.

        `consumer` is JSON-ready state the line consumer keeps between lines (a join's pending
        requests); it is part of the document, so it is written whenever it changed.
        """
        delta = SeriesDelta()
        written: dict[str, Family | None] = {}
        signatures: dict[str, Any] = {}
        # Values are taken now (histogram cells copied: the loop keeps updating them) and encoded
        # on the store thread: the loop pays one reference per changed series, and no encoded copy
        # of a large family is ever whole in memory.
        taken: list[tuple[str, bool, list[tuple[str, ...]], list[Any]]] = []  # name, histogram, keys, values
        count = 0
        for name in names:
            fam = self.metrics.families.get(name)
            if fam is None or name in written:
                continue
            written[name] = fam
            signatures[name] = _signature(fam)
            rewrite, keys = fam.take_changes()
            series, hist = fam.series, fam.kind == HISTOGRAM
            if rewrite or self.written.get(name) is not fam:
                delta.drop.append(name)
                # two flat lists (8 bytes a series each), not a tuple per series
                ks, vs = list(series), [v[:] for v in series.values()] if hist else list(series.values())
            else:
                ks, vs = [], []
                for k in keys:
                    v = series.get(k)
                    if v is None:
                        delta.delete.append((name, _encode(list(k)).decode()))
                    else:
                        ks.append(k)
                        vs.append(v[:] if hist else v)
            if ks:
                taken.append((name, hist, ks, vs))
                count += len(ks)
        delta.drop += [name for name in self.written if name not in written]
        delta.upsert, delta.upserts = _encoded(taken), count
        doc = _encode(
            {
                "version": CHECKPOINT_VERSION,
                "patterns": patterns,
                "streams": streams,
                "families": signatures,
                "consumer": consumer,
                **(extra or {}),  # the tailer's pending and closed streams (issue 15)
            }
        )
        if not delta and doc == self.last_doc:
            return None
        return Pending(doc, delta, written)

    def committed(self, pending: Pending) -> None:
        self.written, self.last_doc = pending.written, pending.doc

    def failed(self, pending: Pending) -> None:
        """The write failed (its changes were taken): the next checkpoint rewrites every family, and
        drops every family the store may still hold rows of."""
        self.written = dict.fromkeys([*self.written, *pending.written])
        self.last_doc = None

    # -- restore ----------------------------------------------------------------------------------
    def restore(self, data: dict[str, Any], rows: list[tuple[str, tuple[str, ...], Any]] | None) -> Restored:
        """Load a decoded checkpoint document (and, for version 2, its series rows) into the families.

        Raises:
            ValueError: unknown version or malformed content (the caller starts afresh).
        """
        version = data.get("version")
        if version == 1:
            skipped = self.metrics.restore(data.get("metrics", {}))  # families stay "rewrite": migrated
            return Restored(list(data.get("streams", [])), list(data.get("patterns", [])), skipped)
        if version != CHECKPOINT_VERSION:
            raise ValueError(f"unknown checkpoint version {version!r}")
        by_family: dict[str, list[tuple[tuple[str, ...], Any]]] = {}
        for family, key, value in rows or []:
            by_family.setdefault(family, []).append((key, value))
        skipped = []
        for name, entry in dict(data.get("families", {})).items():
            fam = self.metrics.families.get(name)
            if fam is None or not _matches(fam, entry):
                skipped.append(name)
                self.written[name] = None  # its rows go at the next checkpoint
                continue
            _load(fam, by_family.get(name, []))
            fam.mark_saved()
            self.written[name] = fam
        return Restored(list(data.get("streams", [])), list(data.get("patterns", [])), skipped)


def _load(fam: Family, rows: list[tuple[tuple[str, ...], Any]]) -> None:
    fam.clear()
    width = len(fam.buckets) + 2
    series = fam.series
    for key, value in rows:
        if len(key) != len(fam.labelnames):
            raise ValueError(f"{fam.name}: stored series {key!r} does not match its labels")
        if fam.kind == HISTOGRAM:
            if not isinstance(value, list) or len(value) != width:
                raise ValueError(f"{fam.name}: stored histogram series {key!r} is malformed")
            series[key] = [int(c) for c in value[:-1]] + [_number(value[-1])]
        else:
            series[key] = _number(value)
    fam.touch()
