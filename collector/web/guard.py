"""The HTTP guard: a connection protocol with a request-head deadline, a listener whose TLS context can be
swapped without dropping the port, and the per-request checks (auth and limits) on each request.

On the collector's own listeners the per-request checks run as the protocol's request handler
(`GuardedHandler.handle`: the router's match, then the checks, then the route's handler), not as an
aiohttp middleware: the middleware chain cost ~5 us a request, a third of the guard. The middleware
(`make_middleware`) stays for any other server of the app (aiohttp's test server), and is what the
protocol's handler falls back to when the app has middlewares or sub-apps of its own. Both run
`guard_request`, so the checks are one code path.

aiohttp has no request-head timeout (a client trickling header bytes holds a connection for as long as
the keep-alive timeout, an hour by default), and it logs every malformed request with a traceback; both
are handled here so hostile clients cost a counter increment and at most a few log lines.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from collector.routes import Route, bearer_matches
from collector.web.body import body_error_reason, read_body, reject, reject_unread

if TYPE_CHECKING:
    import ssl

    from collector.web.state import GuardState

__all__ = ["GuardedHandler", "GuardedSite", "guard_request", "make_middleware"]

log = logging.getLogger("collector.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GuardedHandler(RequestHandler):
    """aiohttp's protocol plus a deadline for each request head, connection counts and quiet parse errors."""

    def __init__(
        self,
        manager: web.Server,
        *,
        guard: GuardState,
        listener: str,
        app: web.Application | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.listener = listener
        # The guard as the request handler (see the module docstring), given the app when nothing but
        # the guard stands between its router and its handlers (`_direct`); else aiohttp's own
        # handler, whose middlewares run the guard.
        self.app = app
        if app is not None:
            self._request_handler = self.handle
        # aiohttp's parser, but handing over one message per feed: when a later request of a pipelined
        # batch is malformed, the ones before it are still queued and answered (aiohttp's own
        # data_received replaces the whole batch with the 400). HTTP/1.1 (RFC 9112 9.3.2) wants them.
        # Needs aiohttp's message queue (3.14); an older aiohttp keeps its own batch behaviour.
        self.one_at_a_time = hasattr(self, "_max_msg_queue_size")
        if self.one_at_a_time:
            self._parser = HttpRequestParser(
                self,
                self._loop,
                self._read_bufsize,
                max_line_size=self.max_line_size,
                max_field_size=self.max_field_size,
                max_headers=self.max_headers,
                payload_exception=RequestPayloadError,
                auto_decompress=kwargs.get("auto_decompress", True),
                max_msg_queue_size=1,
            )
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
        if (
            not self.one_at_a_time
            or self._force_close
            or self._close
            or self._payload_parser is not None
            or self._upgraded
        ):
            if data and not self.in_request and self.head_timer is None:
                self.head_timer = self._loop.call_later(self.guard.http.header_timeout, self._head_timeout)
            super().data_received(data)
            return
        # aiohttp's request branch, draining the parser one message at a time (see __init__).
        messages: list[Any] = []
        upgraded, tail, chunk = False, b"", data
        parser = self._parser
        assert parser is not None  # as in aiohttp's branch: None only once the connection is lost
        while True:
            try:
                batch, upgraded, tail = parser.feed_data(chunk)
            except HttpProcessingError as exc:
                messages.append((_ErrInfo(status=400, exc=exc, message=exc.message), EMPTY_PAYLOAD))
                upgraded, tail = False, b""
                break
            if not batch:
                break
            messages.extend(batch)
            if upgraded or len(self._messages) + len(messages) >= self._max_msg_queue_size:
                break  # the rest waits in the parser; start() resumes it as the queue drains
            parser.message_consumed()
            chunk = b""
        if not messages and data and not self.in_request and self.head_timer is None:
            # A head still incomplete: its deadline runs from this first byte. A segment that holds a
            # whole head (the usual request) needs no timer: the handler starts at once.
            self.head_timer = self._loop.call_later(self.guard.http.header_timeout, self._head_timeout)
        for msg, payload in messages:
            self._request_count += 1
            self._messages.append((msg, payload))
        waiter = self._waiter
        if messages and waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._buffer_paused and len(self._messages) >= self._max_msg_queue_size:
            self._pause_reading_for_buffer()
        self._upgraded = upgraded
        if upgraded and tail:
            self._message_tail = tail

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """`Application._handle` without the middleware chain: resolve, then `guard_request`.

        The same steps as aiohttp's (the router's match frozen on the request, an `Expect` header
        answered by the route's expect handler first), so handlers see the same request.
        """
        app = self.app
        assert app is not None
        req = cast(web.Request, request)  # the app's request factory makes web.Requests
        match_info = await app.router.resolve(req)
        match_info.add_app(app)
        match_info.freeze()
        req._match_info = match_info  # as Application._handle does
        if req.headers.get(hdrs.EXPECT):
            resp = await match_info.expect_handler(req)
            await req.writer.drain()
            if resp is not None:
                return resp
        declared = self.guard.routes.of(req)
        return await guard_request(self.guard, req, match_info.handler, declared, self.listener, self)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a ~1.7 kB traceback per request when draining a refused body fails (bad gzip,
        a reset): log the first few per reason without the traceback, as every other bad input."""
        exc = kw.get("exc_info")
        reason = body_error_reason(exc) if isinstance(exc, BaseException) else "other"
        self.guard.log_first(
            f"aiohttp_{reason}",
            "aiohttp reported a failed request",
            listener=self.listener,
            aiohttp_msg=str(args[0])[:100] if args else None,
            error=type(exc).__name__ if isinstance(exc, BaseException) else None,
        )

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
        self.guard.log_first(
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
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message)
        ):
            # More than 128 header lines is a head too large, as documented: 431 (RFC 6585 5).
            status, reason, text = 431, "headers_too_large", "431 Request Header Fields Too Large"
        elif status == 400:
            reason, text = "bad_request", "400 Bad Request"
        elif status == 413:
            reason, text = "body_too_large", "413 Payload Too Large"
        self.guard.metrics.rejected.labels(self.listener, reason).inc()
        self.guard.metrics.requests.labels(self.listener, str(status)).inc()
        self.guard.log_first(
            f"http_{reason}",
            "rejected a request the HTTP parser could not accept",
            listener=self.listener,
            status=status,
            error=type(exc).__name__ if exc else None,
        )
        # The parser lost its place in the stream: say so (RFC 9112 9.6) and close.
        resp = web.Response(status=status, text=text + "\n", headers={"Connection": "close"})
        resp.force_close()
        return resp


_ACCEPT_BATCH = 32


class GuardedSite(web.BaseSite):
    """A TCP listener serving `GuardedHandler`s; `swap_tls` replaces its TLS context in place.

    The accept backlog is 1024 (aiohttp: 128): hundreds of clients reconnecting at once must not
    overflow it, or a kubelet probe waits for a SYN retransmit (1 s) behind them.

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
        guard: GuardState,
        listener: str,
        ssl_context: ssl.SSLContext | None,
        handler_kwargs: dict[str, Any],
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self.guard, self.listener = guard, listener
        self.ssl_context = ssl_context
        self._handler_kwargs = handler_kwargs
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        # The app whose requests the protocol guards itself (`_direct`), found when the site starts.
        self._direct_app: web.Application | None = None

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
            app=self._direct_app,
            loop=asyncio.get_running_loop(),
            **self._handler_kwargs,
        )

    async def _serve(self, ctx: ssl.SSLContext | None) -> asyncio.Server:
        assert self._sock is not None
        server = await asyncio.get_running_loop().create_server(
            self._factory,
            sock=self._sock.dup(),
            ssl=ctx,
            # asyncio accepts up to `backlog` connections per loop turn: a small batch lets a health
            # probe's request be handled between batches of a reconnect storm, not after all of it.
            backlog=_ACCEPT_BATCH,
            ssl_handshake_timeout=self.guard.http.header_timeout if ctx else None,
        )
        # ... while the kernel queue stays deep (asyncio re-listened with the batch size).
        self._sock.listen(self._backlog)
        return server

    async def start(self) -> None:
        await super().start()
        app = getattr(self._runner, "app", None)
        self._direct_app = app if isinstance(app, web.Application) and _direct(app) else None
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


