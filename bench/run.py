"""The benchmark: one command, one table (see README "Performance").

    python -m bench.run            # full: 1M lines, medians of 3 runs (several minutes)
    python -m bench.run --short    # CI: small sizes, one run; checks it runs and counts agree

Every figure is measured in this run on this machine; targets are printed as PASS/FAIL. The exit code
is 1 only when a correctness check fails (counts differ, events lost); `--strict` also fails on targets.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.daemon import bench_latency, bench_throughput
from bench.replay import bench_replay
from bench.scrape import bench_memory, bench_scrape
from bench.sidecar import bench_sidecar, bench_state
from bench.slowstore import bench_slow_store
from bench.webhooks import bench_floor, bench_webhooks

FULL = dict(
    lines=1_000_000, runs=3, daemon_lines=1_000_000, latency_s=10.0, series=100_000, events=5_000,
    rates=(0, 100, 1_000, 10_000), window_s=30.0, sizes=(0, 10_000, 100_000, 1_000_000), idle_s=30.0,
    commit_delays_ms=(0, 10, 100), slow_rates=(0, 1_000), slow_s=10.0,
)  # fmt: skip
SHORT = dict(
    lines=50_000, runs=1, daemon_lines=50_000, latency_s=1.0, series=10_000, events=300,
    rates=(0, 1_000), window_s=3.0, sizes=(0, 10_000), idle_s=3.0,
    commit_delays_ms=(0, 100), slow_rates=(1_000,), slow_s=2.0,
)  # fmt: skip


def _row(rows: list[list[str]], what: str, figure: str, target: str, ok: bool | None) -> None:
    rows.append([what, figure, target, "" if ok is None else "PASS" if ok else "FAIL"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="CI mode: small sizes, one run")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed too")
    p.add_argument(
        "--only",
        default="replay,daemon,sidecar,state,scrape,slowstore,memory,webhooks",
        help="sections to run",
    )
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    p.add_argument("--workdir", type=Path, help="where generated logs are kept (default: a temp dir)")
    args = p.parse_args(argv)
    cfg = SHORT if args.short else FULL
    only = set(args.only.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="collector-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"mode": "short" if args.short else "full"}
    rows: list[list[str]] = []
    correct = True
    began = time.monotonic()

    if "replay" in only:
        r = figures["replay"] = bench_replay(cfg["lines"], cfg["runs"], workdir)
        _row(
            rows,
            f"replay {r['lines']:,} lines: collector",
            f"{r['collector_lps_cpu']:,.0f} lines/CPU-s",
            "",
            None,
        )
        if r["mtail"] == "ran":
            _row(rows, "replay: mtail --one_shot", f"{r['mtail_lps_cpu']:,.0f} lines/CPU-s", "", None)
            _row(rows, "replay: ratio collector/mtail", f"{r['ratio']:.1f}x", ">= 10x", r["ratio"] >= 10)
            _row(rows, "replay: every series' count identical", str(r["counts_identical"]), "True",
                 r["counts_identical"])  # fmt: skip
            correct &= r["counts_identical"]
        else:
            _row(rows, "replay: mtail", r["mtail"], "", None)
        _row(rows, "replay: decode floor (msgspec decode_lines, the 10 fields the rules read)",
             f"{r['lines'] / r['floor_cpu_s']:,.0f} lines/CPU-s; collector at {100 * r['floor_ratio']:.0f} %",
             ">= 75 % of the floor", r["floor_ratio"] >= 0.75)  # fmt: skip
        _row(rows, "replay: start-up on an empty file (YAML rules file)", f"{r['empty_startup_cpu_ms']:.0f} ms CPU",
             "<= 40 ms", r["empty_startup_cpu_ms"] <= 40)  # fmt: skip
        _row(rows, "replay: start-up, the same with an empty YAML cache (first run)",
             f"{r['empty_startup_cold_cpu_ms']:.0f} ms CPU", "", None)  # fmt: skip
        _row(rows, "replay: start-up, a preset instead (no YAML parser)",
             f"{r['empty_startup_preset_cpu_ms']:.0f} ms CPU", "", None)  # fmt: skip
        _row(rows, "replay: start-up floor, `python -c pass` (this venv)", f"{r['python_startup_cpu_ms']:.0f} ms CPU",
             "", None)  # fmt: skip
        ok = r["collector_lps_cpu"] >= 650_000
        _row(
            rows, "replay: collector absolute", f"{r['collector_lps_cpu']:,.0f} lines/CPU-s", ">= 650,000", ok
        )
    if "daemon" in only:
        t = figures["daemon_throughput"] = bench_throughput(cfg["daemon_lines"], workdir)
        _row(rows, f"daemon: {t['lines']:,} lines appended at once", f"{t['lines_per_s']:,.0f} lines/s "
             f"({t['lines_per_cpu_s']:,.0f}/CPU-s)", ">= 500,000 lines/s", t["lines_per_s"] >= 500_000)  # fmt: skip
        for rate in (1_000, 20_000):  # a trickle is read in batches (the read window): still visible < 1 s
            lat = figures[f"daemon_latency_{rate}"] = bench_latency(rate, cfg["latency_s"], workdir)
            _row(rows, f"daemon: write-to-/metrics at {lat['achieved_rate']:,.0f} lines/s",
                 f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms", "p99 <= 1000 ms", lat["p99_ms"] <= 1000)  # fmt: skip
    if "sidecar" in only:
        sc = figures["sidecar"] = bench_sidecar(cfg["rates"], cfg["window_s"], workdir)
        for r in sc["rows"]:
            what = "idle" if r["rate"] == 0 else f"{r['rate']:,} lines/s"
            if "mtail_cpu_pct" in r:
                figure = (f"{r['collector_cpu_pct']:.2f} % vs mtail {r['mtail_cpu_pct']:.2f} % of a core "
                          f"({r['cpu_ratio']:.2f}x); RSS {r['collector_rss_mb']:.0f} vs {r['mtail_rss_mb']:.0f} MB")  # fmt: skip
            else:
                figure = f"{r['collector_cpu_pct']:.2f} % of a core; RSS {r['collector_rss_mb']:.0f} MB"
            target, ok = "", None
            if r["rate"] == 1_000 and "cpu_ratio" in r:
                target, ok = "CPU <= mtail's", r["cpu_ratio"] <= 1.0
            _row(rows, f"sidecar ({sc['seconds']:.0f} s window): {what}", figure, target, ok)
        idle = sc["rows"][0]
        if idle["rate"] == 0:
            _row(rows, "sidecar: idle RSS, logs source only", f"{idle['collector_rss_mb']:.0f} MB", "<= 40 MB",
                 idle["collector_rss_mb"] <= 40)  # fmt: skip
            for what, mb in sc["floors_rss_mb"].items():
                _row(rows, f"sidecar: RSS floor, {what}", f"{mb:.0f} MB", "", None)
    if "state" in only:
        st = figures["state"] = bench_state(cfg["sizes"], cfg["idle_s"])
        for r in st["rows"]:
            per = f", {r['bytes_per_series']:.0f} B/series" if "bytes_per_series" in r else ""
            target, ok = "idle < 0.3 %", r["idle_cpu_pct"] < 0.3
            if r["series"] == 100_000:
                target, ok = "idle < 0.3 %, <= 100 MB", ok and r["rss_mb"] <= 100
            expiring = " and expire_after" if r.get("expire_after") else ""
            _row(rows, f"state: daemon with {r['series']:,} series{expiring}",
                 f"idle {r['idle_cpu_pct']:.2f} % of a core, RSS {r['rss_mb']:.0f} MB{per}, "
                 f"scrape {r['scrape_ms']:.0f} ms", target, ok)  # fmt: skip
    if "scrape" in only:
        s = figures["scrape"] = bench_scrape(runs=cfg["runs"] * 3 + 1)
        _row(rows, "scrape: 10k counters + 1k histograms over HTTP, every series changed", f"{s['http_ms']:.1f} ms",
             "<= 15 ms", s["http_ms"] <= 15)  # fmt: skip
        _row(rows, "scrape: the same, no series changed since the last scrape", f"{s['http_idle_ms']:.1f} ms", "",
             None)  # fmt: skip
        _row(rows, "scrape: render vs generate_latest", f"{s['render_ms']:.1f} ms vs {s['client_python_ms']:.0f} ms "
             f"= {s['ratio']:.0f}x", ">= 15x", s["ratio"] >= 15)  # fmt: skip
        _row(rows, "scrape: response size / samples", f"{s['bytes']:,} B / {s['samples']:,}", "", None)
        _row(rows, "scrape: promtool check metrics", s["promtool"], "clean", None if "skipped" in s["promtool"]
             else s["promtool"] == "clean")  # fmt: skip
        correct &= s["samples"] > 0 and (s["promtool"] == "clean" or "skipped" in s["promtool"])
    if "slowstore" in only:
        ss = figures["slowstore"] = bench_slow_store(
            cfg["commit_delays_ms"], cfg["slow_rates"], cfg["slow_s"]
        )
        for r in ss["rows"]:
            what = "idle" if r["rate"] == 0 else f"{r['rate']:,} lines/s"
            # No pile-up: a scrape waits for at most the write in flight and its own (two commits).
            bound = 3 * r["delay_ms"] + 100
            _row(rows, f"scrape, store commits +{r['delay_ms']:.0f} ms, {what}",
                 f"p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} ms; {ss['scrapers']} at once p50 "
                 f"{r['concurrent_p50_ms']:.1f} / p99 {r['concurrent_p99_ms']:.1f} ms, "
                 f"{r['writes_per_scrape']:.2f} writes/scrape", f"{ss['scrapers']} at once p99 <= {bound:.0f} ms",
                 r["concurrent_p99_ms"] <= bound)  # fmt: skip
    if "memory" in only:
        m = figures["memory"] = bench_memory(cfg["series"])
        _row(rows, f"memory: bare metric state (no daemon; see state:) with {m['series']:,} series", f"{m['rss_live_mb']:.0f} MB "
             f"(empty {m['rss_base_mb']:.0f} MB)", "<= 150 MB", m["rss_live_mb"] <= 150)  # fmt: skip
        _row(rows, "memory: RSS after they expire", f"{m['rss_after_mb']:.0f} MB", "", None)
    if "webhooks" in only:
        w = figures["webhooks"] = bench_webhooks(cfg["events"], runs=cfg["runs"])
        _row(rows, f"webhooks: {w['events']:,} signed Stripe events, 32 connections",
             f"{w['events_per_s']:,.0f} events/s ({w['events_per_server_cpu_s']:,.0f}/server-CPU-s)",
             ">= 1,500/s", w["events_per_s"] >= 1500)  # fmt: skip
        f = figures["webhooks_floor"] = bench_floor(cfg["events"], runs=cfg["runs"])
        ratio = w["events_per_server_cpu_s"] / f["events_per_server_cpu_s"]
        figures["webhooks"]["floor_ratio"] = ratio
        _row(rows, "webhooks: signature-only floor (aiohttp handler that only verifies the signature)",
             f"{f['events_per_s']:,.0f} events/s ({f['events_per_server_cpu_s']:,.0f}/server-CPU-s); "
             f"collector at {100 * ratio:.0f} % per server CPU-s", ">= 75 % of the floor", ratio >= 0.75)  # fmt: skip
        _row(rows, "webhooks: each processed exactly once", str(w["exactly_once"]), "True", w["exactly_once"])
        correct &= w["exactly_once"]

    widths = [max(len(r[i]) for r in [["what", "measured", "target", ""], *rows]) for i in range(4)]
    print(f"collector benchmark ({figures['mode']} mode, {time.monotonic() - began:.0f} s)")
    for r in [["what", "measured", "target", ""], ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    missed = any(r[3] == "FAIL" for r in rows)
    if not correct:
        print("correctness check FAILED", file=sys.stderr)
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
