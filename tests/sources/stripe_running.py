"""The collector with the Stripe webhook source on, started: shared by the Stripe end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from collector.settings import StripeSettings
from collector.sources.stripe.source import StripeSource
from tests.helpers import Running, make_settings, serve
from tests.sources.stripe_helpers import SECRET, event

T0 = 1_700_000_000


@asynccontextmanager
async def collector(tmp_path: Path, **stripe: Any) -> AsyncIterator[Running]:
    stripe.setdefault("webhook_secrets", [SECRET])
    async with serve(make_settings(tmp_path, stripe=StripeSettings(**stripe))) as running:
        await until_started(running)
        await until_pruned(running)
        yield running


async def until_started(running: Running) -> None:
    # The webhook answers 503 until the source has loaded its state from the store.
    for _ in range(400):
        if all(ctx.status.state == "running" for _s, ctx in running.runtime.sources):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("stripe source did not start")


async def until_pruned(running: Running) -> None:
    """Wait for the Stripe source's first prune, which runs as it starts.

    A test that breaks the store on purpose (a renamed table) and counts `reason="store"` errors
    would otherwise count the prune's failure too when the prune's first transaction happens to be
    queued after the break: 6 errors instead of 5 in `test_failed_group_commit_...` under load.
    """
    for _ in range(400):
        if all(s.prunes >= 1 for s, _ctx in running.runtime.sources if isinstance(s, StripeSource)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("stripe source did not prune")


def sub_event(name: str, sub_id: str, created: int, **obj: Any) -> dict[str, Any]:
    return event(name, created=created, id=sub_id, **obj)
