"""Stripe amounts in minor units -> major units, per Stripe's currency rules (pure, no I/O).

Stripe sends every amount as an integer in the currency's smallest unit; how many of those make one
major unit is Stripe's rule, not always ISO 4217's (https://docs.stripe.com/currencies).
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "THREE_DECIMAL",
    "ZERO_DECIMAL",
    "currency_label",
    "divisor",
    "to_major",
]

#: Zero-decimal currencies: the amount is already in major units (docs.stripe.com/currencies#zero-decimal).
#: UGX is listed here by Stripe: ISO 4217 gives it no minor unit and Stripe's amounts follow that.
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)

#: Three-decimal currencies: 1 major unit = 1000 (docs.stripe.com/currencies#three-decimal).
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

# ISK is zero-decimal in practice, but Stripe keeps it two-decimal for backwards compatibility
# (5 ISK is sent as 500, the decimals always 00: docs.stripe.com/currencies#special-cases), so it
# stays on the default divisor of 100 on purpose.

# fullmatch: `$` would also match before a trailing newline ("usd\n" a label of its own).
_CODE = re.compile(r"[a-z]{3}")

#: Label value for a currency field that is missing or not a three-letter code.
OTHER = "other"


def currency_label(currency: object) -> str:
    """The bounded `currency` label: a lower-case ISO code, or `other`."""
    if isinstance(currency, str):
        code = currency.lower()
        if _CODE.fullmatch(code):
            return code
    return OTHER


def divisor(currency: str) -> int:
    """How many of Stripe's minor units make one major unit of `currency` (lower-case code)."""
    if currency in ZERO_DECIMAL:
        return 1
    if currency in THREE_DECIMAL:
        return 1000
    return 100


def to_major(amount: int | Fraction, currency: str) -> float:
    """Convert a Stripe minor-unit amount to major units (JPY 500 -> 500.0, KWD 12345 -> 12.345)."""
    if isinstance(amount, int):
        return amount / divisor(currency)  # int / int is correctly rounded: the same float, no Fraction
    return float(amount / divisor(currency))
