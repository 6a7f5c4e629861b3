"""Stripe webhook signature check with the stripe library, over several secrets (pure, no I/O).

Stripe signs `f"{t}.{body}"` with HMAC-SHA256 per active endpoint secret and sends
`Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`; during secret rotation there is one `v1` per secret
(docs.stripe.com/webhooks#verify-events). `stripe.WebhookSignature.verify_header` does the scheme,
constant-time compare and tolerance; we only try each configured secret and name the failure.
"""

from __future__ import annotations

from collections.abc import Sequence

import stripe

__all__ = ["verify"]

# Failure reasons, worst-to-best: the reported one is the most informative any secret produced.
_RANK = {
    "signature_missing": 0,
    "signature_malformed": 1,
    "signature_no_v1": 2,
    "signature_mismatch": 3,
    "signature_expired": 4,
}


def _reason(message: str) -> str:
    if message.startswith("Timestamp outside the tolerance zone"):
        return "signature_expired"
    if message.startswith("Unable to extract timestamp"):
        return "signature_malformed"
    if message.startswith("No signatures found with expected scheme"):
        return "signature_no_v1"
    if message.startswith("No Stripe-Signature header"):
        return "signature_missing"
    return "signature_mismatch"


def verify(payload: bytes, header: str | None, secrets: Sequence[str], tolerance: int) -> str | None:
    """Check a webhook body against every secret.

    Args:
        payload: the raw request body, exactly as received.
        header: the `Stripe-Signature` header value.
        secrets: the endpoint's `whsec_...` secrets (more than one while rotating).
        tolerance: maximum age of the signed timestamp in seconds.

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
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "body_not_utf8"
    worst = "signature_mismatch"
    best = -1
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            reason = _reason(exc.user_message or str(exc))
            if _RANK[reason] > best:
                worst, best = reason, _RANK[reason]
            continue
        return None
    return worst
