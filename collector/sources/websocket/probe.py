"""The I/O of one WebSocket probe: resolve, connect, TLS and upgrade timed separately, then exchange and ping.

We resolve, connect and start TLS ourselves and hand the transport to the `websockets` client, so each
phase has an exact duration and TLS failures are told apart from upgrade failures. Everything runs under
one `asyncio.timeout`, so a hung server costs at most the target's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from collector import __version__
from collector.settings import WebSocketTarget
from collector.sources.websocket.logic import (
    PhaseClock,
    ProbeResult,
    classify,
    earliest_expiry,
    encode_send,
    reply_matches,
)

__all__ = ["Plan", "ProbeError", "hold", "open_ws", "probe_once", "status_of_invalid_message"]

USER_AGENT = f"collector-websocket-probe/{__version__}"

# websockets parses only `HTTP/1.1` status lines and reports any other version (`HTTP/1.0 200` from an
# old proxy or a plain HTTP server) as "did not receive a valid HTTP response", quoting the line.
_STATUS_LINE = re.compile(r"HTTP/\d(?:\.\d)? ([1-5]\d\d)(?:\s|$)")


def status_of_invalid_message(exc: BaseException) -> int:
    """The HTTP status code of an answer websockets refused to parse (any HTTP version), else 0."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # the status line is quoted in the cause's message
        seen.add(id(cur))
        m = _STATUS_LINE.search(str(cur))
        if m is not None:
            return int(m.group(1))
        cur = cur.__cause__ or cur.__context__
    return 0


class ProbeError(Exception):
    """A local reason the probe cannot be made (unreadable token or CA file); reason `error`."""


@dataclass(frozen=True)
class Plan:
    """A target with the source-level defaults applied: everything one probe needs."""

    target: WebSocketTarget
    interval: float
    timeout: float
    token: str | None = None  # the source-wide token, for targets without token_env / token_file

    @property
    def label(self) -> str:
        return self.target.label


