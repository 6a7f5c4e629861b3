"""Stripe webhook signature check over several secrets (pure, no I/O).

Stripe signs `f"{t}.{body}"` with HMAC-SHA256 per active endpoint secret and sends
`Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`; during secret rotation there is one `v1` per secret
(docs.stripe.com/webhooks#verify-events). This is the scheme of `stripe.WebhookSignature.verify_header`
step for step (header parsing, constant-time compare, then the tolerance), computed with one-shot
`hmac.digest` instead of an `hmac.HMAC` object per secret: the library's way cost about as much CPU
as the rest of a webhook's handling, and importing the library cost ~8 MB and ~30 ms at start-up.
`tests/sources/test_stripe_signature.py` checks the outcome against the library on random headers.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence

__all__ = ["verify"]

# Failure reasons, least to most informative: the reported one is the highest any secret produced.
_RANK = {
    "signature_missing": 0,
    "signature_malformed": 1,
    "signature_no_v1": 2,
    "signature_mismatch": 3,
    "signature_expired": 4,
}
_BLANK = " \t\r\n\f\v"


def _parse(header: str) -> tuple[int, list[str]] | None:
    """(timestamp, v1 signatures) exactly as the stripe library reads them; None when it cannot."""
    try:
        items = [i.split("=", 2) for i in header.split(",")]
        stamps = [i[1] for i in items if i[0] == "t"]  # every `t` read, as the library does
        return int(stamps[0]), [i[1] for i in items if i[0] == "v1"]
    except (IndexError, ValueError):
        return None


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int,
    clock: Callable[[], float] = time.time,
) -> str | None:
    """Check a webhook body against every secret.

    Args:
        payload: the raw request body, exactly as received.
        header: the `Stripe-Signature` header value.
        secrets: the endpoint's `whsec_...` secrets (more than one while rotating).
        tolerance: maximum age of the signed timestamp in seconds (0: no limit).
        clock: the wall clock the timestamp is compared with.

    Returns:
        None when one secret verifies, else a bounded reason (`signature_expired`, `signature_mismatch`,
        `signature_malformed`, `signature_no_v1`, `signature_missing`, `body_not_utf8`).
    """
    if not header:
        return "signature_missing"
    if not header.isascii():
        # Stripe's header is ASCII (`t=<digits>,v1=<hex>`); a non-ASCII byte would reach
        # hmac.compare_digest as a non-ASCII str, which raises TypeError instead of failing the match.
        return "signature_malformed"
    try:
        # Stripe signs text; the library refuses other bodies the same way (an ASCII body, the usual
        # case, is UTF-8 without decoding it)
        payload.isascii() or payload.decode("utf-8")
    except UnicodeDecodeError:
        return "body_not_utf8"
    parsed = _parse(header)
    # The most informative failure so far and its rank (higher is more informative).
    most_informative, its_rank = "signature_mismatch", -1
    signed = b"" if parsed is None else b"%d." % parsed[0] + payload
    for secret in secrets:
        if not secret.strip(_BLANK):
            reason = "signature_mismatch"  # the library refuses a blank secret before anything else
        elif parsed is None:
            reason = "signature_malformed"
        elif not parsed[1]:
            reason = "signature_no_v1"
        else:
            expected = hmac.digest(secret.encode("utf-8"), signed, "sha256").hex()
            if not any(hmac.compare_digest(expected, s) for s in parsed[1]):  # ASCII: checked above
                reason = "signature_mismatch"
            elif tolerance and parsed[0] < clock() - tolerance:
                reason = "signature_expired"
            else:
                return None
        if _RANK[reason] > its_rank:
            most_informative, its_rank = reason, _RANK[reason]
    return most_informative
