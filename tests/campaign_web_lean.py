"""Long campaign: the guard's lean path answers as aiohttp's path does. The seeded connections of
tests/lean_campaign.py (Stripe deliveries, good and hostile, pipelined and cut anywhere) go to a
collector with the lean path and to one without; prints figures; exits 1 on the first seed whose
bytes or counters differ, or whose payments differ from the generator's count (the seed replays it).

    .venv/bin/python -m tests.campaign_web_lean --seeds 200
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import pytest

from collector.web.guard import GuardedHandler
from tests.lean_campaign import run_campaign


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.campaign_web_lean", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--first", type=int, default=1000, help="first seed (the suite runs 0-11)")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)  # every refusal logs its first few: thousands of lines otherwise
    served = {"lean": 0}
    serve = GuardedHandler._lean_serve

    def counted(self: GuardedHandler, *a: object) -> bool:
        served["lean"] += 1
        return serve(self, *a)  # type: ignore[arg-type]

    GuardedHandler._lean_serve = counted  # type: ignore[method-assign,assignment]
    began = time.monotonic()
    connections = payments = answered = 0
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        for seed in range(args.first, args.first + args.seeds):
            where = Path(tmp) / str(seed)
            reference, ref_counts, campaign = asyncio.run(run_campaign(where, seed, False, mp))
            replies, counts, _ = asyncio.run(run_campaign(where, seed, True, mp))
            paid = sum(v for (name, _l), v in counts.items() if name == "stripe_payments_total")
            bad = [i for i, (a, b) in enumerate(zip(reference, replies, strict=True)) if a != b]
            if bad or counts != ref_counts or paid != len(campaign.valid):
                print(f"seed {seed}: connections {bad} differ, counters equal {counts == ref_counts}, "
                      f"payments {paid} of {len(campaign.valid)}")  # fmt: skip
                return 1
            connections += len(replies)
            payments += int(paid)
            answered += int(sum(v for (n, _l), v in counts.items() if n == "collector_http_requests_total"))
    print(
        f"{args.seeds} seeds, {connections} connections, {payments} payments recorded exactly once, "
        f"{served['lean']} of {answered} answered requests on the lean path; "
        f"every byte and counter equal, {time.monotonic() - began:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
