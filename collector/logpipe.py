"""The contract between the log tailer and whatever turns log lines into metrics.

The tailer reads chunks, splits complete lines and hands them over in batches; a `LineConsumer`
decodes the batch and updates metric families in the shared `MetricState`, synchronously (no
`await`), so the tailer can advance the file offset in the same step and checkpoint offsets and
metric state together (exactly-once; see docs/design.md).
"""

from __future__ import annotations

import math
import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Protocol
else:
    Protocol = object  # a Protocol for the type checker only: typing stays unloaded at run time

__all__ = [
    "NOT_JSON",
    "RESULTS",
    "BatchResult",
    "LineConsumer",
    "bad_line_reason",
    "lenient_json",
    "valid_utf8",
]

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


#: `lenient_json`'s answer for a line that is not JSON.
NOT_JSON: object = object()


def lenient_json(line: bytes) -> Any:
    """Decode a valid-UTF-8 line msgspec refused, if it is valid JSON after all (RFC 8259); else NOT_JSON.

    msgspec rejects three kinds of valid JSON: escaped lone surrogates (`"\\ud800"`, which Node's
    `JSON.stringify` writes for a string cut inside a character pair), numbers beyond a double
    (`1e400`), and nesting past its depth limit. The standard library parser accepts all three;
    lone surrogates become U+FFFD (a label value must encode as UTF-8) and out-of-range numbers
    become null (absent), never an infinite value that would poison a counter. Only called for lines
    that already failed the fast path, so its cost does not touch the hot path.
    """
    import json  # here: `collector replay` of well-formed lines never loads it

    try:
        data = json.loads(line, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return NOT_JSON
    return _fix_surrogates(data, 0)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")  # NaN, Infinity: Python accepts them, RFC 8259 does not


def _fix_surrogates(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        if value.isascii():
            return value
        return _SURROGATE.sub("\ufffd", value)
    if depth > 1000:
        return value
    if isinstance(value, dict):
        return {_fix_surrogates(k, depth): _fix_surrogates(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_surrogates(v, depth + 1) for v in value]
    return value


class BatchResult:
    """What happened to one batch of lines (a plain class: `dataclasses` costs replay's start-up)."""

    __slots__ = ("bad", "invalid_json", "invalid_utf8", "parsed", "unmatched")

    def __init__(
        self,
        parsed: int = 0,
        unmatched: int = 0,
        invalid_json: int = 0,
        invalid_utf8: int = 0,
        bad: list[tuple[int, str]] | None = None,
    ) -> None:
        self.parsed = parsed  # valid JSON object that at least one rule used
        self.unmatched = unmatched  # valid JSON object that no rule used
        self.invalid_json = invalid_json
        self.invalid_utf8 = invalid_utf8
        # (index in the batch, reason) of the first few bad lines, so the tailer can log file and offset
        self.bad: list[tuple[int, str]] = bad if bad is not None else []

    def _fields(self) -> tuple[Any, ...]:
        return (self.parsed, self.unmatched, self.invalid_json, self.invalid_utf8, self.bad)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BatchResult):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return (
            f"BatchResult(parsed={self.parsed}, unmatched={self.unmatched}, invalid_json={self.invalid_json}, "
            f"invalid_utf8={self.invalid_utf8}, bad={self.bad!r})"
        )

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
