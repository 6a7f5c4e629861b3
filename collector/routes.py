"""HTTP routes as declarations: each route names its auth policy and its route class, and the web
guard enforces what the matched route declares (never a pattern on the request path).

Policies:
    `basic`: behind the web config's basic auth (when users are configured): /metrics, /health, /dora.
    `public`: no credentials, ever: /health/live (kubelet and load balancers probe it without any).
    `signed`: the request carries its own signature, checked by the handler against the body
        (Stripe, GitHub webhooks): exempt from basic auth, served on the webhook listener too.
    `token`: `Authorization: Bearer <token>`, checked by the guard against the route's declared token
        before the handler runs (POST /deployments); exempt from basic auth.

Route classes (`collector_http_class_in_flight{class}`) each have their own concurrency budget;
`ingest` routes are the only ones the public webhook listener serves.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "AUTH_POLICIES",
    "ROUTE_CLASSES",
    "Answer",
    "Auth",
    "RawHandler",
    "Route",
    "RouteClass",
    "RoutePolicies",
    "bearer_matches",
]

Auth = Literal["basic", "public", "signed", "token"]
RouteClass = Literal["health", "metrics", "ingest", "probe", "other"]

#: Every auth policy a route may declare.
AUTH_POLICIES: tuple[Auth, ...] = ("basic", "public", "signed", "token")
#: Every route class, each with its own budget (a bounded label value by construction).
ROUTE_CLASSES: tuple[RouteClass, ...] = ("health", "metrics", "ingest", "probe", "other")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Answer(NamedTuple):
    """A whole answer as a raw handler gives it: status, body and its exact Content-Type."""

    status: int
    body: bytes
    content_type: str = "application/json"

    def response(self) -> web.Response:
        """The same answer as an aiohttp response (byte for byte what the guard's lean path writes)."""
        return web.Response(status=self.status, body=self.body, headers={"Content-Type": self.content_type})


#: A route's handler on the guard's lean path (`collector.web.lean`): the request's headers and its
#: whole body in, the answer out, at once or as a future (never a coroutine: no task per request).
RawHandler = Callable[[Mapping[str, str], bytes], "Answer | asyncio.Future[Answer]"]


@dataclass(frozen=True, eq=False)
class Route:
    """One HTTP route a source (or the collector itself) serves, with how it is protected.

    Args:
        method: "GET", "POST", ... (a GET route answers HEAD too, as aiohttp's `web.get`).
        path: the aiohttp path (`/webhooks/stripe`); the guard matches on the router's match, not on it.
        handler: the aiohttp handler.
        auth: the policy the guard applies (module docstring).
        kind: the route class whose budget it uses.
        token: for `auth="token"`: returns the expected bearer token (read per request, so a rotated
            setting needs no new route); required for that policy.
        refused: for `auth="token"`: the answer to a missing or wrong token (a source counts and records
            its refusals); default a bare 401.
        raw: the same route's handler for the guard's lean path (`collector.web.lean`), which serves a
            plain request whose whole body has arrived without aiohttp's request and response
            objects; `handler` must answer exactly what `raw` does (it serves every other request).
            Only for `signed` and `public` routes with a fixed path.
    """

    method: str
    path: str
    handler: Handler
    auth: Auth
    kind: RouteClass = "other"
    token: Callable[[], str] | None = None
    refused: Handler | None = None
    raw: RawHandler | None = None

    def __post_init__(self) -> None:
        if self.auth not in AUTH_POLICIES:
            raise ValueError(f"route {self.method} {self.path}: unknown auth policy {self.auth!r}")
        if self.kind not in ROUTE_CLASSES:
            raise ValueError(f"route {self.method} {self.path}: unknown route class {self.kind!r}")
        if (self.auth == "token") != (self.token is not None):
            raise ValueError(f"route {self.method} {self.path}: a token route needs a token, and only it")
        if self.raw is not None and (self.auth not in ("signed", "public") or "{" in self.path):
            raise ValueError(
                f"route {self.method} {self.path}: a raw handler needs a fixed path, signed or public"
            )

    async def refuse(self, request: web.Request) -> web.StreamResponse:
        """The answer to a request whose bearer token is missing or wrong."""
        if self.refused is not None:
            return await self.refused(request)
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="collector"'},
        )


def bearer_matches(header: str | None, token: str) -> bool:
    """Constant-time check of `Authorization: Bearer <token>`."""
    if not header or not header.startswith("Bearer "):
        return False
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encode them back the same way, so
    # invalid UTF-8 is compared (and fails) instead of raising UnicodeEncodeError.
    return hmac.compare_digest(header[7:].strip().encode("utf-8", "surrogateescape"), token.encode())


class RoutePolicies:
    """The declared routes of one app, by the aiohttp route object they were registered as.

    The guard looks the policy up from `request.match_info.route`, the router's own match on the
    normalised path, so a crafted path (`/webhooks/../metrics`, percent-encoding) gets the policy of
    the route it really reaches, and a request matching nothing (404, 405) gets the strictest one.
    """

    def __init__(self) -> None:
        self._by_route: dict[AbstractRoute, Route] = {}

    def add(self, router: web.UrlDispatcher, route: Route) -> None:
        """Register `route` with `router` and remember its declaration.

        Raises:
            ValueError: the method and path are declared twice (the second would never be reached).
        """
        resource = router.add_resource(route.path)
        methods = [route.method.upper()]
        if methods[0] == "GET":
            methods.insert(0, "HEAD")  # as web.get(allow_head=True)
        for method in methods:
            try:
                registered = resource.add_route(method, route.handler)
            except RuntimeError as exc:  # aiohttp: "Added route will never be executed"
                raise ValueError(f"route {route.method} {route.path} is declared twice") from exc
            self._by_route[registered] = route

    def of(self, request: web.BaseRequest) -> Route | None:
        """The declaration of the route `request` matched; None when it matched none."""
        match = getattr(request, "match_info", None)
        if match is None or match.http_exception is not None:
            return None
        return self._by_route.get(match.route)

    def raw_routes(self) -> dict[tuple[str, str], Route]:
        """The routes with a raw handler, by (method, path): what the guard's lean path may serve."""
        return {(r.method.upper(), r.path): r for r in self if r.raw is not None}

    def __iter__(self) -> Iterator[Route]:
        return iter(dict.fromkeys(self._by_route.values()))
