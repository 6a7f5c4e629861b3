"""Seeded campaign: concurrent Stripe deliveries into the real daemon, SIGKILLed at random points.

Each round starts `python -m collector` on the same data directory, sends a shuffled mix of new
events, redeliveries of events already acknowledged (duplicates, some of them concurrent with each
other) and retries of events that got no 2xx before, over 16 connections, and kills the daemon with
SIGKILL at a random moment while that traffic is in flight (so inside a group commit, between a
commit and its answers, while a batch fills, or while the source is still loading). Ground truth is
external: the events the test sent and which deliveries were answered 2xx.

After each kill the state file itself is read (the daemon is dead, so nothing moves under it):

- every acknowledged event id is stored (an answered event is never lost);
- every stored id is one the test sent;
- the stored counters are exactly the sums over the stored events, so no event is applied twice
  and none is recorded without its counts (or counted without being recorded).

A last round delivers every event until each is acknowledged, and `/metrics` must show exactly the
totals of all of them.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import CollectorProcess, value
from tests.sources.stripe_helpers import SECRET, body_of, event, sign

ROUNDS = 6
EVENTS = 600
CURRENCIES = ("usd", "eur")


def _events(rng: random.Random) -> list[dict[str, Any]]:
    return [
        event(
            "payment_intent.succeeded",
            event_id=f"evt_kill_{i:04d}",
            amount_received=rng.randint(1, 1_000_000),
            currency=rng.choice(CURRENCIES),
        )
        for i in range(EVENTS)
    ]


async def _deliver_all(
    url: str,
    deliveries: list[dict[str, Any]],
    kill: Any = None,
    kill_after: float | None = None,
    kill_at: int | None = None,
) -> list[tuple[str, int]]:
    """Send `deliveries` over 16 connections; `kill()` after `kill_after` seconds, or as the
    `kill_at`-th answer arrives (while the other connections' requests are in flight).

    Returns (event id, status) for each delivery that got an answer (0: none, the daemon died).
    """
    out: list[tuple[str, int]] = []
    todo = iter(deliveries)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=16)) as session:

        async def worker() -> None:
            for ev in todo:
                body = body_of(ev)
                headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)}
                try:
                    async with session.post(url + "/webhooks/stripe", data=body, headers=headers) as resp:
                        await resp.read()
                        out.append((ev["id"], resp.status))
                except (TimeoutError, aiohttp.ClientError):
                    out.append((ev["id"], 0))
                if len(out) == kill_at:
                    kill()

        async def killer() -> None:
            if kill_after is not None:
                await asyncio.sleep(kill_after)
                kill()

        await asyncio.gather(killer(), *(worker() for _ in range(16)))
    return out


async def _until_ready(url: str, ev: dict[str, Any]) -> int:
    """Deliver `ev` until the source has loaded its state (503 before); its final status."""
    for _ in range(300):
        status = (await _deliver_all(url, [ev]))[0][1]
        if status != 503:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("the stripe webhook never became ready")


def _stored(db: Path) -> tuple[set[str], dict[tuple[str, str], int]]:
    conn = sqlite3.connect(db)
    try:
        ids = {i for (i,) in conn.execute("SELECT id FROM stripe_events")}
        counters = {
            (name, json.loads(labels)[0]): v
            for name, labels, v in conn.execute("SELECT name, labels, value FROM stripe_counters")
        }
    finally:
        conn.close()
    return ids, counters


def _check_store(db: Path, by_id: dict[str, dict[str, Any]], acked: set[str]) -> set[str]:
    ids, counters = _stored(db)
    assert acked <= ids, f"acknowledged but lost: {sorted(acked - ids)[:5]}"
    assert ids <= set(by_id), f"stored but never sent: {sorted(ids - set(by_id))[:5]}"
    for cur in CURRENCIES:
        mine = [by_id[i]["data"]["object"] for i in ids if by_id[i]["data"]["object"]["currency"] == cur]
        assert counters.get(("stripe_payments_total", cur), 0) == len(mine)
        assert counters.get(("stripe_payment_value_total", cur), 0) == sum(o["amount_received"] for o in mine)
    return ids


@pytest.mark.parametrize("seed", [11, 23])
def test_sigkill_at_random_points_loses_no_acknowledged_event_and_applies_none_twice(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    events = _events(rng)
    by_id = {ev["id"]: ev for ev in events}
    env = {"COLLECTOR_STRIPE__WEBHOOK_SECRETS": SECRET, "COLLECTOR_DATA_DIR": str(tmp_path / "data")}
    db = tmp_path / "data" / "state.db"
    acked: set[str] = set()
    kills = 0
    for round_ in range(ROUNDS + 1):
        last = round_ == ROUNDS
        proc = CollectorProcess(env, tmp_path)
        try:
            proc.wait_live()
            if last:
                # Stripe's retries: every event until it is acknowledged (each a duplicate or new).
                for _ in range(20):
                    left = [ev for ev in events if ev["id"] not in acked]
                    if not left:
                        break
                    if asyncio.run(_until_ready(proc.url, left[0])) == 200:
                        acked.add(left[0]["id"])
                    for id_, status in asyncio.run(_deliver_all(proc.url, left)):
                        if 200 <= status < 300:
                            acked.add(id_)
                assert acked == set(by_id)
                m = proc.scrape()
                assert proc.terminate() == 0
            else:
                # New events, retries of unanswered ones and redeliveries of answered ones (some twice,
                # so the same id is in flight on two connections), shuffled.
                fresh = [ev for ev in events if ev["id"] not in acked]
                picked = rng.sample(fresh, min(len(fresh), rng.randint(80, 160)))
                again = rng.sample(events, 30)
                deliveries = [*picked, *again, *rng.sample(picked, min(20, len(picked)))]
                rng.shuffle(deliveries)
                kill_after, kill_at = None, None
                if rng.random() < 0.25:
                    kill_after = rng.uniform(0.0, 0.3)  # possibly before the source has loaded
                else:
                    first = asyncio.run(_until_ready(proc.url, deliveries[0]))
                    if first == 200:
                        acked.add(deliveries[0]["id"])
                    kill_at = rng.randint(1, len(deliveries) - 16)
                answers = asyncio.run(
                    _deliver_all(proc.url, deliveries, proc.proc.kill, kill_after=kill_after, kill_at=kill_at)
                )
                acked.update(id_ for id_, status in answers if 200 <= status < 300)
                kills += 1
        finally:
            proc.kill()  # a no-op on a process already gone; closes its stderr file
        if db.exists():
            _check_store(db, by_id, acked)
    assert kills == ROUNDS
    ids = _check_store(db, by_id, acked)
    assert ids == set(by_id)
    for cur in CURRENCIES:
        objs = [ev["data"]["object"] for ev in events if ev["data"]["object"]["currency"] == cur]
        assert value(m, "stripe_payments_total", currency=cur) == len(objs)
        assert (
            value(m, "stripe_payment_value_total", currency=cur)
            == sum(o["amount_received"] for o in objs) / 100
        )
