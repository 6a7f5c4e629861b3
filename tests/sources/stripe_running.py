"""The collector with the Stripe webhook source on, started: shared by the Stripe end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from collector.settings import StripeSettings
from tests.helpers import Running, make_settings, serve
from tests.sources.stripe_helpers import SECRET, event

T0 = 1_700_000_000


@asynccontextmanager
async def collector(tmp_path: Path, **stripe: Any) -> AsyncIterator[Running]:
    stripe.setdefault("webhook_secrets", [SECRET])
    async with serve(make_settings(tmp_path, stripe=StripeSettings(**stripe))) as running:
        await until_started(running)
        yield running


async def until_started(running: Running) -> None:
    # The webhook answers 503 until the source has loaded its state from the store.
    for _ in range(400):
        if all(ctx.status.state == "running" for _s, ctx in running.runtime.sources):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("stripe source did not start")


def sub_event(name: str, sub_id: str, created: int, **obj: Any) -> dict[str, Any]:
    return event(name, created=created, id=sub_id, **obj)
