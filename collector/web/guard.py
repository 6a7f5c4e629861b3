"""The HTTP guard: a connection protocol with a request-head deadline, a listener whose TLS context can be
swapped without dropping the port, and the middleware that enforces auth and limits on each request.

aiohttp has no request-head timeout (a client trickling header bytes holds a connection for as long as
the keep-alive timeout, an hour by default), and it logs every malformed request with a traceback; both
are handled here so hostile clients cost a counter increment and at most a few log lines.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from collector.logsetup import LogFirst

if TYPE_CHECKING:
    import ssl

    from collector.web import WebSecurity

__all__ = ["GuardedHandler", "GuardedSite", "is_webhook_route", "make_middleware"]

log = logging.getLogger("collector.web")
_log_first = LogFirst(log)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_webhook_route(request: web.Request) -> bool:
    """True for routes that carry their own signature or token check: `/webhooks/*` and `/deployments`.

    Decided on the matched route's canonical path, never on the raw request path, so a crafted path
    (`/webhooks/../metrics`, percent-encoding) cannot reach a protected route without auth.
    """
    if request.match_info.http_exception is not None:
        return False  # 404 or 405: no route matched
    route = request.match_info.route
    if route.resource is None:
        return False
    canonical = route.resource.canonical
    return canonical.startswith("/webhooks/") or canonical == "/deployments"


def _is_liveness(request: web.Request) -> bool:
    """`/health/live` answers `{"status": "ok"}` and nothing else: kubelet and load balancers probe it
    without credentials (readiness and /health carry error details and stay behind auth)."""
    resource = request.match_info.route.resource if request.match_info.http_exception is None else None
    return resource is not None and resource.canonical == "/health/live"


class GuardedHandler(RequestHandler):
    """aiohttp's protocol plus a deadline for each request head, connection counts and quiet parse errors."""

    def __init__(self, manager: web.Server, *, guard: WebSecurity, listener: str, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.listener = listener
        # Armed at the first byte of a request head, cancelled when the handler starts.
        self.head_timer: asyncio.TimerHandle | None = None
        # True while a request is in the middleware (its body has its own deadline there).
        self.in_request = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.guard.metrics.connections.labels(self.listener).inc()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.cancel_head_timer()
        self.guard.metrics.connections.labels(self.listener).dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and not self.in_request and self.head_timer is None:
            self.head_timer = self._loop.call_later(self.guard.http.header_timeout, self._head_timeout)
        super().data_received(data)

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.in_request or self.transport is None:
            return
        self.guard.metrics.rejected.labels(self.listener, "header_timeout").inc()
        peer = self.transport.get_extra_info("peername")
        _log_first(
            "header_timeout",
            "closing a connection whose request head did not arrive in time",
            listener=self.listener,
            peer=str(peer[0]) if peer else None,
            timeout_s=self.guard.http.header_timeout,
        )
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer an unparseable request (431 for an oversized head, else 400), count it, log it once."""
        self.cancel_head_timer()
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        reason, text = "handler_error", "500 Internal Server Error"
        if isinstance(exc, LineTooLong):
            status, reason, text = 431, "headers_too_large", "431 Request Header Fields Too Large"
        elif status == 400:
            reason, text = "bad_request", "400 Bad Request"
        elif status == 413:
            reason, text = "body_too_large", "413 Payload Too Large"
        self.guard.metrics.rejected.labels(self.listener, reason).inc()
        self.guard.metrics.requests.labels(self.listener, str(status)).inc()
        _log_first(
            f"http_{reason}",
            "rejected a request the HTTP parser could not accept",
            listener=self.listener,
            status=status,
            error=type(exc).__name__ if exc else None,
        )
        resp = web.Response(status=status, text=text + "\n")
        resp.force_close()
        return resp


class GuardedSite(web.BaseSite):
    """A TCP listener serving `GuardedHandler`s; `swap_tls` replaces its TLS context in place.

    The site owns one listening socket. Each asyncio server gets a duplicate of it, so a new server
    (with a new certificate, client CA or TLS version) can take over before the old one closes: the
    port never stops accepting, and connections already open finish on their old context.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: WebSecurity,
        listener: str,
        ssl_context: ssl.SSLContext | None,
        handler_kwargs: dict[str, Any],
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self.guard, self.listener = guard, listener
        self.ssl_context = ssl_context
        self._handler_kwargs = handler_kwargs
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host, port = self.address
        return f"{scheme}://{host}:{port}"

    @property
    def address(self) -> tuple[str, int]:
        if self._sock is None:
            return self._host, self._port
        host, port = self._sock.getsockname()[:2]
        return host, port

    def _factory(self) -> GuardedHandler:
        server = self._runner.server
        assert server is not None
        return GuardedHandler(
            server,
            guard=self.guard,
            listener=self.listener,
            loop=asyncio.get_running_loop(),
            **self._handler_kwargs,
        )

    async def _serve(self, ctx: ssl.SSLContext | None) -> asyncio.Server:
        assert self._sock is not None
        return await asyncio.get_running_loop().create_server(
            self._factory,
            sock=self._sock.dup(),
            ssl=ctx,
            backlog=self._backlog,
            ssl_handshake_timeout=self.guard.http.header_timeout if ctx else None,
        )

    async def start(self) -> None:
        await super().start()
        infos = await asyncio.get_running_loop().getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # "[::]" serves IPv4 too, like Go's listener for exporter-toolkit.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(infos[0][4])
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._server = await self._serve(self.ssl_context)

    async def swap_tls(self, ctx: ssl.SSLContext | None) -> None:
        """Serve new connections with `ctx` (None: plain HTTP); open connections keep theirs."""
        old = self._server
        self._server = await self._serve(ctx)
        self.ssl_context = ctx
        if old is not None:
            old.close()

    async def stop(self) -> None:
        self._runner._unreg_site(self)
        if self._server is not None:
            self._server.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def make_middleware(guard: WebSecurity) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The per-request guard: listener routing, concurrency, head size, basic auth, body size and time."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        proto = request.protocol
        listener = getattr(proto, "listener", "main")
        if isinstance(proto, GuardedHandler):
            proto.cancel_head_timer()
            proto.in_request = True
        m = guard.metrics
        status = 500
        try:
            response = await _guarded(guard, request, handler, listener)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            m.requests.labels(listener, str(status)).inc()
            if isinstance(proto, GuardedHandler):
                proto.in_request = False

    return middleware


def _reject(
    guard: WebSecurity, listener: str, reason: str, status: int, text: str, **headers: str
) -> web.Response:
    guard.metrics.rejected.labels(listener, reason).inc()
    return web.Response(status=status, text=text + "\n", headers=headers)


async def _guarded(
    guard: WebSecurity, request: web.Request, handler: Handler, listener: str
) -> web.StreamResponse:
    http, m = guard.http, guard.metrics
    webhook = is_webhook_route(request)
    if listener == "webhook" and not webhook:
        # The public listener serves webhooks only: /metrics and /health stay on the internal one.
        return _reject(guard, listener, "not_webhook", 404, "404 Not Found")
    gauge = m.in_flight.labels(listener)
    if guard.in_flight[listener] >= http.max_concurrent_requests:
        _log_first(
            "concurrency",
            "too many concurrent requests; answering 503",
            listener=listener,
            limit=http.max_concurrent_requests,
        )
        return _reject(
            guard, listener, "concurrency", 503, "503 Too Many Concurrent Requests", **{"Retry-After": "1"}
        )
    guard.in_flight[listener] += 1
    gauge.inc()
    try:
        head = sum(len(k) + len(v) + 4 for k, v in request.raw_headers) + len(request.raw_path) + 16
        if head > http.max_header_bytes:
            _log_first(
                "headers_too_large", "request head too large; answering 431", listener=listener, bytes=head
            )
            return _reject(guard, listener, "headers_too_large", 431, "431 Request Header Fields Too Large")
        if (
            not webhook
            and not _is_liveness(request)
            and guard.auth.enabled
            and not await guard.authorized(request)
        ):
            # No detail: which of user or password was wrong is exactly what an attacker wants to know.
            return _reject(
                guard,
                listener,
                "unauthorized",
                401,
                "401 Unauthorized",
                **{"WWW-Authenticate": 'Basic realm="collector"'},
            )
        if request.body_exists:
            refused = await _read_body(guard, request, listener)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A handler bug must not take the connection's other requests or the process with it.
            _log_first(
                "handler_error",
                "unhandled exception in an HTTP handler; answering 500",
                listener=listener,
                path=request.match_info.route.resource.canonical
                if request.match_info.route.resource
                else "?",
                error=f"{type(exc).__name__}",
                level=logging.ERROR,
            )
            m.rejected.labels(listener, "handler_error").inc()
            return web.Response(status=500, text="500 Internal Server Error\n")
    finally:
        guard.in_flight[listener] -= 1
        gauge.dec()


def _reject_unread(guard: WebSecurity, listener: str, reason: str, status: int, text: str) -> web.Response:
    """Reject a request whose body was not (fully) read: close the connection so it cannot desync."""
    resp = _reject(guard, listener, reason, status, text)
    resp.force_close()
    return resp


async def _read_body(guard: WebSecurity, request: web.Request, listener: str) -> web.Response | None:
    """Read the body up front (aiohttp caches it for the handler) within the size and time limits."""
    http = guard.http
    if request.content_length is not None and request.content_length > http.max_body_bytes:
        # Refused before reading a byte; the connection closes, so the unread body cannot desync it.
        _log_first(
            "body_too_large",
            "request body too large; answering 413",
            listener=listener,
            bytes=request.content_length,
        )
        return _reject_unread(guard, listener, "body_too_large", 413, "413 Payload Too Large")
    try:
        async with asyncio.timeout(http.body_timeout):
            await request.read()
    except web.HTTPRequestEntityTooLarge:
        _log_first("body_too_large", "chunked request body too large; answering 413", listener=listener)
        return _reject_unread(guard, listener, "body_too_large", 413, "413 Payload Too Large")
    except TimeoutError:
        _log_first(
            "body_timeout",
            "request body did not arrive in time; answering 408",
            listener=listener,
            timeout_s=http.body_timeout,
        )
        return _reject_unread(guard, listener, "body_timeout", 408, "408 Request Timeout")
    except Exception as exc:
        # A malformed chunked or compressed body, or a client that hung up mid-body.
        _log_first(
            "bad_body",
            "request body could not be read; answering 400",
            listener=listener,
            error=type(exc).__name__,
        )
        return _reject_unread(guard, listener, "bad_request", 400, "400 Bad Request")
    return None
