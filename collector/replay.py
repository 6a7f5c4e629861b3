"""`collector replay FILE...`: run the configured log rules over files once and print the exposition.

Like `mtail --one_shot`: operators try rules on a sample, the benchmark measures the pipeline. It uses
the same settings as the daemon (`COLLECTOR_LOGS__PRESET`, `COLLECTOR_LOGS__RULES`, ...); flags win.
Output is exactly what the daemon's `/metrics` shows for the rule families after reading the files.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from collector.exposition import render_document
from collector.logpipe import BatchResult, LineConsumer
from collector.metrics import MetricState
from collector.rules.decode import plain_lines
from collector.sources.logs.lines import split_lines

if TYPE_CHECKING:
    from collector.settings import LogsSettings, Settings

__all__ = [
    "LogsDefaults",
    "ReplayStats",
    "add_parser",
    "duration_warnings",
    "read_batches",
    "replay",
    "run_replay",
]

CHUNK = 1 << 20  # bytes read at a time, as the tailer does
BIG_CHUNK = 4 << 20  # the fast path's reads: fewer batches, the per-batch work amortised
EXIT_RULES = 2


@dataclass(frozen=True)
class LogsDefaults:
    """The `COLLECTOR_LOGS__*` defaults replay reads when nothing is configured, so a plain
    `collector replay --rules FILE` skips loading the settings model (tests keep them equal)."""

    preset: tuple[str, ...] = ()
    rules: Path | None = None
    max_series: int = 10_000
    max_line_bytes: int = 1024 * 1024


@dataclass
class ReplayStats:
    """What happened to every line replayed."""

    result: BatchResult = field(default_factory=BatchResult)
    too_long: int = 0  # decided here, as the tailer does

    @property
    def lines(self) -> int:
        r = self.result
        return r.parsed + r.unmatched + r.invalid_json + r.invalid_utf8 + self.too_long


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `replay` subcommand; returns its parser."""
    p = sub.add_parser("replay", help="run the log rules over files once and print the metrics")
    p.add_argument("files", nargs="*", metavar="FILE", help="log files ('-' for stdin)")
    p.add_argument("--rules", type=Path, help="rules file (default: COLLECTOR_LOGS__RULES)")
    p.add_argument(
        "--preset",
        action="append",
        help="preset name, repeatable or comma-separated (default: COLLECTOR_LOGS__PRESET)",
    )
    p.add_argument("--format", choices=("text", "openmetrics"), default="text", help="exposition format")
    p.add_argument("--check", action="store_true", help="only validate the rules; exit 0 or 2")
    p.add_argument(
        "--explain",
        type=Path,
        metavar="FILE",
        help="for each line of FILE: which rule matched, its labels and update, or why each rule did not",
    )
    p.add_argument("--explain-lines", type=int, default=50, metavar="N", help="lines --explain shows (50)")
    p.add_argument(
        "--show-compiled", action="store_true", help="print the Python code the rules compile to, then exit"
    )
    return p


class Readable(Protocol):
    """What `read_batches` reads from: a binary file, or `_Prefixed` handing one over mid-read."""

    def read(self, size: int, /) -> bytes: ...


def read_batches(fh: Readable, max_line_bytes: int, stats: ReplayStats) -> Iterator[list[bytes]]:
    """Complete lines of a stream in batches (one per chunk); over-long lines are skipped and counted.

    Split by the tailer's `split_lines`, so replay counts every line as the daemon does: lines end at
    `\n` only, a CRLF line keeps its `\r` (JSON whitespace: it decodes as its LF twin), a lone `\r` is
    part of its line, and a blank line is a line (counted `invalid_json`). The one difference: the
    last line counts even without a trailing newline, since replay reads to the end, once.
    """
    rest = b""  # the unfinished last line of the previous chunk
    skipping = False  # inside a line already counted as too long
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            break
        data = rest + chunk if rest else chunk
        split = split_lines(data, skipping, max_line_bytes)
        stats.too_long += split.too_long
        skipping = split.skipping
        rest = data[split.consumed :]
        if split.lines:
            yield split.lines
    if rest and not skipping:
        split = split_lines(rest + b"\n", False, max_line_bytes)  # the end of the stream ends its line
        stats.too_long += split.too_long
        if split.lines:
            yield split.lines


def read_buffers(fh: BinaryIO, max_line_bytes: int, stats: ReplayStats) -> Iterator[tuple[memoryview, int]]:
    """Complete lines in big chunks, unsplit: (lines joined by newlines, count).

    A chunk that may hold an over-long line, and the end of the stream, come from `read_batches`
    (as joined buffers too). Seekable files are re-read from the last line start, not concatenated.
    """
    seekable = fh.seekable()
    partial = b""
    while True:
        chunk = fh.read(BIG_CHUNK)
        if not chunk:
            break
        if partial:
            chunk, partial = partial + chunk, b""
        end = chunk.rfind(b"\n")
        count = plain_lines(chunk, end, max_line_bytes) if len(chunk) - end - 1 <= max_line_bytes else 0
        if not count:  # an over-long line, or a chunk without a newline: the exact reader takes over
            for batch in read_batches(_Prefixed(chunk, fh), max_line_bytes, stats):
                yield memoryview(b"\n".join(batch)), len(batch)
            return
        yield memoryview(chunk)[:end], count
        if seekable:
            fh.seek(end + 1 - len(chunk), io.SEEK_CUR)
        else:
            partial = chunk[end + 1 :]
    if partial:
        yield from (
            (memoryview(b"\n".join(b)), len(b))
            for b in read_batches(io.BytesIO(partial), max_line_bytes, stats)
        )


