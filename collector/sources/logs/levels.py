"""The minimal line consumer until the rules engine lands: count app log lines by normalised `level`.

Decodes a whole batch at once with msgspec (`decode_lines`) into a Struct holding only the level
fields; only a batch containing a bad line falls back to line-by-line, so one bad line is counted and
skipped, not the batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import msgspec

from collector.logpipe import BatchResult, lenient_json, valid_utf8
from collector.metrics import MetricState

__all__ = ["LEVELS", "LevelConsumer", "normalise_level"]

#: The bounded set of `level` label values.
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "other")

_NAMES = {
    "trace": "trace",
    "silly": "trace",
    "debug": "debug",
    "verbose": "debug",
    "info": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "http": "info",
    "log": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "fatal": "fatal",
    "critical": "fatal",
    "crit": "fatal",
    "alert": "fatal",
    "emerg": "fatal",
    "emergency": "fatal",
    "panic": "fatal",
}

_LEVEL = attrgetter("level")

# Bad lines reported per batch for logging (the counts are always complete).
_MAX_BAD = 10


def normalise_level(value: Any) -> str | None:
    """Map a level field to one of `LEVELS`; None when the line has no level.

    pino/bunyan numeric levels (10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal) map by
    range, so custom levels in between land on the nearest standard level below.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _NAMES.get(value.strip().lower(), "other")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "other"
    if value < 20:
        return "trace"
    if value < 30:
        return "debug"
    if value < 40:
        return "info"
    if value < 50:
        return "warn"
    if value < 60:
        return "error"
    return "fatal"


class _Line(msgspec.Struct, gc=False):  # gc=False: no GC tracking of thousands of small objects
    level: Any = None  # winston, pino, bunyan
    severity: Any = None  # Google Cloud Logging style
    lvl: Any = None


class LevelConsumer:
    """Counts `app_log_lines_total{level}`; lines without a level field are `unmatched`.

    Args:
        metrics: where the family lives.
        log: unused for now (the tailer logs bad lines with file and offset).
        max_series: series limit of the family (the level set is bounded anyway).
    """

    def __init__(self, metrics: MetricState, log: logging.Logger, max_series: int = 10_000) -> None:
        self.family = metrics.counter(
            "app_log_lines_total",
            "App log lines by level (pino/bunyan numeric levels mapped to names).",
            ["level"],
            max_series=max_series,
        )
        self._decoder = msgspec.json.Decoder(_Line)
        # level value -> normalised name; values are bounded in practice, the cache is capped anyway
        self._cache: dict[Any, str | None] = {}

    def family_names(self) -> Sequence[str]:
        return (self.family.name,)

    def consume(self, lines: Sequence[bytes]) -> BatchResult:
        """Decode and count a batch; never raises on bad input."""
        if not lines:
            return BatchResult()
        buf = b"\n".join(lines)
        items: list[_Line] | None = None
        # msgspec skips the fields we do not decode without checking their UTF-8: check the batch here.
        if buf.isascii() or valid_utf8(buf):
            try:
                items = self._decoder.decode_lines(buf)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                items = None
            if items is not None and len(items) != len(lines):
                items = None  # decode_lines skips blank lines; they are invalid JSON here
        if items is None:
            return self._one_by_one(lines)
        return self._count(items)

    def _count(self, items: list[_Line]) -> BatchResult:
        try:
            raw_counts = Counter(map(_LEVEL, items))  # one C-level pass; distinct raw values are few
            if raw_counts.pop(None, 0):
                # Rare: lines without `level` may carry `severity` or `lvl` instead.
                raw_counts.update(_fallback(item) for item in items if item.level is None)
        except TypeError:
            # An object or array as level (unhashable): normalise line by line.
            raw_counts = Counter(normalise_level(_fallback(item)) for item in items)
        counts: dict[str, int] = {}
        unmatched = 0
        for raw, n in raw_counts.items():
            name = self._name(raw)
            if name is None:
                unmatched += n
            else:
                counts[name] = counts.get(name, 0) + n
        inc = self.family.inc
        for name, n in counts.items():
            inc((name,), n)
        return BatchResult(parsed=len(items) - unmatched, unmatched=unmatched)

    def _name(self, raw: Any) -> str | None:
        try:
            return self._cache[raw]
        except (KeyError, TypeError):
            name = normalise_level(raw)
            # bool is an int subclass (True == 1): keep it out; unhashable values are not cached.
            if len(self._cache) < 1000 and type(raw) in (str, int, float):
                self._cache[raw] = name
            return name

    def _one_by_one(self, lines: Sequence[bytes]) -> BatchResult:
        good: list[_Line] = []
        result = BatchResult()
        for i, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                result.invalid_utf8 += 1
                if len(result.bad) < _MAX_BAD:
                    result.bad.append((i, "invalid_utf8"))
                continue
            try:
                good.append(self._decoder.decode(line))
                continue
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                data = lenient_json(line)  # valid JSON msgspec refuses: lone surrogate escapes, ...
            if isinstance(data, dict):
                good.append(msgspec.convert(data, _Line))
            else:
                result.invalid_json += 1
                if len(result.bad) < _MAX_BAD:
                    result.bad.append((i, "invalid_json"))
        counted = self._count(good)
        result.parsed, result.unmatched = counted.parsed, counted.unmatched
        return result


def _fallback(item: _Line) -> Any:
    if item.level is not None:
        return item.level
    return item.severity if item.severity is not None else item.lvl