def make_middleware(guard: GuardState) -> Middleware:
    """The per-request guard as an aiohttp middleware (for servers whose protocol is not a
    `GuardedHandler`, or an app with middlewares of its own): listener routing, class budgets, head
    size, basic auth, body size and rate."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        proto = request.protocol
        listener = getattr(proto, "listener", "main")
        return await guard_request(guard, request, handler, guard.routes.of(request), listener, proto)

    middleware.collector_guard = True  # type: ignore[attr-defined]  # see `_direct`
    return middleware


def _direct(app: web.Application) -> bool:
    """Whether the guard can run as the protocol's request handler: the app's only middleware is the
    guard's own and it has no sub-apps (whose middlewares and current-app context aiohttp sets up)."""
    middlewares = list(app.middlewares)
    return (
        bool(middlewares)
        and all(getattr(m, "collector_guard", False) for m in middlewares)
        and not any(isinstance(r, web.PrefixedSubAppResource) for r in app.router.resources())
    )


async def guard_request(
    guard: GuardState,
    request: web.Request,
    handler: Handler,
    declared: Route | None,
    listener: str,
    proto: Any,
) -> web.StreamResponse:
    """Check one request against its route's declaration (`declared`, None: it matched no route) and
    run `handler` if it passes; counted in `collector_http_requests_total` either way."""
    guarded = isinstance(proto, GuardedHandler)
    if guarded:
        proto.cancel_head_timer()
        proto.in_request = True
    status = 500
    try:
        response = await _guarded(guard, request, handler, listener, declared)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        guard.metrics.answered(listener, status).inc()
        if guarded:
            proto.in_request = False


