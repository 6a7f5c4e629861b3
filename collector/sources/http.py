"""HTTP helpers the sources' routes share (the webhook and report endpoints)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["read_limited"]


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it exceeds `limit` bytes (refused unread when declared so).

    `request.read()` rather than the raw stream: the HTTP guard middleware may already have read and
    cached the body, and aiohttp's own `client_max_size` still bounds chunked bodies (a body over it
    fails to read: None too).
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None
    return None if len(body) > limit else body
