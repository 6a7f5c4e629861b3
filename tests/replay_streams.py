"""Seeded random log byte streams with their ground truth, and the two readers that must agree on them.

A stream mixes real app log lines (the winston and app-events samples) with the lines a real log also
holds: blank lines, whitespace, broken and non-object JSON, invalid UTF-8, a lone `\\r` inside a line,
over-long lines; each line ends in `\\n` or `\\r\\n` (a Windows app), and the last may have no newline.
The truth is counted from what was generated, not by either reader. `replayed` runs the replay
function over a file; `served` writes the bytes in random pieces to a file the running collector
tails and reads `collector_log_lines_total` and the rule families from its /metrics.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.samples import Sample

from collector.exposition import render_document
from collector.metrics import MetricState
from collector.replay import ReplayStats, replay
from collector.rules import RuleSet
from tests.helpers import parse, serve, value
from tests.sources.logtools import append, logs_settings

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "logs"
PRESETS = ["winston", "app-events"]
MAX_LINE = 2048  # lines are at most half of it, or over-long by far: never near the limit
RESULTS = ("parsed", "unmatched", "invalid_json", "invalid_utf8", "too_long")
#: Read sizes for replay's exact reader and its fast path, and for the tailer (boundaries anywhere).
REPLAY_CHUNKS = (1, 2, 7, 100, 1000, MAX_LINE, 5000)
REPLAY_BIG_CHUNKS = (50, 999, 4096, 1 << 20)
TAILER_CHUNKS = (64, 1000, 4096)


def good_lines() -> list[bytes]:
    return [
        line
        for name in ("winston", "app-events")
        for line in (FIXTURES / name / "sample.log").read_bytes().split(b"\n")
        if line.strip()
    ]


@dataclass
class Stream:
    """Bytes, and what they hold: complete lines by kind, and the kind of an unterminated last line."""

    data: bytes
    kinds: Counter[str]  # ok (parsed or unmatched), invalid_json, invalid_utf8, too_long
    last: str | None  # the kind of the last line when it has no newline

    def all_kinds(self) -> Counter[str]:
        """What a reader that reads to the end counts (replay: the last line ends at the end)."""
        return self.kinds + Counter([self.last] if self.last else [])


def stream(seed: int, lines: int = 300) -> Stream:
    rng = random.Random(seed)
    good = good_lines()
    choices: list[tuple[str, bytes]] = []
    for _ in range(lines):
        roll = rng.random()
        if roll < 0.6:
            choices.append(("ok", rng.choice(good)))
        elif roll < 0.66:
            choices.append(("invalid_json", b""))
        elif roll < 0.70:
            choices.append(("invalid_json", b" \t "))
        elif roll < 0.74:
            choices.append(("invalid_json", rng.choice(good)[: rng.randrange(1, 40)]))  # cut short
        elif roll < 0.77:
            choices.append(("invalid_json", rng.choice([b"[1,2]", b'"text"', b"null", b"42"])))
        elif roll < 0.82:
            choices.append(("invalid_utf8", b'{"level":"info","message":"\xff\xfe"}'))
        elif roll < 0.87:
            # a lone CR is not a line end (tail, mtail and Promtail split on LF only): one bad line
            choices.append(("invalid_json", rng.choice(good) + b"\r" + rng.choice(good)))
        elif roll < 0.92:
            choices.append(
                ("too_long", b'{"message":"' + b"x" * rng.randrange(2 * MAX_LINE, 6 * MAX_LINE) + b'"}')
            )
        else:
            choices.append(("invalid_json", b"GET /api/videos 200 12ms (plain text)"))
    kinds: Counter[str] = Counter()
    out = []
    for i, (kind, text) in enumerate(choices):
        end = b"\r\n" if rng.random() < 0.3 else b"\n"
        if i == len(choices) - 1 and rng.random() < 0.5:
            return Stream(b"".join(out) + text, kinds, kind if text else None)
        out.append(text + end)
        kinds[kind] += 1
    return Stream(b"".join(out), kinds, None)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut at random places (a writer's appends: boundaries anywhere, inside CRLF too)."""
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 60))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def replayed(path: Path) -> tuple[dict[str, int], dict[str, list[Sample]]]:
    """The replay function's counts by result, and the samples of the rule families it renders."""
    metrics = MetricState(track_changes=False)
    rules = RuleSet(metrics, logging.getLogger("test.replay"), PRESETS)
    stats = replay([str(path)], rules, MAX_LINE)
    families = [metrics.families[n] for n in rules.family_names() if n in metrics.families]
    return counts(stats), parse(render_document(families, False))


def counts(stats: ReplayStats) -> dict[str, int]:
    r = stats.result
    return {
        "parsed": r.parsed,
        "unmatched": r.unmatched,
        "invalid_json": r.invalid_json,
        "invalid_utf8": r.invalid_utf8,
        "too_long": stats.too_long,
    }


def kinds(by_result: dict[str, int]) -> Counter[str]:
    """Results as the truth sees lines: parsed or unmatched depends on the rules, both are `ok`."""
    out = Counter({k: v for k, v in by_result.items() if k not in ("parsed", "unmatched") and v})
    if by_result["parsed"] + by_result["unmatched"]:
        out["ok"] = by_result["parsed"] + by_result["unmatched"]
    return out


async def served(
    tmp_path: Path, s: Stream, rng: random.Random, expected_lines: int
) -> tuple[dict[str, int], dict[str, list[Sample]]]:
    """Counts by result and all samples the running collector serves once it has read `s` (its last
    line terminated: the daemon waits for a newline) from a file written in random pieces."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    settings = logs_settings(tmp_path, str(logs / "*.log"), preset=PRESETS, max_line_bytes=MAX_LINE)
    async with serve(settings, {"logs": _logs_source()}) as run:
        for piece in pieces(rng, s.data + (b"\n" if s.last else b"")):
            append(log, piece)
            if rng.random() < 0.2:
                await run.metrics()  # let it read mid-line now and then
        samples = await run.wait_for(
            lambda m: (
                sum(value(m, "collector_log_lines_total", result=r) or 0 for r in RESULTS) >= expected_lines
            ),
            timeout=30,
        )
    return {r: int(value(samples, "collector_log_lines_total", result=r) or 0) for r in RESULTS}, samples


def _logs_source() -> type:
    from collector.sources.logs import LogsSource

    return LogsSource