async def _guarded(
    guard: GuardState, request: web.Request, handler: Handler, listener: str, declared: Route | None
) -> web.StreamResponse:
    http, m = guard.http, guard.metrics
    # The matched route's declaration decides, never the raw path: a crafted path gets the policy of
    # the route the router really matched, and a request matching none (404, 405) the strictest.
    auth, klass = (declared.auth, declared.kind) if declared is not None else ("basic", "other")
    if listener == "webhook" and klass != "ingest":
        # The public listener serves webhooks only: /metrics and /health stay on the internal one.
        return reject(guard, listener, "not_webhook", 404, "404 Not Found")
    raw = request.raw_headers
    head = sum([len(k) + len(v) for k, v in raw]) + 4 * len(raw) + len(request.raw_path) + 16
    if head > http.max_header_bytes:
        guard.log_first(
            "headers_too_large", "request head too large; answering 431", listener=listener, bytes=head
        )
        return reject(guard, listener, "headers_too_large", 431, "431 Request Header Fields Too Large")
    # Auth before the budget: a request waiting for bcrypt (or its failure padding) holds an auth
    # queue place, never one of the slots a valid scrape needs.
    if auth == "basic" and guard.auth.enabled:
        verdict = await guard.authorized(request)
        if verdict is None:
            # bcrypt is saturated: a flood of unknown credentials must not queue without bound.
            refuse = reject_unread if request.body_exists else reject
            return refuse(guard, listener, "auth_busy", 503, "503 Busy", **{"Retry-After": "1"})
        if not verdict:
            # No detail: which of user or password was wrong is exactly what an attacker wants.
            refuse = reject_unread if request.body_exists else reject
            return refuse(
                guard,
                listener,
                "unauthorized",
                401,
                "401 Unauthorized",
                **{"WWW-Authenticate": 'Basic realm="collector"'},
            )
    slot = guard.budgets.acquire(listener, klass, request.remote or "?")
    if isinstance(slot, str):
        guard.log_first(
            slot,
            "route class budget full; answering 503",
            listener=listener,
            route_class=klass,
            limit=guard.budgets.limit(klass) if slot == "concurrency" else guard.budgets.client_limit(klass),
        )
        refuse = reject_unread if request.body_exists else reject
        return refuse(guard, listener, slot, 503, "503 Too Many Concurrent Requests", **{"Retry-After": "1"})
    # (collector_http_requests_in_flight and _route_class_in_flight read the slots: `follow_budgets`)
    try:
        if request.body_exists:
            refused = await read_body(guard, request, listener)
            if refused is not None:
                return refused
        # A token route: the guard checks the declared bearer token once the body is read (as the
        # handler did before), and a refusal is the route's own answer (the source counts them).
        if (
            declared is not None
            and declared.token is not None
            and not bearer_matches(request.headers.get("Authorization"), declared.token())
        ):
            handler = declared.refuse
        try:
            response = await handler(request)
            if klass != "metrics" and guard.redactor.secrets and isinstance(response, web.Response):
                # Error texts in /health, /probe and the status page come from exceptions that may
                # quote a credential (an API echoing its key); the exposition itself holds none.
                body = response.body
                if isinstance(body, bytes):
                    masked = guard.redactor.bytes(body)
                    if masked is not body:
                        response.body = masked
            return response
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A handler bug must not take the connection's other requests or the process with it.
            guard.log_first(
                "handler_error",
                "unhandled exception in an HTTP handler; answering 500",
                listener=listener,
                path=declared.path if declared is not None else "?",
                error=f"{type(exc).__name__}",
                level=logging.ERROR,
            )
            m.rejected.labels(listener, "handler_error").inc()
            return web.Response(status=500, text="500 Internal Server Error\n")
    finally:
        slot.release()
