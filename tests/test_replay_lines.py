"""Replay counts every line as the daemon does: one splitter (`sources/logs/lines.py`) for both.

Seeded random byte streams (CRLF and LF, blank lines, a lone CR inside a line, over-long lines, an
unterminated last line), read in chunks of random sizes, against the truth of what was generated; then
the same bytes written by random appends to a file the running collector tails.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.samples import Sample

from collector.exposition import render_document
from collector.metrics import MetricState
from collector.replay import ReplayStats, replay
from collector.rules import RuleSet
from collector.sources.logs import LogsSource
from tests.helpers import parse, serve, value
from tests.replay_streams import MAX_LINE, PRESETS, pieces, stream
from tests.sources.logtools import append, logs_settings

RESULTS = ("parsed", "unmatched", "invalid_json", "invalid_utf8", "too_long")


def _replay(path: Path) -> tuple[ReplayStats, dict[str, list[Sample]]]:
    """The replay function's counts, and the samples of the rule families it renders (as the command)."""
    metrics = MetricState(track_changes=False)
    rules = RuleSet(metrics, logging.getLogger("test.replay"), PRESETS)
    stats = replay([str(path)], rules, MAX_LINE)
    families = [metrics.families[n] for n in rules.family_names() if n in metrics.families]
    return stats, parse(render_document(families, False))


def _counts(stats: ReplayStats) -> dict[str, int]:
    r = stats.result
    return {
        "parsed": r.parsed,
        "unmatched": r.unmatched,
        "invalid_json": r.invalid_json,
        "invalid_utf8": r.invalid_utf8,
        "too_long": stats.too_long,
    }


def _kinds(counts: dict[str, int]) -> Counter[str]:
    """Results as the truth sees lines: parsed or unmatched depends on the rules, both are `ok`."""
    out = Counter({k: v for k, v in counts.items() if k not in ("parsed", "unmatched") and v})
    if counts["parsed"] + counts["unmatched"]:
        out["ok"] = counts["parsed"] + counts["unmatched"]
    return out


@pytest.mark.quick
@pytest.mark.parametrize("seed", range(40))
def test_replay_counts_each_generated_line_once_by_its_kind_whatever_the_chunk_size(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    s = stream(seed)
    # the exact reader's and the fast path's chunks: boundaries anywhere, inside CRLF and long lines
    monkeypatch.setattr("collector.replay.CHUNK", rng.choice([1, 2, 7, 100, 1000, MAX_LINE, 5000]))
    monkeypatch.setattr("collector.replay.BIG_CHUNK", rng.choice([50, 999, 4096, 1 << 20]))
    path = tmp_path / "app.log"
    path.write_bytes(s.data)
    stats, _ = _replay(path)
    assert _kinds(_counts(stats)) == s.all_kinds()
    # The end of the stream ends its last line: the same counts as with its newline written.
    path.write_bytes(s.data + (b"\n" if s.last else b""))
    again, _ = _replay(path)
    assert _counts(again) == _counts(stats)


@pytest.mark.parametrize("seed", range(4))
async def test_replay_and_the_daemon_count_the_same_lines_and_series(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1000 + seed)
    s = stream(1000 + seed, lines=400)
    replayed_path = tmp_path / "replayed.log"
    replayed_path.write_bytes(s.data)
    stats, replayed = _replay(replayed_path)
    expected = _counts(stats)
    assert _kinds(expected) == s.all_kinds()

    # The daemon reads in small chunks too (boundaries anywhere), from a file written in random pieces.
    monkeypatch.setattr("collector.sources.logs.tailer.CHUNK", rng.choice([64, 1000, 4096]))
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    settings = logs_settings(tmp_path, str(logs / "*.log"), preset=PRESETS, max_line_bytes=MAX_LINE)
    total = sum(expected.values())
    async with serve(settings, {"logs": LogsSource}) as run:
        for piece in pieces(rng, s.data + (b"\n" if s.last else b"")):
            append(log, piece)
            if rng.random() < 0.2:
                await run.metrics()  # let it read mid-line now and then
        served = await run.wait_for(
            lambda m: sum(value(m, "collector_log_lines_total", result=r) or 0 for r in RESULTS) >= total,
            timeout=30,
        )
    assert {r: int(value(served, "collector_log_lines_total", result=r) or 0) for r in RESULTS} == expected
    assert sum(sample.value for sample in replayed["http_requests_total"]) > 0
    for name, samples in replayed.items():
        assert sorted(samples, key=repr) == sorted(served[name], key=repr), name
