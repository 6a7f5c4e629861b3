"""The HTTP guard: a connection protocol with a request-head deadline, a listener whose TLS context can be
swapped without dropping the port, and the per-request checks (auth and limits) on each request.

On the collector's own listeners the per-request checks run as the protocol's request handler
(`GuardedHandler.handle`: the router's match, then the checks, then the route's handler), not as an
aiohttp middleware: the middleware chain cost ~5 us a request, a third of the guard. The middleware
(`make_middleware`) stays for any other server of the app (aiohttp's test server), and is what the
protocol's handler falls back to when the app has middlewares or sub-apps of its own. Both run
`guard_request`, so the checks are one code path.

For a route with a raw handler (`Route.raw`), a plain request whose whole body has arrived is answered
by the protocol itself, without aiohttp's request, response and task (`collector.web.lean` says which
requests, and why: a webhook then costs about what aiohttp's bare handler does); every other request,
each one a check refuses included, takes the path above.

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

from collector.routes import Answer, Route, bearer_matches
from collector.web.body import body_error_reason, read_body, reject, reject_unread
from collector.web.budget import Slot
from collector.web.lean import HANDLER_ERROR, answer_bytes, head_size, is_plain

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
        raw_routes: dict[tuple[str, str], Route] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.listener = listener
        # The routes this protocol may answer itself (`collector.web.lean`), by (method, raw path);
        # empty unless the guard is the app's request handler (`_direct`).
        self.raw_routes = raw_routes if raw_routes is not None and app is not None else {}
        self.max_body = min(guard.http.max_body_bytes, app._client_max_size) if app is not None else 0
        # The lean request waiting for its answer (its route and slot), and the bytes that arrived
        # behind it meanwhile (answered in order: parsed once it is answered).
        self.lean: tuple[Route, Slot] | None = None
        self.held = b""
        self.remote = "?"
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
        # The budget's client key, as `request.remote` gives it on aiohttp's path.
        peer = self.peername
        self.remote = (str(peer[0]) if isinstance(peer, (list, tuple)) else str(peer)) if peer else "?"

    def connection_lost(self, exc: BaseException | None) -> None:
        self.cancel_head_timer()
        self.guard.metrics.connections.labels(self.listener).dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lean is not None:
            # A lean request is being answered: what comes behind it waits (answers go out in order),
            # also what the parser already holds (its body's reader calls `resume_reading`, which
            # parses on with an empty `data`, before the handler has even run).
            if data:
                self.held += data
                if not self._buffer_paused:
                    self._pause_reading_for_buffer()
            return
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
        served = False  # a request of this segment answered by the lean path
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
            if self.raw_routes and not messages and self._idle():
                lean = self._lean_admit(batch[0])
                if lean is not None:
                    if not self._lean_serve(batch[0], *lean):
                        return  # answered later (`_lean_resolved`); the rest waits in the parser
                    parser.message_consumed()
                    chunk, served = b"", True
                    continue
            messages.extend(batch)
            if upgraded or len(self._messages) + len(messages) >= self._max_msg_queue_size:
                break  # the rest waits in the parser; start() resumes it as the queue drains
            parser.message_consumed()
            chunk = b""
        if not messages and not served and data and not self.in_request and self.head_timer is None:
            # A head still incomplete: its deadline runs from this first byte. A segment that holds a
            # whole head (the usual request, also one the lean path answered) needs no timer: the
            # handler starts at once.
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

    # -- the lean path (`collector.web.lean`) ---------------------------------------------------------
    def _idle(self) -> bool:
        """No request of this connection queued or in aiohttp's hands, and its writes flowing."""
        waiter = self._waiter
        return (
            waiter is not None
            and not waiter.done()
            and not self._messages
            and not self.in_request
            and not self._paused
            and not self._force_close
            and not self._close
            and self.transport is not None
        )

    def _lean_admit(self, message: tuple[Any, Any]) -> tuple[Route, Slot] | None:
        """The route and budget slot of a request the lean path serves; None: aiohttp's path serves it
        (and `_guarded` refuses whatever would be refused)."""
        msg, payload = message
        if isinstance(msg, _ErrInfo):
            return None
        route = self.raw_routes.get((msg.method, msg.path))
        if (
            route is None
            or (self.listener == "webhook" and route.kind != "ingest")
            or not is_plain(msg, payload)
            or payload.total_bytes > self.max_body
            or head_size(msg.raw_headers, msg.path) > self.guard.http.max_header_bytes
        ):
            return None
        slot = self.guard.budgets.acquire(self.listener, route.kind, self.remote)
        return None if isinstance(slot, str) else (route, slot)

    def _lean_serve(self, message: tuple[Any, Any], route: Route, slot: Slot) -> bool:
        """Run the raw handler; True when it answered at once, False when its future will."""
        msg, payload = message
        assert route.raw is not None
        self.cancel_head_timer()
        self.in_request = True
        self._request_in_progress = True  # what aiohttp's shutdown waits for
        self._request_count += 1
        if self._manager is not None:
            self._manager.requests_count += 1
        self._lean_keepalive()
        self.lean = (route, slot)  # from here on, nothing behind this request is parsed
        try:
            answer = route.raw(msg.headers, payload.read_nowait(-1))
        except Exception as exc:
            answer = self._lean_error(route, exc)
        if isinstance(answer, Answer):
            self.lean = None
            self._lean_answer(route, slot, answer)
            return True
        answer.add_done_callback(self._lean_resolved)
        return False

    def _lean_resolved(self, future: asyncio.Future[Answer]) -> None:
        assert self.lean is not None
        route, slot = self.lean
        try:
            answer = future.result()
        except asyncio.CancelledError:
            # As on aiohttp's path: a cancelled handler closes its connection unanswered.
            self._lean_finished(route, slot, 500)
            self.lean = None
            self.force_close()
            return
        except Exception as exc:
            answer = self._lean_error(route, exc)
        self._lean_answer(route, slot, answer)
        self.lean = None
        if self._parser is None or self.transport is None:
            return  # the connection is gone (its event was still applied, and is counted)
        self._parser.message_consumed()
        held, self.held = self.held, b""
        if self._buffer_paused:
            self._resume_reading_for_buffer()
        # What arrived meanwhile, behind what the parser still holds of the same segment.
        self.data_received(held)

    def _lean_answer(self, route: Route, slot: Slot, answer: Answer) -> None:
        status, body, content_type = answer
        guard = self.guard
        body = masked(guard, route.kind, body)
        try:
            data = answer_bytes(status, body, content_type, guard.header_block)
        except ValueError as exc:
            status, body, content_type = self._lean_error(route, exc)
            data = answer_bytes(status, body, content_type, guard.header_block)
        self._lean_finished(route, slot, status)
        if self.transport is not None:
            self.transport.write(data)
        self._lean_keepalive()

    def _lean_finished(self, route: Route, slot: Slot, status: int) -> None:
        slot.release()
        self.guard.metrics.answered(self.listener, status).inc()
        self.in_request = False
        self._request_in_progress = False
        waiter = self._handler_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lean_error(self, route: Route, exc: Exception) -> Answer:
        """What `_guarded` answers and records for a handler that raised."""
        return handler_failed(self.guard, self.listener, route.path, exc)

    def _process_keepalive(self) -> None:
        # aiohttp closes a connection whose start loop waits at the idle deadline; a lean request
        # being answered is not idle, whatever the loop waits for.
        if self.lean is not None:
            self._keepalive_handle = None
            self._lean_keepalive()
            return
        super()._process_keepalive()

    def _lean_keepalive(self) -> None:
        """Move the idle deadline on, as aiohttp does after each answer (its start loop never ran)."""
        if self._keepalive_timeout > 0:
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(
                    self._next_keepalive_close_time, self._process_keepalive
                )

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
        # The app whose requests the protocol guards itself (`_direct`), found when the site starts,
        # and the routes its protocol may then answer itself (`_lean_routes`).
        self._direct_app: web.Application | None = None
        self._raw_routes: dict[tuple[str, str], Route] = {}

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
            raw_routes=self._raw_routes,
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
        if self._direct_app is not None:
            self._raw_routes = _lean_routes(self._direct_app, self.guard)
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


