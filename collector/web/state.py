"""What the guard middleware and the body reader use of the web security state (`WebSecurity`).

A protocol, so that `guard` and `body` depend on this small surface and not on `collector.web`,
which builds them (no import cycle between the package and its parts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aiohttp import web

    from collector.logsetup import LogFirst
    from collector.redact import Redactor
    from collector.routes import RoutePolicies
    from collector.settings import HttpSettings
    from collector.web.auth import BasicAuth
    from collector.web.budget import Budgets
    from collector.web.metrics import HttpMetrics

__all__ = ["GuardState"]


class GuardState(Protocol):
    """The current limits, metrics, credentials and route declarations the guard enforces."""

    http: HttpSettings
    metrics: HttpMetrics
    budgets: Budgets
    log_first: LogFirst
    redactor: Redactor
    routes: RoutePolicies
    auth: BasicAuth
    #: The web config's response headers, serialized (what the lean path writes; `lean.header_block`).
    header_block: bytes

    async def authorized(self, request: web.Request) -> bool | None: ...
