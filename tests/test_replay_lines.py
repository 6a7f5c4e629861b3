"""Replay counts every line as the daemon does: one splitter (`sources/logs/lines.py`) for both.

Seeded random byte streams (CRLF and LF, blank lines, a lone CR inside a line, over-long lines, an
unterminated last line), read in chunks of random sizes, against the truth of what was generated; then
the same bytes written by random appends to a file the running collector tails. The long run:
`.venv/bin/python -m tests.campaign_replay_lines --seeds 500`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.replay_streams import (
    REPLAY_BIG_CHUNKS,
    REPLAY_CHUNKS,
    TAILER_CHUNKS,
    good_lines,
    kinds,
    replayed,
    served,
    stream,
)


@pytest.mark.quick
@pytest.mark.parametrize("seed", range(24))
def test_replay_counts_each_generated_line_once_by_its_kind_whatever_the_chunk_size(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    s = stream(seed)
    # the exact reader's and the fast path's chunks: boundaries anywhere, inside CRLF and long lines
    monkeypatch.setattr("collector.replay.CHUNK", rng.choice(REPLAY_CHUNKS))
    monkeypatch.setattr("collector.replay.BIG_CHUNK", rng.choice(REPLAY_BIG_CHUNKS))
    path = tmp_path / "app.log"
    path.write_bytes(s.data)
    got, _ = replayed(path)
    assert kinds(got) == s.all_kinds()
    # The end of the stream ends its last line: the same counts as with its newline written.
    path.write_bytes(s.data + (b"\n" if s.last else b""))
    assert replayed(path)[0] == got


@pytest.mark.parametrize("seed", range(4))
async def test_replay_and_the_daemon_count_the_same_lines_and_series(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1000 + seed)
    s = stream(1000 + seed, lines=400)
    path = tmp_path / "replayed.log"
    path.write_bytes(s.data)
    expected, replayed_samples = replayed(path)
    assert kinds(expected) == s.all_kinds()
    assert sum(sample.value for sample in replayed_samples["http_requests_total"]) > 0
    # The daemon reads in small chunks too (boundaries anywhere), from a file written in random pieces.
    monkeypatch.setattr("collector.sources.logs.tailer.CHUNK", rng.choice(TAILER_CHUNKS))
    by_result, samples = await served(tmp_path, s, rng, sum(expected.values()))
    assert by_result == expected
    for name, family in replayed_samples.items():
        assert sorted(family, key=repr) == sorted(samples[name], key=repr), name


@pytest.mark.quick
def test_a_crlf_log_counts_and_labels_exactly_as_its_lf_twin(tmp_path: Path) -> None:
    # A Windows app ends lines with CRLF: the CR is JSON whitespace, so the same lines and series.
    lf = b"".join(line + b"\n" for line in good_lines() * 20) + b"\n" + b"{broken\n"
    (tmp_path / "lf.log").write_bytes(lf)
    (tmp_path / "crlf.log").write_bytes(lf.replace(b"\n", b"\r\n"))
    lf_counts, lf_samples = replayed(tmp_path / "lf.log")
    assert replayed(tmp_path / "crlf.log") == (lf_counts, lf_samples)
    assert lf_counts["invalid_json"] == 2 and lf_counts["parsed"] > 0  # the blank line and {broken