def _lean_routes(app: web.Application, guard: GuardState) -> dict[tuple[str, str], Route]:
    """The raw routes the lean path may serve for `app`: none when the app prepares answers with
    anything but the guard's own header hook (the lean path writes answers without that signal)."""
    if not all(getattr(hook, "collector_headers", False) for hook in app.on_response_prepare):
        return {}
    return guard.routes.raw_routes()


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
    http = guard.http
    # The matched route's declaration decides, never the raw path: a crafted path gets the policy of
    # the route the router really matched, and a request matching none (404, 405) the strictest.
    auth, klass = (declared.auth, declared.kind) if declared is not None else ("basic", "other")
    if listener == "webhook" and klass != "ingest":
        # The public listener serves webhooks only: /metrics and /health stay on the internal one.
        return reject(guard, listener, "not_webhook", 404, "404 Not Found")
    head = head_size(request.raw_headers, request.raw_path)
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
            if isinstance(response, web.Response) and isinstance(body := response.body, bytes):
                mask = masked(guard, klass, body)
                if mask is not body:
                    response.body = mask
            return response
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A handler bug must not take the connection's other requests or the process with it.
            return handler_failed(
                guard, listener, declared.path if declared is not None else "?", exc
            ).response()
    finally:
        slot.release()


def masked(guard: GuardState, klass: str, body: bytes) -> bytes:
    """`body` with the configured secrets masked (the same object when none occurs), on every route
    class but `metrics`: error texts in /health, /probe and the status page come from exceptions that
    may quote a credential (an API echoing its key); the exposition itself holds none."""
    if klass == "metrics" or not guard.redactor.secrets:
        return body
    return guard.redactor.bytes(body)


def handler_failed(guard: GuardState, listener: str, path: str, exc: Exception) -> Answer:
    """Count and log (the first few) a handler that raised; the 500 to answer (either path's)."""
    guard.log_first(
        "handler_error",
        "unhandled exception in an HTTP handler; answering 500",
        listener=listener,
        path=path,
        error=f"{type(exc).__name__}",
        level=logging.ERROR,
    )
    guard.metrics.rejected.labels(listener, "handler_error").inc()
    return Answer(*HANDLER_ERROR)
