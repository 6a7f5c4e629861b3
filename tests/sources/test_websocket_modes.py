"""WebSocket probes, persistent mode, `/probe` and the real command, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from tests.helpers import CollectorProcess, parse, serve, value
from tests.sources.websocket_helpers import (
    echo,
    failures,
    hold_open,
    mute_after_upgrade,
    settings,
    silent_tcp_server,
    unused_port,
    ws_server,
)

# -- persistent mode -----------------------------------------------------------------------------------


async def test_persistent_connection_dropped_by_the_server_is_counted_and_reconnected(tmp_path: Path) -> None:
    accepted: list[int] = []

    async def close_first_after_a_while(ws: ServerConnection) -> None:
        accepted.append(1)
        if len(accepted) == 1:
            await asyncio.sleep(0.5)
            await ws.close(1001, "going away")
        else:
            await ws.wait_closed()

    async with ws_server(close_first_after_a_while) as port:
        targets = [{"name": "chat", "url": f"ws://127.0.0.1:{port}/", "mode": "persistent", "interval": 0.1}]
        async with serve(settings(tmp_path, targets)) as app:
            s = await app.wait_for(
                lambda s: (
                    (value(s, "probe_websocket_connection_drops_total", target="chat") or 0) >= 1
                    and value(s, "probe_websocket_connected", target="chat") == 1
                ),
                timeout=30,
            )
            assert value(s, "probe_websocket_connection_drops_total", target="chat") == 1
            assert len(accepted) == 2
    assert failures(s, "chat") == {"closed": 1}
    assert value(s, "probe_websocket_success", target="chat") == 1
    assert value(s, "probe_websocket_status_code", target="chat") == 101
    assert value(s, "probe_websocket_ping_rtt_seconds_count", target="chat") >= 1


async def test_persistent_connection_whose_pings_go_unanswered_is_a_drop(tmp_path: Path) -> None:
    accepted: list[int] = []

    def mute_first(conn: ServerConnection, request: Request, response: Any) -> Any:
        accepted.append(1)
        return mute_after_upgrade(conn, request, response) if len(accepted) == 1 else response

    async with ws_server(hold_open, process_response=mute_first) as port:
        targets = [
            {
                "name": "feed",
                "url": f"ws://127.0.0.1:{port}/",
                "mode": "persistent",
                "interval": 0.1,
                "timeout": 1.0,
            }
        ]
        async with serve(settings(tmp_path, targets)) as app:
            s = await app.wait_for(
                lambda s: (
                    (value(s, "probe_websocket_connection_drops_total", target="feed") or 0) >= 1
                    and value(s, "probe_websocket_connected", target="feed") == 1
                ),
                timeout=30,
            )
            assert value(s, "probe_websocket_connection_drops_total", target="feed") == 1
            assert len(accepted) == 2
    assert failures(s, "feed") == {"timeout": 1}


async def test_persistent_target_that_refuses_counts_failures_not_drops(tmp_path: Path) -> None:
    port = unused_port()
    targets = [{"name": "down", "url": f"ws://127.0.0.1:{port}/", "mode": "persistent", "interval": 0.05}]
    async with serve(settings(tmp_path, targets)) as app:
        s = await app.wait_for(
            lambda s: (value(s, "probe_websocket_failures_total", target="down", reason="refused") or 0) >= 2
        )
    assert value(s, "probe_websocket_connection_drops_total", target="down") == 0
    assert value(s, "probe_websocket_connected", target="down") == 0
    assert value(s, "probe_websocket_success", target="down") == 0


# -- /probe ----------------------------------------------------------------------------------------------


async def _get(url: str, **kw: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kw) as resp:
        return resp.status, await resp.text()


async def test_probe_endpoint_probes_configured_and_allowed_targets_only(tmp_path: Path) -> None:
    async with ws_server(echo) as port, silent_tcp_server() as (p_hung, held):
        cfg = settings(
            tmp_path,
            [
                {
                    "name": "app",
                    "url": f"ws://127.0.0.1:{port}/configured",
                    "mode": "persistent",
                    "interval": 60,
                }
            ],
            probe_allow=f"ws://127.0.0.1:{port}/allowed/*,ws://127.0.0.1:{p_hung}",
            probe_concurrency=1,
        )
        async with serve(cfg) as app:
            status, body = await _get(app.url + "/probe", params={"target": "app"})
            assert status == 200
            s = parse(body)
            assert value(s, "probe_websocket_success", target="app") == 1
            assert value(s, "probe_websocket_status_code", target="app") == 101
            assert value(s, "probe_websocket_ping_rtt_seconds_count", target="app") == 1

            # Prometheus asks for OpenMetrics first: the document must be complete (`# EOF`) and parse
            status, body = await _get(
                app.url + "/probe",
                params={"target": "app"},
                headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
            )
            assert status == 200 and body.endswith("# EOF\n")
            fams = {f.name: f for f in om_parse(body)}
            assert fams["probe_websocket_success"].samples[0].value == 1

            adhoc = f"ws://127.0.0.1:{port}/allowed/x"
            status, body = await _get(app.url + "/probe", params={"target": adhoc})
            assert status == 200 and value(parse(body), "probe_websocket_success", target=adhoc) == 1

            for target in (
                f"ws://127.0.0.1:{port}/other",
                "ws://10.0.0.1:22/",
                f"ws://127.0.0.1:{port + 1}/allowed/x",
            ):
                status, _ = await _get(app.url + "/probe", params={"target": target})
                assert status == 403, target
            assert (await _get(app.url + "/probe"))[0] == 400

            # one probe slot: while a probe hangs on the silent server, a second request is refused
            hung = f"ws://127.0.0.1:{p_hung}/"
            first = asyncio.create_task(
                _get(
                    app.url + "/probe",
                    params={"target": hung},
                    headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"},
                )
            )
            while not held:
                await asyncio.sleep(0.02)
            status, _ = await _get(app.url + "/probe", params={"target": "app"})
            assert status == 503
            status, body = await first
            assert status == 200
            s = parse(body)
            assert value(s, "probe_websocket_success", target=hung) == 0
            assert value(s, "probe_websocket_failures_total", target=hung, reason="timeout") == 1

            m = await app.metrics()
            # /probe results stay out of /metrics: no series for ad-hoc targets
            assert value(m, "probe_websocket_success", target=adhoc) is None
            assert value(m, "probe_websocket_success", target=hung) is None
            counts = {
                r: value(m, "collector_websocket_probe_requests_total", result=r)
                for r in ("success", "failure", "forbidden", "busy", "bad_request")
            }
            assert counts == {
                "success": 3,
                "failure": 1,
                "forbidden": 3,
                "busy": 1,
                "bad_request": 1,
            }  # one of them asked for OpenMetrics


# -- the real command ----------------------------------------------------------------------------------------


async def test_collector_process_probes_targets_from_env(tmp_path: Path) -> None:
    seen: list[str | None] = []

    def record(_conn: ServerConnection, request: Request) -> None:
        seen.append(request.headers.get("Authorization"))

    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    async with ws_server(echo, process_request=record) as port:
        url = f"ws://127.0.0.1:{port}/a"
        env = {
            "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
            "COLLECTOR_WEBSOCKET__TARGETS": f"{url}, ws://127.0.0.1:{unused_port()}/b",
            "COLLECTOR_WEBSOCKET__INTERVAL": "3600",
            "COLLECTOR_WEBSOCKET__TOKEN_FILE": str(token),
        }
        proc = CollectorProcess(env, tmp_path)
        try:
            await asyncio.to_thread(proc.wait_live)
            for _ in range(200):
                s = await asyncio.to_thread(proc.scrape)
                if value(s, "probe_websocket_success", target=url) == 1:
                    break
                await asyncio.sleep(0.05)
            assert value(s, "probe_websocket_success", target=url) == 1
            assert value(s, "probe_websocket_failures_total", target=url, reason="refused") == 0
            assert seen == ["Bearer from-a-file"]
        finally:
            assert await asyncio.to_thread(proc.terminate) == 0
    assert "from-a-file" not in proc.stderr()


async def test_probe_sends_the_normalised_path_on_the_request_line(tmp_path: Path) -> None:
    lines: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append(await reader.readline())
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = settings(tmp_path, [], probe_allow=f"ws://127.0.0.1:{port}/allowed/*")
        async with serve(cfg) as app:
            status, _ = await _get(
                app.url + "/probe", params={"target": f"ws://127.0.0.1:{port}/allowed/a b"}
            )
            assert status == 200
            status, _ = await _get(
                app.url + "/probe", params={"target": f"ws://127.0.0.1:{port}/allowed/../../secret"}
            )
            assert status == 403
    finally:
        server.close()
    assert lines == [b"GET /allowed/a%20b HTTP/1.1\r\n"]
