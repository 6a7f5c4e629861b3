"""Sidecar footprint: the real daemons beside an app, measured side by side in one run.

Sidecar table: the collector and mtail tail ONE file together while the benchmark appends lines at a
steady rate (idle, 100, 1,000, 10,000 lines/s); each daemon's CPU time over the window (not wall
time: this machine is shared) and its RSS, and the ratio. Both run at once, so machine noise hits
both sides of the ratio alike.

State-size table: the collector daemon holding 0 / 10k / 100k / 1M series (a rules file raising
`max_series`), then idle: its RSS, CPU over idle windows with the default checkpoint interval (the
median of 3, each read from the threads' run time in ns, not 10 ms ticks: 0.1 % of a core over 10 s
is 10 ticks), and the time of one `/metrics` scrape; plus the largest size again with `expire_after`
set (idle expiry must not read every series every tick).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from bench.daemon import Daemon
from bench.replay import MTAIL_PROG, generate

TICK = 0.01
STATE_RULES = """rules:
  - metric: bench_series_total
    type: counter
    help: One series per id (the state-size benchmark).
    match: {message: state}
    labels:
      id: {from: id}
    max_series: 2000000
"""
#: The same metric with idle expiry on (a day: nothing expires during the benchmark).
STATE_RULES_EXPIRING = STATE_RULES + "    expire_after: 86400\n"
#: Idle windows per state size (their median is the figure).
IDLE_WINDOWS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(ps: psutil.Process) -> float:
    t = ps.cpu_times()
    return t.user + t.system


def _run_time(ps: psutil.Process) -> float:
    """CPU seconds of the process's threads from the scheduler's ns counters (Linux), else ticks."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{ps.pid}/task"):
            with open(f"/proc/{ps.pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        return _cpu(ps)


def _settle(ps: psutil.Process, timeout: float = 120.0) -> None:
    """Wait until the process is quiet (under 2 % of a core over a second): the checkpoint after a
    burst of a million new series takes seconds, and must not land in the idle window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c0 = _run_time(ps)
        time.sleep(1.0)
        if _run_time(ps) - c0 < 0.02:
            return


def _mtail(log: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    exe = shutil.which("mtail")
    if exe is None:
        return None
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--progs", str(MTAIL_PROG), "--logs", str(log), "--address", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None


def _append_at(log: Path, data: list[bytes], rate: int, seconds: float) -> None:
    """Append `rate` lines/s in 10 ms ticks for `seconds` (idle when rate is 0)."""
    if rate == 0:
        time.sleep(seconds)
        return
    per_tick = rate * TICK
    start, sent, i = time.monotonic(), 0.0, 0
    with log.open("ab", buffering=0) as out:
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) / TICK * per_tick) + 1
            if due > sent:
                n = int(due - sent)
                out.write(b"".join(data[(i + k) % len(data)] for k in range(n)))
                i, sent = i + n, sent + n
            time.sleep(TICK - (time.monotonic() - start) % TICK)


#: OpenSSL refused as `collector run` refuses it when no setting needs TLS or its hashes
#: (collector/importpolicy.py): asyncio and aiohttp carry on without ssl, hashlib with its built-ins.
_NO_OPENSSL = "import sys; from collector.importpolicy import Refuse, blocked; sys.meta_path.insert(0, Refuse(blocked([])))"
_LIBS = "import asyncio, sqlite3, msgspec, yaml, watchfiles, aiohttp.web"

#: What the logs-only daemon's RSS is made of, each a process that only imports (cumulative).
RSS_FLOORS = {
    "the interpreter (`python -c pass`)": "pass",
    "+ asyncio, sqlite3, msgspec, yaml, watchfiles, OpenSSL refused": (
        f"{_NO_OPENSSL}; import asyncio, sqlite3, msgspec, yaml, watchfiles"
    ),
    "+ aiohttp.web, = the libraries alone": f"{_NO_OPENSSL}; {_LIBS}",
    "(the same with OpenSSL: ssl, _hashlib and aiohttp's default SSL contexts)": _LIBS,
}


def rss_floors() -> dict[str, float]:
    """RSS (MB) of processes that only import the daemon's libraries: what no code of ours can save."""
    out = {}
    for what, code in RSS_FLOORS.items():
        probe = f"{code}\nprint(open('/proc/self/statm').read().split()[1])"
        pages = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        out[what] = int(pages.stdout) * os.sysconf("SC_PAGE_SIZE") / 1e6
    return out


def bench_sidecar(rates: tuple[int, ...], seconds: float, workdir: Path) -> dict[str, Any]:
    """CPU % of a core and RSS of the collector and mtail tailing one file at each rate."""
    lines = generate(50_000, workdir / "genlogs-50000.log").read_bytes().splitlines(keepends=True)
    out: dict[str, Any] = {"seconds": seconds, "rows": [], "floors_rss_mb": rss_floors()}
    tmp = Path(tempfile.mkdtemp(prefix="collector-sidecar-"))
    log = tmp / "app.log"
    log.touch()
    ours = Daemon(log, tmp, env={"COLLECTOR_LOGS__START_AT": "end"})
    theirs = _mtail(log)
    try:
        ours.wait_for(0, 30)
        time.sleep(2.0)  # start-up settled
        for rate in rates:
            c0 = ours.cpu()
            m0 = _cpu(psutil.Process(theirs[0].pid)) if theirs else 0.0
            w0 = time.monotonic()
            _append_at(log, lines, rate, seconds)
            wall = time.monotonic() - w0
            row: dict[str, Any] = {
                "rate": rate,
                "collector_cpu_pct": 100 * (ours.cpu() - c0) / wall,
                "collector_rss_mb": ours.ps.memory_info().rss / 1e6,
            }
            if theirs:
                mp = psutil.Process(theirs[0].pid)
                row["mtail_cpu_pct"] = 100 * (_cpu(mp) - m0) / wall
                row["mtail_rss_mb"] = mp.memory_info().rss / 1e6
                row["cpu_ratio"] = row["collector_cpu_pct"] / max(row["mtail_cpu_pct"], 1e-9)
            out["rows"].append(row)
        out["mtail"] = "ran" if theirs else "skipped: mtail not installed (apt-get install mtail)"
    finally:
        ours.stop()
        if theirs:
            theirs[0].terminate()
            theirs[0].wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _scrape_s(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url + "/metrics", timeout=120) as resp:
        resp.read()
    return time.perf_counter() - began


def bench_state(sizes: tuple[int, ...], idle_s: float) -> dict[str, Any]:
    """The real daemon at each state size: RSS, idle CPU % (default checkpoint interval), scrape time;
    then the largest size again with `expire_after` on its metric."""
    rows = []
    runs = [(n, False) for n in sizes] + ([(max(sizes), True)] if sizes and max(sizes) else [])
    for n, expiring in runs:
        tmp = Path(tempfile.mkdtemp(prefix="collector-state-"))
        rules = tmp / "rules.yaml"
        rules.write_text(STATE_RULES_EXPIRING if expiring else STATE_RULES)
        log = tmp / "app.log"
        with log.open("wb") as f:
            for i in range(n):
                f.write(b'{"message":"state","id":"s%d"}\n' % i)
        d = Daemon(log, tmp, env={"COLLECTOR_LOGS__RULES": str(rules)})
        try:
            d.wait_for(n, 900, every=1.0)  # scraped about as often as Prometheus would, not in a spin
            time.sleep(3.0)  # the first checkpoint after the burst writes every new series
            _settle(d.ps)
            windows = []
            for _ in range(IDLE_WINDOWS):
                c0, w0 = _run_time(d.ps), time.monotonic()
                time.sleep(idle_s / IDLE_WINDOWS)
                windows.append(100 * (_run_time(d.ps) - c0) / (time.monotonic() - w0))
            scrape = min(_scrape_s(d.url) for _ in range(3))
            rows.append(
                {
                    "series": n,
                    "expire_after": expiring,
                    "rss_mb": d.ps.memory_info().rss / 1e6,
                    "idle_cpu_pct": sorted(windows)[len(windows) // 2],
                    "idle_windows_pct": windows,
                    "scrape_ms": scrape * 1000,
                }
            )
        finally:
            d.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]["rss_mb"] if rows and rows[0]["series"] == 0 else None
    for r in rows:
        if base is not None and r["series"] and not r["expire_after"]:
            r["bytes_per_series"] = (r["rss_mb"] - base) * 1e6 / r["series"]
    return {"idle_s": idle_s, "rows": rows}


if __name__ == "__main__":  # quick look: python -m bench.sidecar
    work = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    print(bench_sidecar((0, 1000), 10.0, work))
    print(bench_state((0, 100_000), 10.0))
    sys.exit(os.EX_OK)
