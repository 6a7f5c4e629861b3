"""Stripe webhook signature check over several secrets (pure, no I/O).

Stripe signs `f"{t}.{body}"` with HMAC-SHA256 per active endpoint secret and sends
`Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`; during secret rotation there is one `v1` per secret
(docs.stripe.com/webhooks#verify-events). The verdict is `stripe.WebhookSignature.verify_header`'s
step for step (header parsing, constant-time compare, then the tolerance), computed more cheaply: each
secret's HMAC key schedule is done once (`SigningKeys`), and the usual header shape is read by one
regular expression before the library's general parsing. The library's way cost about as much CPU as
the rest of a webhook's handling, and importing it cost ~8 MB and ~30 ms at start-up.
`tests/sources/test_stripe_signature.py` checks the outcome against the library on random and hostile
headers.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Iterable, Sequence
from hashlib import sha256
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = ["SigningKeys", "verify"]

# Failure reasons, least to most informative: the reported one is the highest any secret produced.
_RANK = {
    "signature_missing": 0,
    "signature_malformed": 1,
    "signature_no_v1": 2,
    "signature_mismatch": 3,
    "signature_expired": 4,
}
_BLANK = " \t\r\n\f\v"
# HMAC (RFC 2104 section 2): SHA-256's 64-byte block, and the two pads as translate tables (key XOR
# 0x36 for the inner hash, XOR 0x5c for the outer).
_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
# Stripe's usual header: one timestamp then one signature. For this shape the library reads exactly
# (int(digits), [signature]): no `,` or `=` is left to split on. The digits are ASCII (`[0-9]`, not
# `\d`, which takes other scripts' digits) and at most 19, far below the 4,300 int() refuses; anything
# else (several `v1`, other schemes, signs, spaces, `_`) goes through the general parser.
_COMMON = re.compile(r"t=([0-9]{1,19}),v1=([0-9A-Za-z]+)")


def _pads(secret: str) -> tuple[HASH, HASH] | None:
    """The inner and outer SHA-256 states after one secret's padded key block (each request resumes a
    `copy()`); None for a blank secret (the library refuses it before anything else) or one UTF-8
    cannot encode (`verify` raises for it only where the library would)."""
    if not secret.strip(_BLANK):
        return None
    try:
        key = secret.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return sha256(key.translate(_IPAD)), sha256(key.translate(_OPAD))


class SigningKeys(Sequence[str]):
    """An endpoint's secrets, each with its HMAC-SHA256 key schedule computed once.

    A sequence of the secrets themselves, so it stands wherever their list did. `verify` given one
    skips, per request and secret, encoding the secret and hashing its two padded key blocks.
    """

    __slots__ = ("_pads", "_secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(secrets)
        self._pads = tuple(_pads(s) for s in self._secrets)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._secrets[index]

    def __len__(self) -> int:
        return len(self._secrets)

    def __repr__(self) -> str:
        return f"SigningKeys(<{len(self._secrets)} secrets>)"  # never the secrets themselves


def _parse(header: str) -> tuple[int, Sequence[str]] | None:
    """(timestamp, v1 signatures) exactly as the stripe library reads them; None when it cannot."""
    common = _COMMON.fullmatch(header)
    if common is not None:
        return int(common[1]), (common[2],)
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
        secrets: the endpoint's `whsec_...` secrets (more than one while rotating); a `SigningKeys`
            made once saves the per-secret key work on every call.
        tolerance: maximum age of the signed timestamp in seconds (0: no limit).
        clock: the wall clock the timestamp is compared with.

    Returns:
        None when one secret verifies, else a bounded reason (`signature_expired`, `signature_mismatch`,
        `signature_malformed`, `signature_no_v1`, `signature_missing`, `body_not_utf8`).

    Raises:
        UnicodeEncodeError: a secret UTF-8 cannot encode (a lone surrogate) reached the HMAC, as the
            library raises it.
    """
    if not header:
        return "signature_missing"
    if not header.isascii():
        # Stripe's header is ASCII (`t=<digits>,v1=<hex>`); a non-ASCII byte would reach
        # hmac.compare_digest as a non-ASCII str, which raises TypeError instead of failing the match.
        return "signature_malformed"
    # Stripe signs text; the library refuses other bodies the same way (an ASCII body, the usual
    # case, is UTF-8 without decoding it)
    if not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return "body_not_utf8"
    keys = secrets if isinstance(secrets, SigningKeys) else SigningKeys(secrets)
    parsed = _parse(header)
    # The most informative failure so far and its rank (higher is more informative).
    most_informative, its_rank = "signature_mismatch", -1
    for secret, pads in zip(keys._secrets, keys._pads, strict=True):
        if pads is None and not secret.strip(_BLANK):
            reason = "signature_mismatch"  # the library refuses a blank secret before anything else
        elif parsed is None:
            reason = "signature_malformed"
        elif not parsed[1]:
            reason = "signature_no_v1"
        else:
            if pads is None:  # not blank, so UTF-8 cannot encode it: raise here, where the library does
                secret.encode("utf-8")
                raise AssertionError("unreachable: only a blank or unencodable secret has no pads")
            # HMAC = H(key^opad || H(key^ipad || message)) (RFC 2104), resumed from the states after
            # each padded key block; the message fed in two parts, not copied behind the timestamp
            inner = pads[0].copy()
            inner.update(b"%d." % parsed[0])
            inner.update(payload)
            outer = pads[1].copy()
            outer.update(inner.digest())
            expected = outer.hexdigest()
            for candidate in parsed[1]:
                if hmac.compare_digest(expected, candidate):  # both ASCII: the header was checked above
                    # the library's test itself, not its negation (which differs for a NaN clock)
                    if not (tolerance and parsed[0] < clock() - tolerance):
                        return None
                    reason = "signature_expired"
                    break
            else:
                reason = "signature_mismatch"
        if _RANK[reason] > its_rank:
            most_informative, its_rank = reason, _RANK[reason]
    return most_informative
