"""Request bodies in the guard: read up front within the size, total-time and minimum-rate limits, and the
refusals that go with them (a refused body closes the connection so it cannot desync the next request)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collector.web.state import GuardState

__all__ = ["BODY_RATE_GRACE", "body_error_reason", "read_body", "reject", "reject_unread"]


def body_error_reason(exc: BaseException) -> str:
    """`bad_encoding` when a compressed body does not decompress, else `bad_request`."""
    from aiohttp.http_exceptions import ContentEncodingError, DecompressSizeError

    seen: BaseException | None = exc
    for _ in range(4):  # aiohttp wraps the decoder's error in RequestPayloadError
        if seen is None:
            break
        if isinstance(seen, (ContentEncodingError, DecompressSizeError)) or "decompress" in str(seen).lower():
            return "bad_encoding"
        seen = seen.__cause__ or seen.__context__
    return "bad_request"


def reject(
    guard: GuardState, listener: str, reason: str, status: int, text: str, **headers: str
) -> web.Response:
    guard.metrics.rejected.labels(listener, reason).inc()
    return web.Response(status=status, text=text + "\n", headers=headers)


def reject_unread(
    guard: GuardState, listener: str, reason: str, status: int, text: str, **headers: str
) -> web.Response:
    """Reject a request whose body was not (fully) read: close the connection so it cannot desync."""
    resp = reject(guard, listener, reason, status, text, Connection="close", **headers)
    resp.force_close()
    return resp


#: A body's first second is free of the rate check (connection set-up, a client's first write).
BODY_RATE_GRACE = 1.0


async def read_body(guard: GuardState, request: web.Request, listener: str) -> web.Response | None:
    """Read the body up front (aiohttp caches it for the handler) within the size, time and rate limits.

    The rate check wakes only when the bytes received so far stop covering the elapsed time, so 500
    slow clients cost 500 timers, not 500 polls a tick.
    """
    http = guard.http
    if request.content_length is not None and request.content_length > http.max_body_bytes:
        # Refused before reading a byte; the connection closes, so the unread body cannot desync it.
        guard.log_first(
            "body_too_large",
            "request body too large; answering 413",
            listener=listener,
            bytes=request.content_length,
        )
        return reject_unread(guard, listener, "body_too_large", 413, "413 Payload Too Large")
    if request.content.is_eof():
        # The whole body is already here (a webhook's head and body usually arrive in one segment):
        # reading it cannot wait, so no time or rate limit can trip; skip the reader task and timers.
        return await _read_buffered(guard, request, listener)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + http.body_timeout
    reader = asyncio.ensure_future(request.read())
    reason: str | None = None
    try:
        while not reader.done():
            now = loop.time()
            got = request.content.total_bytes
            wake = deadline
            if http.min_body_rate:
                # When the bytes so far stop covering the time spent at min_body_rate.
                wake = min(wake, start + BODY_RATE_GRACE + (got + 1) / http.min_body_rate)
            if now >= deadline:
                reason = "body_timeout"
                break
            if wake <= now:
                reason = "body_too_slow"
                break
            await asyncio.wait({reader}, timeout=max(0.01, wake - now))
        if reason is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        else:
            reader.result()
    except asyncio.CancelledError:
        reader.cancel()
        raise
    except Exception as exc:
        return _refuse_unreadable(guard, listener, exc)
    if reason is not None:
        guard.log_first(
            reason,
            "request body did not arrive in time; answering 408",
            listener=listener,
            timeout_s=http.body_timeout,
            min_rate=http.min_body_rate,
        )
        return reject_unread(guard, listener, reason, 408, "408 Request Timeout")
    return None


async def _read_buffered(guard: GuardState, request: web.Request, listener: str) -> web.Response | None:
    """`read_body` for a body that has fully arrived: the same refusals, without the deadline machinery."""
    try:
        await request.read()
    except Exception as exc:
        return _refuse_unreadable(guard, listener, exc)
    return None


def _refuse_unreadable(guard: GuardState, listener: str, exc: Exception) -> web.Response:
    """The answer to a body that could not be read: 413 when too large, else 400, logged once per reason."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        guard.log_first("body_too_large", "chunked request body too large; answering 413", listener=listener)
        return reject_unread(guard, listener, "body_too_large", 413, "413 Payload Too Large")
    # A malformed chunked or compressed body, or a client that hung up mid-body.
    why = body_error_reason(exc)
    guard.log_first(
        f"body_{why}",
        "request body could not be read; answering 400",
        listener=listener,
        error=type(exc).__name__,
    )
    return reject_unread(guard, listener, why, 400, "400 Bad Request")
