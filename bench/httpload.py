"""Loopback load test of the HTTP face: slow-body clients and a wrong-password flood at once, against the
real `collector` process, while a prober measures `/health/live` and an authenticated `/metrics`.

- slow bodies: each client sends a webhook POST head announcing 10 kB, then one body byte a second,
  until the server answers or closes; then it waits a second and starts again (from one of 100 loopback
  source addresses, 127.0.1.x, so per-client fairness is not what saves the day).
- flood: each client sends `GET /metrics` with a random wrong basic-auth password (never cached, so each
  one asks for bcrypt), waits for the answer, and sends the next (from 127.0.2.x).
- the prober (its own process, 127.0.0.1) opens a new connection per request like kubelet, alternating
  `/health/live` and `/metrics` with the right password, every `--interval` seconds.

    python bench/httpload.py                                   # 500 slow + 70 flood, 30 s
    python bench/httpload.py --slow 60 --flood 20 --duration 6   # the suite's size

Prints one JSON report (latency percentiles per route, statuses, the server's rejection counters);
exits 0 when every probe answered 200, 1 otherwise. Loopback only; bounded by --duration.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import random
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "load-test-password"
TOKEN = "load-test-deploy-token"


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: 500 clients and their server side need > 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the load (its own process) ------------------------------------------------------------------------


async def _slow_client(port: int, source: str, stop: float, counts: dict[str, int]) -> None:
    head = (
        b"POST /deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 10000\r\n\r\n"
    )
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            counts["connect_error"] = counts.get("connect_error", 0) + 1
            await asyncio.sleep(1)
            continue
        counts["connections"] = counts.get("connections", 0) + 1
        try:
            writer.write(head)
            answer = asyncio.ensure_future(reader.readline())
            while time.monotonic() < stop and not answer.done():
                writer.write(b" ")
                await asyncio.wait({answer}, timeout=1.0)
            if answer.done() and not answer.exception():
                line = answer.result()
                key = line.split()[1].decode() if len(line.split()) > 1 else "closed"
                counts[key] = counts.get(key, 0) + 1
            else:
                answer.cancel()
        except OSError:
            counts["reset"] = counts.get("reset", 0) + 1
        finally:
            writer.close()
        await asyncio.sleep(1)


async def _flood_client(port: int, source: str, stop: float, counts: dict[str, int]) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            counts["connect_error"] = counts.get("connect_error", 0) + 1
            await asyncio.sleep(0.1)
            continue
        try:
            while time.monotonic() < stop:
                creds = base64.b64encode(f"prometheus:{secrets.token_hex(8)}".encode()).decode()
                writer.write(
                    f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {creds}\r\n\r\n".encode()
                )
                status = await reader.readline()
                if not status:
                    break
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                key = status.split()[1].decode()
                counts[key] = counts.get(key, 0) + 1
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            counts["reset"] = counts.get("reset", 0) + 1
        finally:
            writer.close()


async def run_load(port: int, slow: int, flood: int, duration: float) -> dict[str, Any]:
    stop = time.monotonic() + duration
    slow_counts: dict[str, int] = {}
    flood_counts: dict[str, int] = {}
    tasks = [
        asyncio.ensure_future(_slow_client(port, f"127.0.1.{1 + i % 100}", stop, slow_counts))
        for i in range(slow)
    ]
    tasks += [
        asyncio.ensure_future(_flood_client(port, f"127.0.2.{1 + i % 200}", stop, flood_counts))
        for i in range(flood)
    ]
    if tasks:
        await asyncio.wait(tasks, timeout=duration + 15)
    for t in tasks:
        t.cancel()
    return {"slow_bodies": slow_counts, "flood": flood_counts}


# -- the prober and the orchestration ------------------------------------------------------------------


def probe(port: int, path: str, headers: dict[str, str]) -> tuple[int, float]:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return status, time.perf_counter() - began


def start_collector(tmp: Path, port: int, cost: int) -> subprocess.Popen[bytes]:
    import bcrypt

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost)).decode()
    (tmp / "web.yml").write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        COLLECTOR_LISTEN=f"127.0.0.1:{port}",
        COLLECTOR_DATA_DIR=str(tmp / "data"),
        COLLECTOR_WEB_CONFIG_FILE=str(tmp / "web.yml"),
        COLLECTOR_DEPLOYMENTS__TOKEN=TOKEN,
        COLLECTOR_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "collector"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "collector.stderr", "wb"),
        preexec_fn=raise_fd_limit,
    )


def wait_live(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe(port, "/health/live", {})[0] == 200:
            return
        time.sleep(0.05)
    raise SystemExit("collector did not come up")


def rejected(port: int, auth: dict[str, str]) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics", headers=auth)
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "collector_http_rejected_total" and s.value:
                out[s.labels["reason"]] = s.value
            elif s.name == "collector_http_auth_checks_total" and s.value:
                out["auth_" + s.labels["result"]] = s.value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slow", type=int, default=500, help="slow-body clients")
    p.add_argument("--flood", type=int, default=70, help="wrong-password clients")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between probes")
    p.add_argument("--cost", type=int, default=10, help="bcrypt cost of the scraper's hash")
    p.add_argument(
        "--load-nice",
        type=int,
        default=10,
        help="niceness of the load process (it models remote clients; 0: compete with the server as equals)",
    )
    p.add_argument("--role", choices=["main", "load"], default="main", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    limits = raise_fd_limit()
    if args.role == "load":
        if args.load_nice:
            # The clients stand in for remote attackers: their CPU would not be the server's to share.
            os.nice(args.load_nice)
        print(json.dumps(asyncio.run(run_load(args.port, args.slow, args.flood, args.duration))))
        return 0
    need = 2 * (args.slow + args.flood) + 100
    if limits[0] < need:
        print(f"RLIMIT_NOFILE {limits[0]} < {need}: raise `ulimit -n`", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="httpload-") as tmpdir:
        tmp = Path(tmpdir)
        server = start_collector(tmp, port, args.cost)
        try:
            wait_live(port)
            auth = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
            assert probe(port, "/metrics", auth)[0] == 200  # the scraper is verified (and cached) first
            warmup = min(3.0, args.duration / 3)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "load", "--port", str(port)]
            cmd += [
                "--slow",
                str(args.slow),
                "--flood",
                str(args.flood),
                "--duration",
                str(args.duration + warmup),
            ]
            load = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
            )
            time.sleep(warmup)  # every client connected and holding its slot
            results: dict[str, list[tuple[int, float]]] = {"/health/live": [], "/metrics": []}
            stop = time.monotonic() + args.duration
            began = time.monotonic()
            while time.monotonic() < stop:
                for path, headers in (("/health/live", {}), ("/metrics", auth)):
                    results[path].append(probe(port, path, headers))
                time.sleep(max(0.0, args.interval - random.random() * 0.01))
            measured = time.monotonic() - began
            out, _ = load.communicate(timeout=args.duration + 60)
            counters = rejected(port, auth)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(20)
    report: dict[str, Any] = {
        "conditions": {
            "slow_clients": args.slow,
            "flood_clients": args.flood,
            "bcrypt_cost": args.cost,
            "seconds": round(measured, 1),
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "rlimit_nofile": limits[0],
            "load_process_niceness": args.load_nice,
        },
        "load": json.loads(out or b"{}"),
        "server_counters": counters,
    }
    ok = True
    for path, rows in results.items():
        lat = [t * 1000 for _s, t in rows]
        statuses: dict[str, int] = {}
        for status, _t in rows:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        ok = ok and set(statuses) == {"200"}
        report[path] = {
            "requests": len(rows),
            "statuses": statuses,
            "p50_ms": round(percentile(lat, 0.50), 2),
            "p90_ms": round(percentile(lat, 0.90), 2),
            "p99_ms": round(percentile(lat, 0.99), 2),
            "max_ms": round(max(lat), 2) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
        }
    report["all_200"] = ok
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
