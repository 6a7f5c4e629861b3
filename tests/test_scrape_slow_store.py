"""Scrapes during a slow commit: they share one checkpoint write, are all served, and after a kill -9 no
scrape serves a count below one served before (the real daemon, its store writes held at a gate).

The store thread is held by `bench.slowstore --serve` (the bench's injected slow disk): a write does not
start while the gate file is absent, so "during a slow commit" is a state the test sets, not a timing.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers import REPO, CollectorProcess, parse
from tests.sources.logtools import append, level_count, lines

SCRAPERS = 8


def _count(data: Path, name: str) -> int:
    try:
        return int((data / name).read_text() or 0)
    except (OSError, ValueError):
        return 0


def _until(predicate, what: str, proc: CollectorProcess, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached; stderr: {proc.stderr()[-2000:]}")
        time.sleep(0.02)


def _read_to(proc: CollectorProcess, log: Path) -> bool:
    """The collector has read `log` to its end (status page, no scrape: a scrape would write)."""
    with urllib.request.urlopen(proc.url + "/status.json", timeout=5) as resp:
        status = json.loads(resp.read())
    size = log.stat().st_size
    rows = [r for table in status["sources"]["logs"]["tables"] for r in table.get("rows", [])]
    return any(r.get("path") == str(log) and r.get("offset") == size for r in rows if isinstance(r, dict))


def _live(proc: CollectorProcess) -> None:
    # Answered by the same loop after the scrapes sent before it were taken in (each has taken its
    # checkpoint, or is waiting for the write in flight, before the loop gets to this request).
    for _ in range(3):
        with urllib.request.urlopen(proc.url + "/health/live", timeout=5) as resp:
            resp.read()


def _burst(proc: CollectorProcess, out: list[float]) -> list[threading.Thread]:
    """SCRAPERS scrapes at once; each appends the info count it was served to `out`."""

    def scrape() -> None:
        with urllib.request.urlopen(proc.url + "/metrics", timeout=120) as resp:
            out.append(level_count(parse(resp.read().decode())))

    threads = [threading.Thread(target=scrape) for _ in range(SCRAPERS)]
    for t in threads:
        t.start()
    return threads


def test_concurrent_scrapes_during_a_slow_commit_share_one_write_and_survive_kill_9(tmp_path: Path) -> None:
    logdir, data, gate = tmp_path / "logs", tmp_path / "data", tmp_path / "gate"
    logdir.mkdir()
    log = logdir / "app.log"
    gate.touch()
    env = {
        "COLLECTOR_DATA_DIR": str(data),
        "COLLECTOR_LOGS__PATHS": str(log),
        "COLLECTOR_LOGS__START_AT": "beginning",
        # Checkpoints every 5 minutes: only the scrapes write, so every write is counted here.
        "COLLECTOR_LOGS__CHECKPOINT_INTERVAL": "300",
        # 16 scrapes held at once, all from this one address
        "COLLECTOR_HTTP__MAX_CONCURRENT_SCRAPES": "64",
        "COLLECTOR_HTTP__MAX_CLIENT_SHARE": "1",
        "PYTHONPATH": str(REPO),
        "SLOWSTORE_GATE": str(gate),
    }
    first = CollectorProcess(env, tmp_path, ("--serve", "0"), module="bench.slowstore")
    served: list[float] = []
    try:
        first.wait_live(30)
        append(log, lines(1000))
        _until(lambda: level_count(first.scrape()) == 1000, "1000 lines served", first)

        # A commit that does not end until the gate opens; 500 more lines read, then a burst of scrapes.
        gate.unlink()
        append(log, lines(500, "info", 1000))
        _until(lambda: _read_to(first, log), "the 500 lines read", first)
        queued = _count(data, "queued")
        first_burst = _burst(first, served)
        _until(lambda: _count(data, "queued") > queued, "the burst's checkpoint write queued", first)
        _live(first)
        # The first took the state and queued the write; the others wait for that write in flight
        # (a take now would only queue behind it): none queued a write of its own.
        assert _count(data, "queued") == queued + 1
        assert not served  # nothing answered before its values are durable

        # More lines while that write is held, and a second burst: every waiting scrape takes once the
        # write ends, and they share ONE write of the newer state.
        append(log, lines(250, "info", 1500))
        _until(lambda: _read_to(first, log), "the 250 lines read", first)
        second_burst = _burst(first, served)
        _live(first)
        assert _count(data, "queued") == queued + 1 and not served

        gate.touch()
        for t in first_burst + second_burst:
            t.join(60)
        # The first scrape was served what it took (1500); the 15 that waited, the state after the wait.
        assert sorted(served) == [1500.0] + [1750.0] * (2 * SCRAPERS - 1)
        assert _count(data, "queued") == queued + 2  # 16 scrapes, two writes
        first.kill()  # kill -9 right after the answers
    finally:
        if first.proc.poll() is None:
            first.kill()

    second = CollectorProcess(env, tmp_path, ("--serve", "0"), module="bench.slowstore")
    try:
        seen: list[float] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not seen or seen[-1] < 1750):
            try:
                m = second.scrape()
            except OSError:
                time.sleep(0.02)
                continue
            if "app_log_lines_total" in m:
                seen.append(level_count(m))
        assert seen and min(seen) >= max(served) == 1750  # never below a value served before the kill
        assert seen[-1] == 1750  # and nothing counted twice
        assert second.terminate() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()
