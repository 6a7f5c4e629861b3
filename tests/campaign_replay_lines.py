"""Long campaign: replay and the daemon count the same lines. Seeded random byte streams (see
tests/replay_streams.py) through the replay function at random read sizes against the generated truth,
and every `--daemon-every`-th seed also through the running collector tailing a file written in random
pieces. Prints figures; exits 1 on the first mismatch (the seed replays it).

    .venv/bin/python -m tests.campaign_replay_lines --seeds 500
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import collector.replay
import collector.sources.logs.tailer
from tests.replay_streams import (
    REPLAY_BIG_CHUNKS,
    REPLAY_CHUNKS,
    TAILER_CHUNKS,
    kinds,
    replayed,
    served,
    stream,
)


def run_once(seed: int, daemon: bool, workdir: Path) -> Counter[str]:
    rng = random.Random(seed)
    s = stream(seed, lines=rng.randrange(50, 800))
    collector.replay.CHUNK = rng.choice(REPLAY_CHUNKS)
    collector.replay.BIG_CHUNK = rng.choice(REPLAY_BIG_CHUNKS)
    path = workdir / "replayed.log"
    path.write_bytes(s.data)
    got, replayed_samples = replayed(path)
    if kinds(got) != s.all_kinds():
        sys.exit(f"MISMATCH seed={seed}: replay {dict(kinds(got))} != truth {dict(s.all_kinds())}")
    if daemon:
        collector.sources.logs.tailer.CHUNK = rng.choice(TAILER_CHUNKS)
        by_result, samples = asyncio.run(served(workdir, s, rng, sum(got.values())))
        if by_result != got:
            sys.exit(f"MISMATCH seed={seed}: daemon {by_result} != replay {got}")
        for name, family in replayed_samples.items():
            if sorted(family, key=repr) != sorted(samples[name], key=repr):
                sys.exit(f"MISMATCH seed={seed}: {name} differs between replay and the daemon")
    out = Counter(got)
    out["crlf"] = s.data.count(b"\r\n")
    out["unterminated_last"] = int(s.last is not None)
    out["daemon_runs"] = int(daemon)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--daemon-every", type=int, default=10, help="also run the daemon every N seeds")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the collector logs each kind of bad line: thousands here
    totals: Counter[str] = Counter()
    for seed in range(args.start, args.start + args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            totals += run_once(seed, (seed - args.start) % args.daemon_every == 0, Path(tmp))
    figures = " ".join(f"{k}={v}" for k, v in sorted(totals.items()))
    print(f"seeds={args.seeds} {figures} mismatches=0")


if __name__ == "__main__":
    main()