class _Prefixed:
    """A stream that returns `head` first, then the rest of `fh` (hands a stream over mid-read)."""

    def __init__(self, head: bytes, fh: BinaryIO) -> None:
        self.head, self.fh = head, fh

    def read(self, size: int) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.fh.read(size)


def replay(files: Sequence[str], rules: LineConsumer, max_line_bytes: int) -> ReplayStats:
    """Feed every file through `rules.consume` in batches; the totals per result kind."""
    totals = ReplayStats()
    fast = getattr(rules, "consume_buffer", None)
    for name in files:
        fh: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
        try:
            if fast is None:
                for batch in read_batches(fh, max_line_bytes, totals):
                    totals.result.add(rules.consume(batch))
                continue
            for buf, count in read_buffers(fh, max_line_bytes, totals):
                result = fast(buf, count)
                if result is None:  # an empty or bad line: split this chunk, as the exact reader does
                    for batch in read_batches(io.BytesIO(bytes(buf) + b"\n"), max_line_bytes, totals):
                        totals.result.add(rules.consume(batch))
                else:
                    totals.result.add(result)
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
    return totals


def duration_warnings(presets: Sequence[str], metrics: MetricState, parsed: int) -> list[str]:
    """A preset's latency histogram that stayed empty while its requests were counted: say which
    fields it looked for (the app may log its duration under another name, or not at all)."""
    from collector.rules.presets import DURATION_FIELDS

    requests = metrics.families.get("http_requests_total")
    counted = sum(requests.series.values()) if requests is not None else 0
    if not parsed or not counted:
        return []
    hist = metrics.families.get("http_request_duration_seconds")
    observed = sum(c[-2] + sum(c[:-2]) for c in hist.series.values()) if hist is not None else 0
    out = []
    for name in presets:
        fields = DURATION_FIELDS.get(name.strip().lower())
        if fields is None:
            continue
        if not fields:
            out.append(f"preset {name}: this log format carries no request duration; no latency histogram")
        elif not observed:
            out.append(
                f"preset {name}: {counted:.0f} requests counted but none had a duration field "
                f"({', '.join(fields)}): http_request_duration_seconds is empty; log one of them"
            )
    return out


def run_replay(args: argparse.Namespace, settings: Settings | None) -> int:
    """The `replay` command: exit 0, or 2 when the rules are invalid, 1 when a file cannot be read.

    `settings` is None when no setting is configured (see `LogsDefaults`).
    """
    from collector.rules import RulesError, RuleSet

    logs: LogsSettings | LogsDefaults = LogsDefaults()
    if settings is not None:  # the settings models are imported only when there are settings
        from collector.settings import LogsSettings

        logs = settings.section("logs", LogsSettings)
    presets = (
        [p.strip() for v in args.preset for p in v.split(",") if p.strip()] if args.preset else logs.preset
    )
    rules_path = args.rules if args.rules is not None else logs.rules
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="collector: %(message)s")
    metrics = MetricState(track_changes=False)  # nothing is checkpointed: skip change tracking
    try:
        ruleset = RuleSet(
            metrics, logging.getLogger("collector.replay"), presets, rules_path, logs.max_series
        )
    except RulesError as exc:
        for line in exc.errors:
            print(f"collector: {line}", file=sys.stderr)
        return EXIT_RULES
    if args.check:
        rules = ruleset._compiled.plan.rules
        print(f"rules OK: {len(rules)} rules, {len(ruleset._compiled.families)} metrics")
        return 0
    if args.show_compiled or args.explain is not None:
        from collector.rules.explain import explain, show_compiled

        if args.show_compiled:
            print(show_compiled(ruleset._compiled))
        if args.explain is not None:
            try:
                data = args.explain.read_bytes()
            except OSError as exc:
                print(f"collector: cannot read {args.explain}: {exc.strerror}", file=sys.stderr)
                return 1
            for text in explain(ruleset._compiled, data.split(b"\n"), args.explain_lines, time.time()):
                print(text)
        if not args.files:
            return 0
    if not args.files:
        print("collector: replay needs at least one FILE (or --check)", file=sys.stderr)
        return EXIT_RULES
    began = time.perf_counter()
    try:
        totals = replay(args.files, ruleset, logs.max_line_bytes)
    except OSError as exc:
        print(f"collector: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - began
    openmetrics = args.format == "openmetrics"
    families = [metrics.families[n] for n in ruleset.family_names() if n in metrics.families]
    sys.stdout.write(render_document(families, openmetrics))
    r, lines = totals.result, totals.lines
    for warning in duration_warnings(presets, metrics, r.parsed):
        print(f"collector: warning: {warning}", file=sys.stderr)
    print(
        f"collector: replayed {lines} lines in {elapsed:.3f} s ({lines / elapsed if elapsed else 0:,.0f} lines/s): "
        f"parsed {r.parsed}, unmatched {r.unmatched}, invalid_json {r.invalid_json}, "
        f"invalid_utf8 {r.invalid_utf8}, too_long {totals.too_long}",
        file=sys.stderr,
    )
    return 0
