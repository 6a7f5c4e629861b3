"""The benchmark's short mode runs end to end and its correctness checks hold (never its timings)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import run
from bench.replay import compare, series

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.quick
def test_bench_inputs_are_verbatim_copies_of_the_shared_ones() -> None:
    shared = ROOT.parent / "shared" / "bench"
    if not shared.is_dir():
        pytest.skip("shared/bench not beside the repository")
    for name in ("genlogs.py", "app.mtail"):
        assert (ROOT / "bench" / name).read_bytes() == (shared / name).read_bytes()


@pytest.mark.quick
def test_mtail_names_are_mapped_to_the_catalog_names() -> None:
    ours = series(
        '# TYPE http_requests_total counter\nhttp_requests_total{method="GET",status_code="200"} 3\n'
    )
    theirs = series(
        '# TYPE http_requests_total counter\nhttp_requests_total{method="GET",prog="app.mtail",status="200"} 3\n',
        mtail=True,
    )
    assert compare(ours, theirs) == []
    theirs[next(iter(theirs))] = 4.0
    (diff,) = compare(ours, theirs)
    assert diff.startswith("http_requests_total{'method': 'GET', 'status_code': '200'}: collector 3")


def test_short_mode_runs_and_every_count_agrees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    assert run.main(["--short", "--workdir", str(tmp_path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "collector benchmark (short mode" in table
    figures = json.loads(out.read_text())
    replay = figures["replay"]
    assert replay["lines"] == 50_000
    assert replay["http_requests"] == 39_953  # genlogs.py is deterministic
    if shutil.which("mtail"):
        assert replay["counts_identical"] is True, replay["diffs"]
    else:
        assert replay["mtail"].startswith("skipped")
    assert figures["scrape"]["samples"] >= 10_000 + 1_000 * 14  # + the self-metrics
    assert figures["daemon_latency_1000"]["samples"] > 0 and figures["daemon_latency_20000"]["samples"] > 0
    assert [r["rate"] for r in figures["sidecar"]["rows"]] == [0, 1_000]
    state = {r["series"]: r for r in figures["state"]["rows"]}
    assert set(state) == {0, 10_000} and all(r["rss_mb"] > 0 for r in state.values())
    slow = figures["slowstore"]["rows"]
    assert [(r["delay_ms"], r["rate"]) for r in slow] == [(0, 1_000), (100, 1_000)]
    assert all(r["concurrent_scrapes"] > 0 and r["p99_ms"] > 0 for r in slow)
    webhooks = figures["webhooks"]
    assert (webhooks["processed"], webhooks["payments"], webhooks["duplicates"]) == (300, 300, 30)
    assert webhooks["exactly_once"] is True
