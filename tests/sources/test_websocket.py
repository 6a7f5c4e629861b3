"""WebSocket probes against real servers on 127.0.0.1: websockets servers written here, a wss:// server
with a certificate made in the test, and a Node `ws` server installed from npm when node is present."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from tests.helpers import serve, value
from tests.sources.websocket_helpers import (
    echo,
    failures,
    hold_open,
    mute_after_upgrade,
    pong,
    scrape_until,
    settings,
    silent_tcp_server,
    unused_port,
    ws_server,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "websocket"


# -- success -----------------------------------------------------------------------------------------


async def test_echo_server_probe_succeeds_with_every_phase_and_one_ping(tmp_path: Path) -> None:
    async with ws_server(echo) as port, serve(settings(tmp_path, [f"ws://127.0.0.1:{port}/"])) as app:
        target = f"ws://127.0.0.1:{port}/"
        s = await scrape_until(app, [target])
        assert value(s, "probe_websocket_success", target=target) == 1
        assert value(s, "probe_websocket_status_code", target=target) == 101
        assert failures(s, target) == {}
        assert value(s, "probe_websocket_ping_rtt_seconds_count", target=target) == 1
        assert value(s, "probe_websocket_ping_rtt_seconds_bucket", target=target, le="+Inf") == 1
        for phase in ("resolve", "connect", "handshake"):
            assert value(s, "probe_websocket_duration_seconds", target=target, phase=phase) > 0
        # ws:// has no TLS, and no exchange was configured
        assert value(s, "probe_websocket_duration_seconds", target=target, phase="tls") == 0
        assert value(s, "probe_websocket_duration_seconds", target=target, phase="exchange") == 0
        assert "probe_ssl_earliest_cert_expiry" not in s
        assert value(s, "collector_source_up", source="websocket") == 1


async def test_scripted_exchange_skips_pushes_and_matches_json_or_regex(tmp_path: Path) -> None:
    async with ws_server(pong) as port:
        url = f"ws://127.0.0.1:{port}/ws"
        targets = [
            {"name": "json", "url": url, "send": {"type": "ping"}, "expect": {"type": "pong"}},
            {"name": "regex", "url": url, "send": '{"type":"ping"}', "expect": '"type": ?"pong"'},
            {
                "name": "wrong",
                "url": url,
                "send": {"type": "hello"},
                "expect": {"type": "pong"},
                "timeout": 1.0,
            },
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await scrape_until(app, ["json", "regex", "wrong"])
    for ok in ("json", "regex"):
        assert value(s, "probe_websocket_success", target=ok) == 1
        assert failures(s, ok) == {}
        assert value(s, "probe_websocket_duration_seconds", target=ok, phase="exchange") > 0
    # replies came ({"type":"welcome"}, {"type":"error"}) but none matched: not a plain timeout
    assert value(s, "probe_websocket_success", target="wrong") == 0
    assert failures(s, "wrong") == {"unexpected_reply": 1}
    assert value(s, "probe_websocket_status_code", target="wrong") == 101


async def test_headers_token_file_subprotocol_and_origin_reach_the_server(tmp_path: Path) -> None:
    seen: list[Request] = []

    def check(conn: ServerConnection, request: Request) -> Any:
        seen.append(request)
        if request.headers.get("Authorization") != "Bearer s3cret":
            return conn.respond(401, "no\n")
        return None

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    async with ws_server(echo, process_request=check, subprotocols=["chat.v2"]) as port:
        url = f"ws://127.0.0.1:{port}/"
        targets = [
            {
                "name": "ok",
                "url": url,
                "token_file": str(token),
                "subprotocols": ["chat.v2"],
                "origin": "https://app.example.com",
                "headers": {"X-Probe": "yes"},
            },
            {"name": "anonymous", "url": url},
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await scrape_until(app, ["ok", "anonymous"])
    assert value(s, "probe_websocket_success", target="ok") == 1
    assert value(s, "probe_websocket_status_code", target="anonymous") == 401
    assert failures(s, "anonymous") == {"handshake": 1}
    good = next(r for r in seen if r.headers.get("Authorization"))
    assert good.headers["Origin"] == "https://app.example.com"
    assert good.headers["Sec-WebSocket-Protocol"] == "chat.v2"
    assert good.headers["X-Probe"] == "yes"
    assert good.headers["User-Agent"].startswith("collector-websocket-probe/")


# -- failures ----------------------------------------------------------------------------------------


async def test_failures_are_classified_by_reason(tmp_path: Path) -> None:
    def forbid(conn: ServerConnection, _request: Request) -> Any:
        return conn.respond(403, "forbidden\n")

    closed_port = unused_port()
    async with (
        ws_server(echo, process_request=forbid) as p403,
        silent_tcp_server() as (p_hung, held),
        ws_server(hold_open, process_response=mute_after_upgrade) as p_mute,
    ):
        targets = [
            {"name": "forbidden", "url": f"ws://127.0.0.1:{p403}/"},
            {"name": "hung", "url": f"ws://127.0.0.1:{p_hung}/", "timeout": 0.5},
            {"name": "refused", "url": f"ws://127.0.0.1:{closed_port}/"},
            {"name": "mute", "url": f"ws://127.0.0.1:{p_mute}/", "timeout": 1.0},
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await scrape_until(app, ["forbidden", "hung", "refused", "mute"])
            assert len(held) == 1  # the hung server did get the connection
    expected = {
        "forbidden": ({"handshake": 1}, 403),
        "hung": ({"timeout": 1}, 0),
        "refused": ({"refused": 1}, 0),
        "mute": ({"timeout": 1}, 101),
    }
    for target, (reasons, status) in expected.items():
        assert value(s, "probe_websocket_success", target=target) == 0, target
        assert failures(s, target) == reasons, target
        assert value(s, "probe_websocket_status_code", target=target) == status, target
    # the hung probe spent its time in the upgrade, which never finished, and got no further
    assert value(s, "probe_websocket_duration_seconds", target="hung", phase="handshake") > 0
    assert value(s, "probe_websocket_duration_seconds", target="hung", phase="exchange") == 0
    assert value(s, "probe_websocket_duration_seconds", target="refused", phase="handshake") == 0
    assert value(s, "probe_websocket_ping_rtt_seconds_count", target="mute") is None


@asynccontextmanager
async def plain_http_server(status_line: bytes) -> AsyncIterator[int]:
    """Answers every connection with `status_line` and a short body, never upgrading; yields the port."""

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await r.readuntil(b"\r\n\r\n")
            w.write(status_line + b"\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
            await w.drain()
        w.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_status_code_is_read_whatever_the_http_version(tmp_path: Path) -> None:
    async with (
        plain_http_server(b"HTTP/1.0 200 OK") as p10,
        plain_http_server(b"HTTP/1.1 200 OK") as p11,
        plain_http_server(b"HTTP/1.0 503 Service Unavailable") as p10_503,
    ):
        targets = [
            {"name": "http10", "url": f"ws://127.0.0.1:{p10}/"},
            {"name": "http11", "url": f"ws://127.0.0.1:{p11}/"},
            {"name": "http10_503", "url": f"ws://127.0.0.1:{p10_503}/"},
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await scrape_until(app, ["http10", "http11", "http10_503"])
    for target, status in (("http10", 200), ("http11", 200), ("http10_503", 503)):
        assert value(s, "probe_websocket_success", target=target) == 0, target
        assert failures(s, target) == {"handshake": 1}, target
        assert value(s, "probe_websocket_status_code", target=target) == status, target


async def test_a_hung_target_does_not_delay_the_others(tmp_path: Path) -> None:
    async with silent_tcp_server() as (p_hung, held), ws_server(echo) as port:
        targets = [
            {"name": "hung", "url": f"ws://127.0.0.1:{p_hung}/", "timeout": 60},
            {"name": "fast", "url": f"ws://127.0.0.1:{port}/"},
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await scrape_until(app, ["fast"])
            # the fast target finished while the hung one is still inside its 60 s timeout
            assert len(held) == 1
            assert value(s, "probe_websocket_status_code", target="hung") is None
            assert value(s, "probe_websocket_success", target="fast") == 1


async def test_repeated_failures_are_logged_once_with_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = unused_port()
    targets = [{"name": "down", "url": f"ws://127.0.0.1:{port}/", "mode": "persistent", "interval": 0.05}]
    with caplog.at_level(logging.INFO, logger="collector.sources.websocket"):
        async with serve(settings(tmp_path, targets)) as app:
            await app.wait_for(
                lambda s: (
                    (value(s, "probe_websocket_failures_total", target="down", reason="refused") or 0) >= 3
                )
            )
    records = [r for r in caplog.records if r.name == "collector.sources.websocket"]
    assert [r.getMessage() for r in records] == ["source degraded"]
    assert (records[0].target, records[0].reason, records[0].phase) == ("down", "refused", "connect")  # type: ignore[attr-defined]
    assert records[0].problem.startswith(f"ws://127.0.0.1:{port}/ refused: ")  # type: ignore[attr-defined]


# -- wss:// ----------------------------------------------------------------------------------------------

NOT_AFTER = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def test_wss_self_signed_verify_fails_without_ca_and_succeeds_with_it(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1", not_after=NOT_AFTER)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with ws_server(echo, ssl=server_ctx) as port:
        url = f"wss://localhost:{port}/"
        targets = [
            {"name": "no-ca", "url": url},
            {"name": "with-ca", "url": url, "ca_file": str(ca_file), "send": "hi", "expect": "^hi$"},
            {"name": "no-verify", "url": url, "verify": False},
            {"name": "wrong-name", "url": url, "ca_file": str(ca_file), "server_name": "other.example"},
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await scrape_until(app, ["no-ca", "with-ca", "no-verify", "wrong-name"])
    assert failures(s, "no-ca") == {"tls": 1}
    assert failures(s, "wrong-name") == {"tls": 1}
    assert value(s, "probe_websocket_success", target="no-ca") == 0
    assert value(s, "probe_websocket_status_code", target="no-ca") == 0
    assert value(s, "probe_websocket_duration_seconds", target="no-ca", phase="tls") > 0
    assert value(s, "probe_websocket_duration_seconds", target="no-ca", phase="handshake") == 0
    for ok in ("with-ca", "no-verify"):
        assert value(s, "probe_websocket_success", target=ok) == 1
        assert failures(s, ok) == {}
        assert value(s, "probe_ssl_earliest_cert_expiry", target=ok) == NOT_AFTER.timestamp()
        assert value(s, "probe_websocket_duration_seconds", target=ok, phase="tls") > 0
    assert value(s, "probe_ssl_earliest_cert_expiry", target="no-ca") is None


async def test_wss_client_certificate_for_mutual_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("probe@collector")
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    async with ws_server(echo, ssl=server_ctx) as port:
        url = f"wss://127.0.0.1:{port}/"
        targets = [
            {"name": "mtls", "url": url, "ca_file": str(ca_file), "cert_file": str(cert_file)},
            {"name": "no-cert", "url": url, "ca_file": str(ca_file)},
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await scrape_until(app, ["mtls", "no-cert"])
    assert value(s, "probe_websocket_success", target="mtls") == 1
    assert value(s, "probe_websocket_success", target="no-cert") == 0
    # TLS 1.3: the client finishes its TLS handshake before the server rejects the missing certificate,
    # so the refusal arrives as a connection closed during the upgrade (OpenSSL may surface the alert)
    assert failures(s, "no-cert") in ({"handshake": 1}, {"tls": 1})


# -- a server we did not write -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_ws() -> Path:
    """`ws` from npm in a cache directory shared by test runs; skipped without node and npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are not installed: the Node ws server test needs them")
    cache = Path(tempfile.gettempdir()) / "collector-tests-node-ws"
    if not (cache / "node_modules" / "ws" / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), "ws@8"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"npm install ws failed (no registry access?): {proc.stderr.strip()[-300:]}")
    return cache / "node_modules"


async def test_node_ws_server_we_did_not_write(tmp_path: Path, node_ws: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(FIXTURES / "server.js"),
        env={"NODE_PATH": str(node_ws), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int((await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip())
        url = f"ws://127.0.0.1:{port}/live"
        targets = [
            {
                "name": "node",
                "url": url,
                "send": {"type": "ping"},
                "expect": {"type": "pong"},
                "subprotocols": ["v1"],
            },
            {"name": "node-persistent", "url": url, "mode": "persistent", "interval": 0.1},
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await app.wait_for(
                lambda s: (
                    value(s, "probe_websocket_status_code", target="node") is not None
                    and (value(s, "probe_websocket_ping_rtt_seconds_count", target="node-persistent") or 0)
                    >= 2
                )
            )
    finally:
        proc.terminate()
        await proc.wait()
    assert value(s, "probe_websocket_success", target="node") == 1
    assert value(s, "probe_websocket_status_code", target="node") == 101
    assert failures(s, "node") == {}
    assert value(s, "probe_websocket_ping_rtt_seconds_count", target="node") == 1
    assert value(s, "probe_websocket_connected", target="node-persistent") == 1
    assert value(s, "probe_websocket_connection_drops_total", target="node-persistent") == 0
