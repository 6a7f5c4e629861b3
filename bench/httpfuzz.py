"""HTTP fuzz campaign: seeded random unauthenticated requests over raw sockets against the real app and its
guarded listener (basic auth on, every webhook route, `/deployments`, `/probe`), asserting that none
gets a 5xx and that the server keeps answering.

Inputs mix valid shapes with hostile ones: dot segments and percent-encoding in paths, `/probe`
targets with spaces, CR/LF and credentials, non-ASCII and invalid UTF-8 bytes in `Stripe-Signature`,
`X-Hub-Signature-256` and `Authorization`, broken gzip/deflate/br bodies, bad chunked framing,
conflicting lengths, over-long and too many headers, and pipelined batches with a bad request inside.

    python bench/httpfuzz.py                 # 100,000 requests (the long mode), prints figures
    python bench/httpfuzz.py -n 2000 --seed 7

A failing seed replays exactly: the report names the seed and the first offending request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import random
import re
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUTES = [
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/health"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/dora"),
    ("GET", "/probe"),
    ("POST", "/webhooks/stripe"),
    ("POST", "/webhooks/github"),
    ("POST", "/deployments"),
    ("GET", "/nope"),
]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "G\x00T", "get"]
_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3}) ")  # aiohttp echoes an HTTP/2.0 request line
# Appended to every batch: the server answers it (when the fuzzed request left the stream in sync) and
# closes, so a keep-alive connection does not wait for the idle timeout.
SENTINEL = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _junk(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def _path(rng: random.Random, path: str) -> bytes:
    r = rng.random()
    if r < 0.5:
        return path.encode()
    mutations = [
        path + "/../metrics",
        "/webhooks/../metrics",
        "/%2e%2e/metrics",
        path.replace("/", "%2F"),
        path + "?" + "a=" * rng.randint(1, 50),
        path + "/" + "x" * rng.randint(1, 3000),
        "//" + path,
        path + "%00",
        path + "%",
        "*",
        "http://evil.test" + path,
    ]
    text = rng.choice(mutations)
    return text.encode() if rng.random() < 0.8 else text.encode() + _junk(rng, 3).replace(b" ", b"")


def _probe_query(rng: random.Random, port: int) -> bytes:
    targets = [
        f"ws://127.0.0.1:{port}/ws",
        f"ws://127.0.0.1:{port}/ws/../admin",
        f"ws://127.0.0.1:{port}/ws%2f..%2fadmin",
        f"ws://127.0.0.1:{port}/a b",
        f"ws://127.0.0.1:{port}/ws%0d%0aX:1",
        "ws://user:pw@127.0.0.1/ws",
        "http://127.0.0.1/",
        "ws://[::1",
        "ws://169.254.169.254/latest",
        "",
    ]
    from urllib.parse import quote

    return b"?target=" + quote(rng.choice(targets)).encode()


def _body(rng: random.Random) -> tuple[bytes, list[bytes]]:
    """A body and the framing headers that go with it."""
    kind = rng.random()
    raw = rng.choice([b"{}", b'{"id":"evt_1","type":"ping"}', b"[]", _junk(rng, rng.randint(0, 300)), b""])
    headers: list[bytes] = []
    if kind < 0.15:
        enc = rng.choice([b"gzip", b"deflate", b"br", b"x-gzip", b"identity, gzip"])
        good = gzip.compress(raw) if b"gzip" in enc else zlib.compress(raw)
        body = rng.choice([good, good[: max(1, len(good) // 2)] + _junk(rng, 10), _junk(rng, 40)])
        headers.append(b"Content-Encoding: " + enc)
    else:
        body = raw
    if rng.random() < 0.1:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:5], body[5:]) if c)
        bad = rng.choice([b"", b"zz\r\n", b"5\r\nabc\r\n", b"-1\r\n"])
        return chunks + bad + b"0\r\n\r\n", [*headers, b"Transfer-Encoding: chunked"]
    length = len(body)
    if rng.random() < 0.05:
        headers.append(b"Content-Length: %d" % length)  # a duplicate
    if rng.random() < 0.03:
        length = max(0, length - rng.randint(1, 5))  # shorter: the rest is read as the next request
    return body, [*headers, b"Content-Length: %d" % length]


def _signature_headers(rng: random.Random) -> list[bytes]:
    nasty = [b"\xff", b"\xc3\xa9", b"\xe2\x80\x8b", b"\x80", b"", b"\x00", b"a" * 300]
    n = rng.choice(nasty)
    options = [
        b"Stripe-Signature: t=%d,v1=%s%s" % (int(time.time()), b"0" * rng.randint(0, 64), n),
        b"Stripe-Signature: " + _junk(rng, 20).replace(b"\r", b"").replace(b"\n", b""),
        b"Stripe-Signature: t=" + n + b",v1=" + n,
        b"X-Hub-Signature-256: sha256=" + b"0" * rng.randint(0, 64) + n,
        b"X-Hub-Signature-256: " + n,
        b"X-GitHub-Event: " + rng.choice([b"ping", b"push", b"deployment", b"", b"\xff"]),
        b"X-GitHub-Delivery: " + rng.choice([b"d1", b"", n]),
        b"Authorization: Bearer " + n,
        b"Authorization: Bearer wrong-token",
        b"Authorization: Basic " + base64.b64encode(b"prometheus:" + n),
        b"Authorization: Basic " + n,
        b"Authorization: " + n,
        b"Content-Type: " + rng.choice([b"application/json", b"application/x-www-form-urlencoded", n]),
    ]
    return rng.sample(options, rng.randint(0, 4))


def request(rng: random.Random, probe_port: int) -> bytes:
    """One random request (occasionally a malformed line or head)."""
    method, path = rng.choice(ROUTES)
    if rng.random() < 0.05:
        method = rng.choice(METHODS)
    target = _path(rng, path)
    if path == "/probe":
        target += _probe_query(rng, probe_port)
    version = rng.choice([b"HTTP/1.1"] * 20 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x", b"HTP/1.1"])
    body, framing = _body(rng) if method in ("POST", "PUT", "PATCH") or rng.random() < 0.05 else (b"", [])
    headers = [b"Host: 127.0.0.1", *_signature_headers(rng), *framing]
    r = rng.random()
    if r < 0.02:
        headers += [b"X-F%d: v" % i for i in range(rng.randint(100, 200))]
    elif r < 0.04:
        headers.append(b"X-Long: " + b"a" * rng.randint(8000, 40000))
    elif r < 0.06:
        headers.append(
            rng.choice([b"Bad Header: x", b": empty", b"X-Y:\x00z", b"X\xff: y", b" leading: space"])
        )
    return (
        method.encode("latin-1")
        + b" "
        + target
        + b" "
        + version
        + b"\r\n"
        + b"\r\n".join(headers)
        + b"\r\n\r\n"
        + body
    )


async def _exchange(port: int, data: bytes, timeout: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        try:
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<timeout>")
        return b"".join(chunks)
    except (ConnectionError, OSError):
        return b"<reset>"
    finally:
        writer.close()


async def campaign(n: int, seed: int, concurrency: int = 4) -> dict[str, Any]:
    """Send `n` random requests (some pipelined in pairs); return figures and the 5xx found."""
    import bcrypt
    from aiohttp import web

    from collector.app import build_app
    from collector.settings import (
        DeploymentsSettings,
        GitHubSettings,
        HttpSettings,
        Settings,
        StripeSettings,
        WebSocketSettings,
    )
    from collector.web import start_sites

    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="httpfuzz-"))
    web_yml = tmp / "web.yml"
    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(4)).decode()
    web_yml.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    closed = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    probe_port = closed.sockets[0].getsockname()[1]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        listen="127.0.0.1:0",
        data_dir=tmp / "data",
        web_config_file=web_yml,
        stripe=StripeSettings(webhook_secrets=["whsec_fuzz"]),
        github=GitHubSettings(webhook_secret="gh-fuzz"),
        deployments=DeploymentsSettings(token="deploy-fuzz"),
        websocket=WebSocketSettings(probe_allow=[f"ws://127.0.0.1:{probe_port}/ws*"], timeout=0.5),
        http=HttpSettings(body_timeout=1.0, header_timeout=1.0, idle_timeout=0.5),
    )
    app = build_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sites = await start_sites(runner, app)
    port = sites[0].address[1]
    from collector.app import RUNTIME

    while not all(ctx.status.state == "running" for _s, ctx in app[RUNTIME].sources):
        await asyncio.sleep(0.02)
    statuses: dict[str, int] = {}
    bad: list[dict[str, Any]] = []
    silent: list[dict[str, Any]] = []  # no answer at all: the server closed (e.g. a reset mid-body)
    sent = 0
    began = time.monotonic()
    sem = asyncio.Semaphore(concurrency)

    async def one(data: bytes) -> None:
        async with sem:
            reply = await _exchange(port, data + SENTINEL, 5.0)
        codes = _STATUS.findall(reply)
        for code in codes or [b"none"]:
            statuses[code.decode()] = statuses.get(code.decode(), 0) + 1
        if not codes and len(silent) < 5:
            silent.append({"request": data[:300].decode("latin-1"), "reply": reply[:100].decode("latin-1")})
        if any(c.startswith(b"5") for c in codes) and len(bad) < 5:
            bad.append({"request": data[:400].decode("latin-1"), "reply": reply[:300].decode("latin-1")})

    pending: set[asyncio.Task[None]] = set()
    while sent < n:
        batch = [request(rng, probe_port) for _ in range(2 if rng.random() < 0.15 else 1)]
        sent += len(batch)
        task = asyncio.ensure_future(one(b"".join(batch)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if len(pending) >= concurrency * 2:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*pending)
    elapsed = time.monotonic() - began
    # Still serving after it all.
    alive = _STATUS.findall(
        await _exchange(port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
    )
    await runner.cleanup()
    closed.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "seed": seed,
        "requests": sent,
        "seconds": round(elapsed, 1),
        "requests_per_second": round(sent / elapsed, 1),
        "statuses": dict(sorted(statuses.items())),
        "five_xx": bad,
        "unanswered_examples": silent,
        "alive_after": alive == [b"200"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=100_000, help="requests to send")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args(argv)
    report = asyncio.run(campaign(args.n, args.seed, args.concurrency))
    print(json.dumps(report, indent=2))
    return 0 if not report["five_xx"] and report["alive_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
