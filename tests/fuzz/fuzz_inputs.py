"""Fuzz target for the hostile-input parsers: log lines through every preset's rules, Stripe signature
check and decoder, GitHub signature check and decoder. Any exception other than the documented ones
is a bug.

    pip install atheris && python tests/fuzz/fuzz_inputs.py -max_total_time=600   # coverage-guided
    python tests/fuzz/fuzz_inputs.py --random 20000                               # no atheris: random bytes

CI runs the random mode with a small budget (tests/fuzz/test_fuzz_smoke.py); atheris is optional.
"""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

import gidgethub
import msgspec
from gidgethub.sansio import validate_event

from collector.metrics import MetricState
from collector.rules import PRESETS, RuleSet
from collector.settings import GitHubSettings
from collector.sources.github.events import parse_event
from collector.sources.stripe.events import EventError, decode_event
from collector.sources.stripe.signature import verify

_RULES = RuleSet(MetricState(), logging.getLogger("fuzz"), presets=list(PRESETS), clock=lambda: 1e9)
_GH = GitHubSettings(webhook_secret="s")
_EVENTS = ("deployment", "deployment_status", "push", "workflow_run", "issues", "ping")


def one_input(data: bytes) -> None:
    """Feed `data` to every parser; raise only on an unexpected exception."""
    if not data:
        return
    selector, body = data[0], data[1:]
    lines = body.split(b"\n")
    result = _RULES.consume(lines)
    assert result.parsed + result.unmatched + result.invalid_json + result.invalid_utf8 == len(lines)
    header = body[:80].decode("latin-1")
    assert verify(body, header, ["whsec_fuzz"], 300) is not None
    with contextlib.suppress(EventError):
        decode_event(body)
    try:
        validate_event(body, signature=header, secret="s")
        raise AssertionError("forged GitHub signature accepted")
    except gidgethub.ValidationFailure:
        pass
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        parse_event(_EVENTS[selector % len(_EVENTS)], body, _GH)


def random_mode(runs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    seeds = [
        b'{"level":"info","message":"x","status":200,"method":"GET","url":"/a/1"}',
        b'{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{}}}',
    ]
    for _ in range(runs):
        base = bytearray(rng.choice(seeds) if rng.random() < 0.5 else rng.randbytes(rng.randint(0, 200)))
        for _m in range(rng.randint(0, 8)):  # byte flips, inserts, deletes: cheap mutation
            if base and rng.random() < 0.6:
                base[rng.randrange(len(base))] = rng.randrange(256)
            else:
                base.insert(rng.randint(0, len(base)), rng.randrange(256))
        one_input(bytes([rng.randrange(256)]) + bytes(base))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--random":
        random_mode(int(sys.argv[2]))
    else:
        import atheris  # type: ignore[import-not-found]

        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
