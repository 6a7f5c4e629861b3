"""The marker test: every secret the collector can hold is set to a unique marker, directly and through
`<VAR>_FILE`; every command runs and every endpoint is called at DEBUG, with every error path we can
provoke (APIs that echo the credentials they got back in their errors, a WebSocket server that sees the
token headers, wrong passwords, malformed settings that contain secrets, hostile HTTP); then every byte
of output (stdout, stderr, logs, HTTP heads and bodies, /metrics, /probe) is searched for the markers."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from tests.helpers import CollectorProcess

PASSWORD = "basicpass-MARK01"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
#: Setting -> marker. Each is unique, so a leak names its source.
SECRETS = {
    "COLLECTOR_GITHUB__WEBHOOK_SECRET": "ghhook-MARK02",
    "COLLECTOR_GITHUB__TOKEN": "ghp_MARK03token",
    "COLLECTOR_DEPLOYMENTS__TOKEN": "deploytok-MARK04",
    "COLLECTOR_STRIPE__WEBHOOK_SECRETS": "whsec_MARK05a,whsec_MARK05b",
    "COLLECTOR_STRIPE__API_KEY": "sk_test_MARK06key",
    "COLLECTOR_WEBSOCKET__TOKEN": "wstoken-MARK07",
}
HEADER_SECRET = "hdrsecret-MARK08"  # a target's `headers` value
TOKEN_FILE_SECRET = "tokfile-MARK09"  # a target's token_file
TOKEN_ENV_SECRET = "tokenv-MARK10"  # a target's token_env
URL_PASSWORD = "urlpass-MARK11"  # userinfo in *_API_BASE / *_API_URL
MARKERS = [
    PASSWORD,
    HASH,
    HEADER_SECRET,
    TOKEN_FILE_SECRET,
    TOKEN_ENV_SECRET,
    URL_PASSWORD,
    *(m for v in SECRETS.values() for m in v.split(",")),
]


class Fakes:
    """In a thread: a WebSocket server (it sees every token header) and fake GitHub/Stripe APIs that
    answer 401 quoting the Authorization header and URL they received, as some APIs do."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.ws_port = self.api_port = 0
        self.seen_headers: list[str] = []
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _echo(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.seen_headers.append(str(ws.request.headers))
        async for message in ws:
            await ws.send(message)

    async def _api(self, request: web.Request) -> web.Response:
        quoted = f"Bad credentials: {request.headers.get('Authorization')} for {request.url}"
        body = {"message": quoted, "error": {"message": quoted, "type": "invalid_request_error"}}
        return web.json_response(body, status=401)

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._api)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.api_port = runner.addresses[0][1]
        async with ws_serve(self._echo, "127.0.0.1", 0, ping_interval=None) as server:
            self.ws_port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            await self.stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Fakes:
        self.thread.start()
        assert self.ready.wait(15)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)


