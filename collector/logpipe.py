"""The contract between the log tailer and whatever turns log lines into metrics.

The tailer reads chunks, splits complete lines and hands them over in batches; a `LineConsumer`
decodes the batch and updates metric families in the shared `MetricState`, synchronously (no
`await`), so the tailer can advance the file offset in the same step and checkpoint offsets and
metric state together (exactly-once; see docs/design.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collector.metrics import MetricState
    from collector.settings import LogsSettings

__all__ = ["RESULTS", "BatchResult", "LineConsumer", "bad_line_reason", "build_consumer", "valid_utf8"]

#: Every line ends in exactly one of these (`too_long` is decided by the tailer, the rest by the consumer).
RESULTS = ("parsed", "unmatched", "invalid_json", "invalid_utf8", "too_long")


def valid_utf8(data: bytes) -> bool:
    """Whether `data` is valid UTF-8 (tells `invalid_utf8` from `invalid_json` for a bad line)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def bad_line_reason(line: bytes) -> str:
    """`invalid_utf8` or `invalid_json` for a line the JSON decoder refused.

    Decided from the bytes, not from the decoder's exception: msgspec up to 0.18 raised
    UnicodeDecodeError for invalid UTF-8, later releases raise DecodeError for it.
    """
    return "invalid_json" if valid_utf8(line) else "invalid_utf8"


@dataclass
class BatchResult:
    """What happened to one batch of lines."""

    parsed: int = 0  # valid JSON object that at least one rule used
    unmatched: int = 0  # valid JSON object that no rule used
    invalid_json: int = 0
    invalid_utf8: int = 0
    # (index in the batch, reason) of the first few bad lines, so the tailer can log file and offset
    bad: list[tuple[int, str]] = field(default_factory=list)

    def add(self, other: BatchResult, offset: int = 0) -> None:
        self.parsed += other.parsed
        self.unmatched += other.unmatched
        self.invalid_json += other.invalid_json
        self.invalid_utf8 += other.invalid_utf8
        self.bad.extend((i + offset, r) for i, r in other.bad)


class LineConsumer(Protocol):
    """Turns complete log lines (without their trailing newline) into metric updates."""

    def family_names(self) -> Sequence[str]:
        """Families whose state this consumer owns; the tailer checkpoints them with the offsets."""
        ...

    def consume(self, lines: Sequence[bytes]) -> BatchResult:
        """Decode and apply a batch synchronously; never raises on bad input (it is counted)."""
        ...

    # Optional: `async def run(self, stop: asyncio.Event) -> None` for background work such as
    # hot-reloading a rules file; the logs source runs it alongside the tailer when present.
    # Optional: `checkpoint_state() -> JSON-ready data` and `restore_state(data)` for state kept
    # between lines (a join's pending requests): checkpointed in the same transaction as the offsets.


def build_consumer(settings: LogsSettings, metrics: MetricState, log: logging.Logger) -> LineConsumer:
    """The consumer the logs source feeds: the rules engine for the configured presets and rules file.

    Raises:
        ValueError: the rules cannot be loaded (the message names the rule and field).
    """
    if not settings.preset and settings.rules is None:
        # Until the rules engine lands: count lines by level (app_log_lines_total{level}).
        from collector.sources.logs.levels import LevelConsumer

        return LevelConsumer(metrics, log, max_series=settings.max_series)
    from collector.rules import RuleSet  # the rules engine (issue 4): presets + rules file, hot reload

    return RuleSet(metrics, log, settings.preset, settings.rules, settings.max_series)