def _read_token(plan: Plan) -> str | None:
    # Runs in a worker thread: token files are re-read at each connect so rotated secrets are used.
    t = plan.target
    if t.token_file is not None:
        try:
            return Path(t.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ProbeError(f"cannot read token_file {t.token_file}: {exc.strerror}") from exc
    if t.token_env is not None:
        return os.environ.get(t.token_env) or None
    return plan.token


def _ssl_context(t: WebSocketTarget) -> ssl.SSLContext:
    # Runs in a worker thread: loading CA and client certificate files is disk I/O.
    try:
        ctx = ssl.create_default_context(cafile=str(t.ca_file) if t.ca_file else None)
        if t.cert_file is not None:
            ctx.load_cert_chain(str(t.cert_file), str(t.key_file) if t.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"cannot load TLS files: {exc}") from exc
    if not t.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _prepare(plan: Plan) -> tuple[dict[str, str], ssl.SSLContext | None]:
    t = plan.target
    headers = {k: v.get_secret_value() for k, v in t.headers.items()}
    token = _read_token(plan)
    if token:
        headers[t.token_header] = t.token_prefix + token
    return headers, _ssl_context(t) if t.url.startswith("wss:") else None


def _chain_expiry(ssl_object: Any) -> float | None:
    """Earliest expiry of the certificates the server sent (verified or not)."""
    infos: list[str] = []
    sslobj = getattr(ssl_object, "_sslobj", None)
    # Python < 3.13 has no public chain accessor; the private one exists since 3.10.
    chain = getattr(sslobj, "get_unverified_chain", None)
    if chain is not None:
        infos = [c.get_info().get("notAfter", "") for c in chain() or ()]
    if not infos:
        infos = [(ssl_object.getpeercert() or {}).get("notAfter", "")]
    return earliest_expiry(infos)


async def _connect_any(loop: asyncio.AbstractEventLoop, infos: list[Any]) -> socket.socket:
    """Connect to the first address that accepts, in resolver order (IPv6 then IPv4 for `localhost`)."""
    error: OSError | None = None
    for family, type_, proto, _name, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError("no address to connect to")


class _PhasedConnect(connect):
    """`websockets` client whose TCP and TLS set-up we do ourselves, to time each phase."""

    def __init__(
        self,
        uri: str,
        *,
        clock: PhaseClock,
        ssl_ctx: ssl.SSLContext | None,
        server_name: str | None,
        **kw: Any,
    ) -> None:
        self._clock = clock
        self._ssl_ctx = ssl_ctx
        self._server_name = server_name
        super().__init__(uri, **kw)

    async def open_tcp_connection(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        uri = self.ws_uri
        self._clock.begin("resolve")
        infos = await loop.getaddrinfo(uri.host, uri.port, type=socket.SOCK_STREAM)
        self._clock.begin("connect")
        sock = await _connect_any(loop, infos)
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
        connection = self.factory(uri)
        transport.set_protocol(connection)
        try:
            if uri.secure:
                self._clock.begin("tls")
                ctx = self._ssl_ctx or ssl.create_default_context()
                new = await loop.start_tls(
                    transport, connection, ctx, server_hostname=self._server_name or uri.host
                )
                assert new is not None
                transport = new
                self._clock.result.cert_expiry = _chain_expiry(transport.get_extra_info("ssl_object"))
        except BaseException:
            transport.abort()
            raise
        connection.connection_made(transport)
        self._clock.begin("handshake")
        return connection

    def process_redirect(self, exc: Exception) -> Exception:
        # Browsers fail a WebSocket upgrade answered with a redirect (fetch "redirect mode: error").
        return exc


async def open_ws(plan: Plan, clock: PhaseClock) -> ClientConnection:
    """Resolve, connect, TLS, upgrade; the caller bounds it with a timeout.

    Raises:
        ProbeError, OSError, ssl.SSLError, websockets.exceptions.InvalidHandshake: classified by `classify`.
    """
    t = plan.target
    headers, ssl_ctx = await asyncio.to_thread(_prepare, plan)
    try:
        ws = await _PhasedConnect(
            t.url,
            clock=clock,
            ssl_ctx=ssl_ctx,
            server_name=t.server_name,
            additional_headers=headers,
            subprotocols=t.subprotocols or None,
            origin=t.origin,
            user_agent_header=USER_AGENT,
            open_timeout=None,  # the caller's timeout covers every phase
            ping_interval=None,  # we send our own pings and time them
            close_timeout=min(1.0, plan.timeout),
            proxy=None,
        )
    except InvalidStatus as exc:
        clock.result.status_code = exc.response.status_code
        raise
    except InvalidMessage as exc:
        clock.result.status_code = status_of_invalid_message(exc)
        raise
    clock.result.status_code = ws.response.status_code if ws.response is not None else 0
    return ws


async def exchange(ws: ClientConnection, t: WebSocketTarget, result: ProbeResult) -> None:
    """Send `t.send`, then read until a reply matches `t.expect` (the caller's timeout bounds it)."""
    if t.send is not None:
        await ws.send(encode_send(t.send))
    if t.expect is None:
        return
    while True:
        message = await ws.recv()
        if reply_matches(t.expect, message):
            return
        result.unexpected += 1


async def ping(ws: ClientConnection) -> float:
    """One WebSocket ping; the round trip in seconds."""
    waiter = await ws.ping()
    return await waiter


async def probe_once(plan: Plan, timeout: float | None = None) -> ProbeResult:
    """One complete probe: connect, optional exchange, ping, close. Never raises (but for cancellation).

    Args:
        plan: the target and its effective settings.
        timeout: overrides `plan.timeout` (a `/probe` scrape may have less time).
    """
    result = ProbeResult()
    clock = PhaseClock(result)
    t = plan.target
    ws: ClientConnection | None = None
    try:
        async with asyncio.timeout(timeout or plan.timeout):
            ws = await open_ws(plan, clock)
            if t.send is not None or t.expect is not None:
                clock.begin("exchange")
                await exchange(ws, t, result)
            if t.ping:
                clock.begin("ping")
                result.ping_rtt = await ping(ws)
            clock.finish()
            clock.phase = "close"
            result.success = True
            await ws.close()
    except Exception as exc:
        if not result.success:  # a failed close after a good probe does not fail it
            clock.finish()
            result.reason = classify(exc, clock.phase, result.unexpected)
            result.detail = f"{type(exc).__name__}: {exc}"
    finally:
        if ws is not None:
            ws.transport.abort()  # no-op after a clean close; frees a hung one at once
    return result


async def hold(ws: ClientConnection, plan: Plan, stop: asyncio.Event, on_rtt: Any) -> str | None:
    """Keep a persistent connection: ping every interval, drain server pushes, notice drops.

    Returns:
        None when `stop` was set, else the reason the connection dropped (`closed` or `timeout`).
    """
    drain = asyncio.create_task(_drain(ws))
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            await asyncio.wait({drain, stopping}, timeout=plan.interval, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                return None
            if drain.done():
                return "closed"
            try:
                async with asyncio.timeout(plan.timeout):
                    rtt = await ping(ws)
            except TimeoutError:
                return "timeout"
            except Exception as exc:
                return classify(exc, "ping")
            on_rtt(rtt)
    finally:
        for task in (drain, stopping):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drain


async def _drain(ws: ClientConnection) -> None:
    # Read and drop server pushes: an unread queue would stop websockets reading, and pongs with it.
    with contextlib.suppress(Exception):
        async for _message in ws:
            pass