def _call(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return str(resp.status).encode() + bytes(str(resp.headers), "latin-1") + resp.read()
    except urllib.error.HTTPError as exc:
        return str(exc.code).encode() + bytes(str(exc.headers), "latin-1") + exc.read()


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _env(tmp: Path, fakes: Fakes, via_file: bool) -> dict[str, str]:
    (tmp / "web.yml").write_text(f"basic_auth_users:\n  prometheus: {HASH}\n")
    (tmp / "ws.token").write_text(TOKEN_FILE_SECRET + "\n")
    api = f"http://apiuser:{URL_PASSWORD}@127.0.0.1:{fakes.api_port}"
    ws = f"ws://127.0.0.1:{fakes.ws_port}"
    targets = [
        {"name": "hdr", "url": f"{ws}/h", "headers": {"X-Api-Key": HEADER_SECRET}},
        {"name": "file", "url": f"{ws}/f", "token_file": str(tmp / "ws.token")},
        {"name": "env", "url": f"{ws}/e", "token_env": "WS_TOKEN_ENV", "token_header": "X-Token"},
        {"name": "default", "url": f"{ws}/d"},  # gets COLLECTOR_WEBSOCKET__TOKEN
    ]
    env = {
        "COLLECTOR_GITHUB__REPOSITORIES": "octo/shop",
        "COLLECTOR_GITHUB__API_URL": api,
        "COLLECTOR_GITHUB__POLL_INTERVAL": "1",
        "COLLECTOR_STRIPE__API_BASE": api,
        "COLLECTOR_STRIPE__POLL_INTERVAL": "0.2",
        "COLLECTOR_WEBSOCKET__TARGETS": json.dumps(targets),
        "COLLECTOR_WEBSOCKET__INTERVAL": "0.3",
        "COLLECTOR_WEBSOCKET__PROBE_ALLOW": f"{ws}/*",
        "COLLECTOR_WEB_CONFIG_FILE": str(tmp / "web.yml"),
        "COLLECTOR_DATA_DIR": str(tmp / "data"),
        "COLLECTOR_LOG_LEVEL": "DEBUG",
        # third-party loggers too (they stay at WARNING unless asked): websockets prints request headers
        "COLLECTOR_LOG_LEVEL_LIBRARIES": "DEBUG",
        "WS_TOKEN_ENV": TOKEN_ENV_SECRET,
    }
    for name, secret in SECRETS.items():
        if via_file:
            path = tmp / f"{name.lower()}.secret"
            path.write_text(secret + "\n")
            env[name + "_FILE"] = str(path)
        else:
            env[name] = secret
    return env


def _commands(tmp: Path, env: dict[str, str]) -> Iterator[bytes]:
    """check-config (valid and broken in every way that holds a secret), replay, --version."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}

    def run(*args: str, **extra: str) -> bytes:
        out = subprocess.run(
            [sys.executable, "-m", "collector", *args],
            env={**base, **env, **extra},
            cwd=tmp,
            capture_output=True,
            timeout=60,
        )
        return out.stdout + out.stderr

    good = run("check-config")
    assert b'"webhook_secret": "**********"' in good and b"apiuser:***@" in good, good
    yield good
    targets = json.loads(env["COLLECTOR_WEBSOCKET__TARGETS"])
    broken = {
        # Malformed JSON that contains a header secret.
        "COLLECTOR_WEBSOCKET__TARGETS": env["COLLECTOR_WEBSOCKET__TARGETS"][:-3],
        # Valid JSON, invalid field next to a secret header.
        "COLLECTOR_WEBSOCKET__TARGETS_": "",
        "COLLECTOR_STRIPE__API_BASE": f"ftp://u:{URL_PASSWORD}@x",
        "COLLECTOR_GITHUB__API_URL": f"nope://u:{URL_PASSWORD}@x",
    }
    for name, bad in broken.items():
        if name.endswith("_"):
            bad = json.dumps([{**targets[0], "interval": -1}])
            name = name[:-1]
        out = run("check-config", **{name: bad})
        assert b"invalid setting" in out, out
        yield out
    yield run("run", COLLECTOR_STRIPE__API_KEY="not-a-key-" + SECRETS["COLLECTOR_STRIPE__API_KEY"])
    yield run("check-config", COLLECTOR_STRIPE__WEBHOOK_SECRETS="whsec_MARK05a,nothwsec-MARK05b")
    yield run("check-config", COLLECTOR_LISTEN="nope")
    log = tmp / "app.log"
    log.write_text('{"level":"info","message":"x"}\n')
    yield run("replay", "--preset", "winston", str(log))
    yield run("--version")


@pytest.mark.parametrize("via_file", [False, True], ids=["direct", "via_file"])
def test_no_marker_appears_in_any_output_of_any_command_or_endpoint(tmp_path: Path, via_file: bool) -> None:
    outputs: list[bytes] = []
    with Fakes() as fakes:
        env = _env(tmp_path, fakes, via_file)
        proc = CollectorProcess(env, tmp_path)
        try:
            proc.wait_live()
            good = _basic("prometheus", PASSWORD)
            # Wrong passwords that are other secrets, and an unknown user.
            wrong = [
                _basic("prometheus", SECRETS["COLLECTOR_GITHUB__TOKEN"]),
                _basic("mallory", PASSWORD),
                {},
            ]
            time.sleep(1.5)  # pollers and probes fail (and log) a few times, probes reach the server
            for path in (
                "/",
                "/health",
                "/health/ready",
                "/health/live",
                "/metrics",
                "/dora",
                "/status.json",
            ):
                outputs += [_call(proc.url + path, headers=h) for h in (good, *wrong)]
            for target in ("hdr", "file", "env", "default", f"ws://127.0.0.1:{fakes.ws_port}/x"):
                outputs.append(_call(f"{proc.url}/probe?target={target}", headers=good))
            body = b'{"zen": "x"}'
            gh = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d1"}
            outputs += [
                _call(
                    proc.url + "/webhooks/github", body, {**gh, "X-Hub-Signature-256": "sha256=" + "0" * 64}
                ),
                _call(proc.url + "/webhooks/github", body, gh),
                _call(proc.url + "/webhooks/stripe", body, {"Stripe-Signature": "t=1,v1=" + "0" * 64}),
                _call(proc.url + "/webhooks/stripe", body, {"Stripe-Signature": "garbage"}),
                _call(proc.url + "/deployments", body, {"Authorization": "Bearer wrong-token"}),
                _call(
                    proc.url + "/deployments",
                    b"{not json",
                    {"Authorization": "Bearer " + SECRETS["COLLECTOR_DEPLOYMENTS__TOKEN"]},
                ),
                _call(proc.url + "/metrics", headers={"Authorization": "Basic !!!"}),
            ]
            bad_gzip = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\n\x1f\x8bgarbage"
            for raw in (
                bad_gzip,
                b"GET / HTTP/9.9\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                b"POST /deployments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nContent-Length: 0\r\n\r\n",
                b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + b"BAD\r\n\r\n",
            ):
                outputs.append(_raw(proc.port, raw))
            outputs.append(
                _call(proc.url + "/webhooks/stripe", gzip.compress(body), {"Content-Encoding": "gzip"})
            )
            os.kill(proc.proc.pid, __import__("signal").SIGHUP)  # a web config reload, logged
            time.sleep(0.5)
            outputs.append(_call(proc.url + "/health", headers=good))
            outputs.append(_call(proc.url + "/metrics", headers=good))
        finally:
            proc.terminate()
        stderr = proc.stderr().encode()
        outputs += [stderr, proc.proc.stdout.read() if proc.proc.stdout else b""]
        outputs += list(_commands(tmp_path, env))
    everything = b"\n".join(outputs)
    leaks = [m for m in MARKERS if m.encode() in everything or base64.b64encode(m.encode()) in everything]
    where = {
        m: everything[max(0, everything.find(m.encode()) - 200) : everything.find(m.encode()) + 50]
        for m in leaks
    }
    assert not leaks, where

    # The scan saw real output: DEBUG lines of the websockets client with its headers (masked), the
    # APIs' 401s that quoted the token, the probes that reached the server with every token.
    assert b'"level": "debug"' in stderr and b"websockets" in stderr
    assert b"X-Token: ***" in stderr or b"x-token: ***" in stderr.lower()
    assert any(TOKEN_FILE_SECRET in h for h in fakes.seen_headers)
    assert any(TOKEN_ENV_SECRET in h for h in fakes.seen_headers)
    assert any(HEADER_SECRET in h for h in fakes.seen_headers)
