"""Scrapes under a slow disk: `/metrics` latency when every store commit takes 0 / 10 / 100 ms longer.

Since issue 15 each scrape first makes the logs state it serves durable (a checkpoint write on the store
thread) and answers after that write committed. This runs the real daemon (`python -m bench.slowstore
--serve DELAY_MS` is `python -m collector` with every store write slowed by DELAY_MS on the store
thread, the injected fault) tailing one file, idle or at 1,000 lines/s, and scrapes it two ways:

- one scraper, a scrape every 50 ms: p50 / p99 latency;
- 8 scrapers at once (several Prometheus replicas, a dashboard, a federation): p50 / p99, and how many
  store writes the logs source queued per scrape (writes are counted by the injected wrapper in
  `<data>/writes`).

Scrapes that arrive while a checkpoint write is in flight share the next write (`Checkpointer` in
`collector/sources/logs/source.py`): latency stays near two commits however many scrape at once, and
writes stay near one per commit instead of one per scrape.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.daemon import Daemon
from bench.replay import generate
from bench.sidecar import _append_at

SCRAPERS = 8


def _serve(delay_ms: float) -> None:
    """The collector with every store write slowed by `delay_ms` (an injected slow disk).

    Also, for tests: with `SLOWSTORE_GATE=<path>`, a write does not start while that file is absent
    (a commit that takes as long as the test wants); `<data>/writes` counts the writes started,
    `<data>/queued` the logs checkpoint writes queued (on the loop, when a take queued one).
    """
    from collector import store
    from collector.cli import main

    delay = delay_ms / 1000
    data = Path(os.environ["COLLECTOR_DATA_DIR"])
    data.mkdir(parents=True, exist_ok=True)
    gate = Path(os.environ["SLOWSTORE_GATE"]) if os.environ.get("SLOWSTORE_GATE") else None
    counts = {"writes": 0, "queued": 0}
    original_call, original_submit = store.StateStore._call, store.StateStore.submit
    slowed = {store._chained, store._in_transaction}

    def count(name: str) -> None:
        counts[name] += 1
        (data / name).write_text(str(counts[name]))

    def call(self: store.StateStore, fn: Any, args: tuple[Any, ...]) -> Any:
        if fn in slowed:
            while gate is not None and not gate.exists():
                time.sleep(0.005)
            count("writes")
        result = original_call(self, fn, args)
        if fn in slowed and delay:
            time.sleep(delay)  # the commit returned, but the disk kept the thread this long
        return result

    def submit(self: store.StateStore, fn: Any, *args: Any) -> Any:
        if fn is store._chained:
            count("queued")
        return original_submit(self, fn, *args)

    store.StateStore._call = call  # type: ignore[method-assign]
    store.StateStore.submit = submit  # type: ignore[method-assign]
    sys.exit(main([]))


def _writes(data: Path) -> int:
    try:
        return int((data / "writes").read_text() or 0)
    except (OSError, ValueError):
        return 0


def _scrape_ms(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        resp.read()
    return (time.perf_counter() - began) * 1e3


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _run(delay_ms: float, rate: int, seconds: float, lines: list[bytes]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="collector-slowstore-"))
    log = tmp / "app.log"
    log.touch()
    daemon = Daemon(
        log,
        tmp,
        env={
            "COLLECTOR_LOGS__START_AT": "end",
            "COLLECTOR_HTTP__MAX_CLIENT_SHARE": "1",  # the scrapers share one address
        },
        argv=("-m", "bench.slowstore", "--serve", str(delay_ms)),
    )
    proc, url = daemon.proc, f"{daemon.url}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _scrape_ms(url)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("collector did not start") from None
                time.sleep(0.05)
        writer = threading.Thread(target=_append_at, args=(log, lines, rate, seconds * 2 + 1), daemon=True)
        writer.start()
        time.sleep(0.5)
        # one scraper
        single: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            single.append(_scrape_ms(url))
            time.sleep(0.05)
        # several at once
        many: list[float] = []
        w0, n0 = _writes(tmp), 0
        end = time.monotonic() + seconds

        def scraper() -> None:
            nonlocal n0
            while time.monotonic() < end:
                many.append(_scrape_ms(url))
                n0 += 1

        threads = [threading.Thread(target=scraper) for _ in range(SCRAPERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        writes = _writes(tmp) - w0
        writer.join()
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "delay_ms": delay_ms,
        "rate": rate,
        "p50_ms": statistics.median(single),
        "p99_ms": _pct(single, 0.99),
        "concurrent_p50_ms": statistics.median(many),
        "concurrent_p99_ms": _pct(many, 0.99),
        "concurrent_scrapes": n0,
        "writes_per_scrape": writes / max(n0, 1),
    }


def bench_slow_store(
    delays_ms: tuple[float, ...] = (0, 10, 100), rates: tuple[int, ...] = (0, 1000), seconds: float = 5.0
) -> dict[str, Any]:
    """Scrape latency (one scraper, then 8 at once) at each commit delay, idle and at each rate."""
    workdir = Path(tempfile.mkdtemp(prefix="collector-slowstore-lines-"))
    try:
        lines = generate(20_000, workdir / "lines.log").read_bytes().splitlines(keepends=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": [_run(d, r, seconds, lines) for d in delays_ms for r in rates], "scrapers": SCRAPERS}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slowstore", description=__doc__.splitlines()[0])
    p.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    if args.serve is not None:
        _serve(args.serve)
        return
    out = bench_slow_store(seconds=args.seconds)
    print(
        f"{'delay':>6} {'lines/s':>8} {'p50':>8} {'p99':>8} {'8x p50':>8} {'8x p99':>8} {'writes/scrape':>14}"
    )
    for r in out["rows"]:
        print(
            f"{r['delay_ms']:>4.0f}ms {r['rate']:>8} {r['p50_ms']:>6.1f}ms {r['p99_ms']:>6.1f}ms "
            f"{r['concurrent_p50_ms']:>6.1f}ms {r['concurrent_p99_ms']:>6.1f}ms {r['writes_per_scrape']:>14.2f}"
        )


if __name__ == "__main__":
    main()
