"""`decode_event`'s one-pass decode decides exactly as the two-step decode (envelope, then object) on
real events, the poison set and seeded random corruptions of them: the same event, or the same refusal."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from collector.sources.stripe.payload import EventError, decode_event, decode_in_two_steps
from tests.helpers import REPO
from tests.sources.stripe_helpers import body_of, event

pytestmark = pytest.mark.quick

FIXTURES = sorted((REPO / "tests" / "fixtures" / "stripe").rglob("*.json"))
# Values a corruption may put anywhere: wrong types, out of range, deep, empty, huge.
HOSTILE: list[Any] = [
    None, True, 0, -1, 2**63, 10**13, 1.5, 1e300, "", "x" * 300, "1e400", "NaN", "12.5", [], {}, [[[[]]]],
    {"id": None}, {"data": []}, "usd", "USD", "canceled", {"object": "event"},
]  # fmt: skip


def _poison() -> list[bytes]:
    """Signed-poison shapes (as in test_stripe_poison): out of range, NaN, too deep, not JSON."""

    def payment(**obj: Any) -> dict[str, Any]:
        return event("payment_intent.succeeded", event_id="evt_poison", **obj)

    huge_created = payment(amount=1000)
    huge_created["created"] = 2**63
    deep = (
        body_of(payment(amount=1000))
        .decode()
        .replace('"metadata": {}', '"metadata": ' + "[" * 5000 + "]" * 5000, 1)
    )
    assert "[[[[" in deep
    return [
        body_of(huge_created),
        body_of(payment(amount=1000, amount_received=2**63)),
        body_of(payment(amount=1000, amount_received=1000)).replace(
            b'"amount_received": 1000', b'"amount_received": NaN'
        ),
        deep.encode(),
    ]


def _outcome(body: bytes) -> Any:
    try:
        return ("event", decode_event(body))
    except EventError as exc:
        return ("refused", exc.reason, str(exc))


def _reference(body: bytes) -> Any:
    try:
        return ("event", decode_in_two_steps(body))
    except EventError as exc:
        return ("refused", exc.reason, str(exc))


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _corrupt(doc: Any, rng: random.Random) -> Any:
    path = rng.choice(_paths(doc)[1:])
    target = doc
    for step in path[:-1]:
        target = target[step]
    if isinstance(target, dict) and rng.random() < 0.2:
        del target[path[-1]]
    else:
        target[path[-1]] = rng.choice(HOSTILE)
    return doc


def test_the_fixtures_and_the_poison_set_decode_as_in_two_steps() -> None:
    bodies = [p.read_bytes() for p in FIXTURES] + _poison()
    bodies += [b"", b"null", b"[]", b"{}", b'{"id": "evt_1"}', b"\xff\xfe", b'{"id": "e", "type": "t"']
    assert len(FIXTURES) >= 10
    for body in bodies:
        assert _outcome(body) == _reference(body), body[:200]


@pytest.mark.parametrize("seed", range(4))
def test_seeded_corruptions_decode_as_in_two_steps(seed: int) -> None:
    rng = random.Random(seed)
    docs = [json.loads(p.read_text()) for p in FIXTURES]
    usable = 0
    for _ in range(500):
        doc = json.loads(json.dumps(rng.choice(docs)))
        for _ in range(rng.randint(1, 3)):
            doc = _corrupt(doc, rng)
        body = json.dumps(doc).encode()
        if rng.random() < 0.05:
            body = body[: rng.randrange(len(body))]  # truncated
        got = _outcome(body)
        assert got == _reference(body), body[:300]
        usable += got[0] == "event" and got[1].obj is not None
    assert usable > 50  # the one-pass decode was exercised, not only the fallback


def test_an_unusable_object_is_still_an_event_with_its_error() -> None:
    doc = json.loads(Path(FIXTURES[0]).read_text())
    doc["data"]["object"]["amount"] = "not a number"
    ev = decode_event(json.dumps(doc).encode())
    assert ev.obj is None and ev.object_error is not None
