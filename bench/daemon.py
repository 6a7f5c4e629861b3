"""Daemon benchmark: the real `python -m collector` tailing a file the benchmark appends to.

Throughput: append N lines as fast as possible, then wait until `/metrics` counts all of them.
Latency: append at a steady rate in 10 ms ticks while scraping `/metrics` continuously; a line's delay
is the time from its write to the first scrape whose `collector_log_lines_total` includes it.
"""

from __future__ import annotations

import bisect
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.replay import RULES, generate

TICK = 0.01  # seconds between appends in the latency run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """The collector tailing one log file with the benchmark rules."""

    def __init__(
        self,
        log: Path,
        data: Path,
        env: dict[str, str] | None = None,
        argv: tuple[str, ...] = ("-m", "collector"),
    ) -> None:
        self.port = _free_port()
        overrides = env
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        env.update(
            COLLECTOR_LISTEN=f"127.0.0.1:{self.port}",
            COLLECTOR_DATA_DIR=str(data),
            COLLECTOR_LOGS__PATHS=str(log),
            COLLECTOR_LOGS__START_AT="beginning",
            COLLECTOR_LOGS__RULES=str(RULES),
            COLLECTOR_LOG_LEVEL="WARNING",
        )
        env.update(overrides or {})
        self.stderr = (data / "collector.stderr").open("wb")
        self.proc = subprocess.Popen([sys.executable, *argv], env=env, stderr=self.stderr)
        self.ps = psutil.Process(self.proc.pid)
        self.url = f"http://127.0.0.1:{self.port}"

    def lines(self) -> int:
        """Lines the collector has counted, from `collector_log_lines_total` (-1 before it serves)."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                body = resp.read()
        except OSError:
            return -1
        total = 0.0
        for line in body.split(b"\n"):
            if line.startswith(b"collector_log_lines_total{"):
                total += float(line.rsplit(b" ", 1)[1])
        return int(total)

    def wait_for(self, count: int, timeout: float, every: float = 0.005) -> float:
        """Poll every `every` seconds until `count` lines are visible; the monotonic time they were."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited {self.proc.returncode}")
            if self.lines() >= count:
                return time.monotonic()
            time.sleep(every)
        raise RuntimeError(f"only {self.lines()} of {count} lines visible after {timeout} s")

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


@contextmanager
def daemon() -> Iterator[tuple[Daemon, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    log = tmp / "app.log"
    log.touch()
    d = Daemon(log, tmp)
    try:
        d.wait_for(0, 30)
        yield d, log
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_throughput(lines: int, workdir: Path) -> dict[str, Any]:
    """Sustained lines/s from the first append until `/metrics` shows every line; CPU of the daemon."""
    data = generate(lines, workdir / f"genlogs-{lines}.log").read_bytes()
    with daemon() as (d, log):
        cpu0 = d.cpu()
        began = time.monotonic()
        with log.open("ab", buffering=0) as out:
            step = 4 << 20
            for i in range(0, len(data), step):
                out.write(data[i : i + step])
        written = time.monotonic()
        done = d.wait_for(lines, 600)
        cpu = d.cpu() - cpu0
    elapsed = done - began
    return {
        "lines": lines,
        "write_s": written - began,
        "elapsed_s": elapsed,
        "lines_per_s": lines / elapsed,
        "daemon_cpu_s": cpu,
        "lines_per_cpu_s": lines / cpu if cpu else 0.0,
    }


def bench_latency(rate: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """p50/p99 write-to-visible delay at a steady `rate` lines/s (10 ms ticks)."""
    per_tick = max(1, int(rate * TICK))
    ticks = int(seconds / TICK)
    data = generate(per_tick * ticks, workdir / f"genlogs-{per_tick * ticks}.log").read_bytes()
    chunks, pos = [], 0
    for _ in range(ticks):  # the file cut into per-tick pieces of whole lines
        end = pos
        for _ in range(per_tick):
            end = data.index(b"\n", end) + 1
        chunks.append(data[pos:end])
        pos = end
    import threading

    written: list[tuple[int, float]] = []  # (cumulative lines after this write, monotonic write time)
    seen: list[tuple[float, int]] = []  # (monotonic scrape time, lines visible)
    with daemon() as (d, log):
        stop = threading.Event()

        def scraper() -> None:
            while not stop.is_set():
                n = d.lines()
                seen.append((time.monotonic(), n))

        t = threading.Thread(target=scraper, daemon=True)
        t.start()
        with log.open("ab", buffering=0) as out:
            start = time.monotonic()
            for i, chunk in enumerate(chunks):
                out.write(chunk)
                written.append(((i + 1) * per_tick, time.monotonic()))
                delay = start + (i + 1) * TICK - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            achieved = per_tick * ticks / (time.monotonic() - start)
        d.wait_for(per_tick * ticks, 60)
        time.sleep(0.05)
        stop.set()
        t.join()
    times = [s[0] for s in seen]
    counts = [s[1] for s in seen]
    delays = []
    for total, at in written:
        j = bisect.bisect_left(times, at)  # first scrape started after the write...
        while j < len(seen) and counts[j] < total:
            j += 1
        if j < len(seen):
            delays.append(times[j] - at)  # ...that shows every line of it (times are scrape ends)
    delays.sort()
    q = statistics.quantiles(delays, n=100)
    return {
        "rate": rate,
        "achieved_rate": achieved,
        "samples": len(delays),
        "scrapes": len(seen),
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": delays[-1] * 1000,
    }
