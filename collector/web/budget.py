"""Request budgets: each route class has its own concurrency limit per listener, and one client
address may hold only a share of it, so slow webhook bodies or an auth flood cannot take the slots
that liveness, readiness and `/metrics` need (pure bookkeeping, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from collector.routes import ROUTE_CLASSES

if TYPE_CHECKING:
    from collector.settings import HttpSettings

__all__ = ["ROUTE_CLASSES", "Budgets", "Slot"]


def _limits(http: HttpSettings) -> dict[str, int]:
    return {
        "health": http.max_concurrent_health,
        "metrics": http.max_concurrent_scrapes,
        "ingest": http.max_concurrent_requests,
        "probe": http.max_concurrent_probes,
        "other": http.max_concurrent_other,
    }


@dataclass
class Slot:
    """One admitted request; `release` gives its capacity back (idempotent)."""

    budgets: Budgets
    key: tuple[str, str]
    client: tuple[str, str, str]
    released: bool = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        b = self.budgets
        b.in_flight[self.key] -= 1
        left = b.per_client[self.client] - 1
        if left:
            b.per_client[self.client] = left
        else:
            del b.per_client[self.client]  # the map holds only clients with requests in flight


@dataclass
class Budgets:
    """In-flight requests per (listener, class) and per (listener, class, client address).

    Args:
        http: the limits (`COLLECTOR_HTTP__MAX_CONCURRENT_*`, `COLLECTOR_HTTP__MAX_CLIENT_SHARE`).
    """

    http: HttpSettings
    in_flight: dict[tuple[str, str], int] = field(default_factory=dict)
    per_client: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Both limits per class, computed once: `acquire` runs on every request.
        self._limits = _limits(self.http)
        self._client_limits = {
            k: max(1, math.floor(v * self.http.max_client_share)) for k, v in self._limits.items()
        }

    def limit(self, route_class: str) -> int:
        return self._limits[route_class]

    def client_limit(self, route_class: str) -> int:
        """How many of a class's slots one address may hold: a share of the budget, at least one."""
        return self._client_limits[route_class]

    def acquire(self, listener: str, route_class: str, client: str) -> Slot | str:
        """A slot, or the refusal reason: `concurrency` (the class is full) or `client_concurrency`."""
        key = (listener, route_class)
        ckey = (listener, route_class, client)
        in_flight, per_client = self.in_flight, self.per_client
        held = in_flight.get(key, 0)
        if held >= self._limits[route_class]:
            return "concurrency"
        mine = per_client.get(ckey, 0)
        if mine >= self._client_limits[route_class]:
            return "client_concurrency"
        in_flight[key] = held + 1
        per_client[ckey] = mine + 1
        return Slot(self, key, ckey)
