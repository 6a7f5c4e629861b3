"""The signature check agrees with the stripe library's `verify_header` on random headers."""

from __future__ import annotations

import hashlib
import hmac
import random
import time

import pytest
import stripe

from collector.sources.stripe.signature import verify

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

_REASONS = {
    "Timestamp outside the tolerance zone": "signature_expired",
    "Unable to extract timestamp": "signature_malformed",
    "No signatures found with expected scheme": "signature_no_v1",
    "No Stripe-Signature header": "signature_missing",
}
_RANK = [
    "signature_missing",
    "signature_malformed",
    "signature_no_v1",
    "signature_mismatch",
    "signature_expired",
]


def _library(payload: bytes, header: str, secrets: list[str], tolerance: int) -> str | None:
    """What the stripe library says, reduced to our reasons (the most informative over secrets)."""
    best = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload.decode(), header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            msg = exc.user_message or str(exc)
            reason = next((r for p, r in _REASONS.items() if msg.startswith(p)), "signature_mismatch")
            if best is None or _RANK.index(reason) > _RANK.index(best):
                best = reason
            continue
        return None
    return best or "signature_mismatch"


def _sig(secret: str, t: int | str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("seed", range(40))
def test_random_headers_get_the_libraries_verdict(seed: int) -> None:
    rnd = random.Random(seed)
    now = int(time.time())
    secrets = ["whsec_a", "whsec_b", " ", "whsec_c"]
    for _ in range(50):
        body = rnd.choice([b'{"id":"evt_1"}', b"{}", '{"n":"caf\u00e9"}'.encode()])
        mine = rnd.sample(secrets, rnd.randint(1, 3))
        t: int | str = rnd.choice([now, now - 10, now - 400, now + 50, "x", "", " 12", "+5"])
        parts = []
        if rnd.random() < 0.9:
            parts.append(f"t={t}")
        for _ in range(rnd.randint(0, 3)):
            secret = rnd.choice(secrets)
            kind = rnd.random()
            ts = t if isinstance(t, int) else now
            if kind < 0.5:
                parts.append(f"v1={_sig(secret, ts, body)}")
            elif kind < 0.7:
                parts.append(f"v0={_sig(secret, ts, body)}")
            elif kind < 0.8:
                parts.append("v1")
            elif kind < 0.9:
                parts.append("v1=deadbeef")
            else:
                parts.append("garbage")
        rnd.shuffle(parts)
        header = ",".join(parts)
        tolerance = rnd.choice([300, 0])
        if not header:
            assert verify(body, header, mine, tolerance) == "signature_missing"
            continue
        assert verify(body, header, mine, tolerance) == _library(body, header, mine, tolerance), (
            header,
            mine,
        )


def test_a_non_ascii_header_is_malformed_not_an_error() -> None:
    # Stripe's header is ASCII; the library's compare would raise TypeError on a non-ASCII candidate.
    now = int(time.time())
    assert verify(b"{}", f"t={now},v1=\u00e9", ["whsec_a"], 300) == "signature_malformed"


def test_invalid_utf8_bodies_are_refused_by_name() -> None:
    assert verify(b"\xff", "t=1,v1=00", ["whsec_a"], 300) == "body_not_utf8"
