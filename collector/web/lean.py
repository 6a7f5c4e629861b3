"""The guard's lean path: a plain request to a route with a raw handler, answered from the protocol.

A Stripe webhook cost ~75 us of server CPU against ~40 us for a bare aiohttp handler that only checks
the signature; about half of the difference was aiohttp's per-request machinery, which that floor
pays once but a guarded route pays with more around it (a task per request, the request and response
objects, the writer, the prepare signal, three loop turns). For a route that declares a raw handler
(`Route.raw`: headers and whole body in, an `Answer` or a future of one out), `GuardedHandler` serves
a request itself when it is plain enough that aiohttp would do nothing else with it:

- HTTP/1.1, keep-alive, no upgrade, no `Expect`, no `Transfer-Encoding: chunked`, no
  `Content-Encoding` (aiohttp would decompress: that stays on its path, with its errors);
- its whole body already arrived (a webhook's head and body come in one segment), within both body
  limits;
- the connection idle: no request of it queued or in aiohttp's hands, its writes not paused;
- and the guard would let it through: the route is served on this listener, the head is within
  `COLLECTOR_HTTP__MAX_HEADER_BYTES`, the route class's budget has a slot for this client.

Anything else, every request a check would refuse included, takes aiohttp's path, where the guard
refuses it (`guard._guarded`): refusals, their metrics and their logs stay one code path. What the
lean path does itself is what `_guarded` does for an admitted request of such a route: take the
slot, run the handler, mask secrets in the answer, answer 500 for a handler error, count the answer
in `collector_http_requests_total`, give the slot back. The bytes written are aiohttp's for the same
answer (status line, Content-Type, Content-Length, Date, Server, the web config's headers); a test
sends the same requests both ways and compares them.

Answers stay in request order: while a lean request waits for its future, bytes that arrive on its
connection are held (and reading paused), then parsed once it is answered.

This module holds the pure parts (which requests, the answer's bytes); the protocol side is in
`guard.GuardedHandler`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

__all__ = ["HANDLER_ERROR", "answer_bytes", "head_size", "header_block", "is_plain"]

#: The answer to a raw handler that raised: what `_guarded` answers for a handler error.
HANDLER_ERROR = (500, b"500 Internal Server Error\n", "text/plain; charset=utf-8")

_SERVER = f"Server: {SERVER_SOFTWARE}\r\n"
# Reason phrases as aiohttp gives them (`web.Response(status=...).reason`), by status.
_reasons: dict[int, str] = {}


def _reason(status: int) -> str:
    reason = _reasons.get(status)
    if reason is None:
        reason = _reasons[status] = web.Response(status=status).reason
    return reason


def head_size(raw_headers: Any, raw_path: str) -> int:
    """The request head's size as the guard counts it against `max_header_bytes`."""
    return sum([len(k) + len(v) for k, v in raw_headers]) + 4 * len(raw_headers) + len(raw_path) + 16


def is_plain(msg: Any, payload: Any) -> bool:
    """Whether aiohttp would do nothing with this request but hand over its headers and body.

    Args:
        msg: the parser's message (`RawRequestMessage`).
        payload: its body stream.
    """
    return (
        msg.version == HttpVersion11
        and not msg.should_close
        and not msg.upgrade
        and not msg.chunked
        and msg.compression is None
        and hdrs.EXPECT not in msg.headers
        and payload.is_eof()
        and payload.exception() is None
    )


def header_block(headers: Mapping[str, str]) -> bytes:
    """The web config's response headers, serialized as aiohttp writes them (after Server)."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("utf-8")


def answer_bytes(status: int, body: bytes, content_type: str, extra: bytes) -> bytes:
    """A whole HTTP/1.1 keep-alive answer, byte for byte what aiohttp writes for
    `web.Response(status=status, body=body, headers={"Content-Type": content_type})` (plus `extra`,
    the web config's headers, which the guard adds as the response is prepared).

    Raises:
        ValueError: a status whose answer has no body (1xx, 204, 304): aiohttp writes those otherwise.
    """
    if status < 200 or status in (204, 304):
        raise ValueError(f"a raw handler answered {status}, which the lean path does not write")
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nDate: {rfc822_formatted_time()}\r\n{_SERVER}"
    )
    return b"".join((head.encode("utf-8"), extra, b"\r\n", body))
