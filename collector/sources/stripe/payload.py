"""Stripe payloads -> typed, validated values: the lean msgspec model of only the fields the handlers read.

Every value is validated here, at decode time, so nothing later (the store, Fraction maths, the float a
metric shows) can fail on it: a poison event is rejected before it reaches any state (docs/stripe.md).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

__all__ = [
    "EVENT_ERRORS",
    "MAX_AMOUNT",
    "Event",
    "EventError",
    "Obj",
    "PaymentError",
    "Previous",
    "decode_event",
    "decode_object",
    "error_reason",
]


class EventError(ValueError):
    """A body that is not a usable Stripe event; `reason` is a bounded label value (`EVENT_ERRORS`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# -- lean payload model: only what the handlers read -------------------------------------------------
#
# Every value is validated here, at decode time, so nothing later (the store, Fraction maths, the
# float a metric shows) can fail on it: a poison event is rejected before it reaches any state.
# `gc=False` throughout: a decoded tree cannot hold a reference cycle, so the cyclic collector need
# not track (nor later scan) the several structs every webhook allocates.

#: Largest amount in minor units accepted (Stripe's own limit is 8 digits for most currencies, 12 for a
#: few): 9 million such events still fit the store's 64-bit integer totals.
MAX_AMOUNT = 10**12
#: `created` and other Unix times: within SQLite's signed 64-bit INTEGER, and not before 1970.
_Time = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Amount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
_Quantity = Annotated[int, msgspec.Meta(ge=0, le=10**9)]
# Stripe allows up to 3 years between charges; any positive count is harmless to the maths (it divides),
# so only zero, negatives and integers beyond 32 bits are refused.
_IntervalCount = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
# `unit_amount_decimal` is a decimal string with at most 12 decimal places (Stripe's documented
# precision); "1e400", "NaN" or "-5" are not Stripe's and are rejected, never turned into a number.
_Decimal = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,13}(\.[0-9]{1,12})?$")]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class Recurring(msgspec.Struct, gc=False):
    interval: str | None = None
    interval_count: _IntervalCount | None = None
    usage_type: str | None = None


class Price(msgspec.Struct, gc=False):
    unit_amount: _Amount | None = None
    unit_amount_decimal: _Decimal | None = None
    currency: str | None = None
    recurring: Recurring | None = None


class Plan(msgspec.Struct, gc=False):
    amount: _Amount | None = None
    currency: str | None = None
    interval: str | None = None
    interval_count: _IntervalCount | None = None
    usage_type: str | None = None


class Item(msgspec.Struct, gc=False):
    quantity: _Quantity | None = None
    price: Price | None = None
    plan: Plan | None = None


class ItemList(msgspec.Struct, gc=False):
    data: list[Item] = []


class PaymentError(msgspec.Struct, gc=False):
    code: str | None = None
    decline_code: str | None = None


class SubscriptionDetails(msgspec.Struct, gc=False):
    subscription: Any = None


class Parent(msgspec.Struct, gc=False):
    subscription_details: SubscriptionDetails | None = None


class Refund(msgspec.Struct, gc=False):
    id: _Id
    status: str | None = None


class RefundList(msgspec.Struct, gc=False):
    """`charge.refunds` (API versions before 2022-11-15 embed it): the refunds' ids."""

    data: list[Refund] = []
    has_more: bool = False


class Obj(msgspec.Struct, gc=False):
    """`data.object` of any event type we handle; every field optional."""

    id: str | None = None
    object: str | None = None
    status: str | None = None
    currency: str | None = None
    amount: _Amount | None = None
    amount_received: _Amount | None = None
    amount_refunded: _Amount | None = None
    refunds: RefundList | None = None
    payment_intent: Any = None  # id string, expanded object or null
    last_payment_error: PaymentError | None = None
    mode: str | None = None
    # subscriptions
    items: ItemList | None = None
    plan: Plan | None = None
    quantity: _Quantity | None = None
    # invoices: pre-2025 `subscription`, post-basil `parent.subscription_details.subscription`
    subscription: Any = None
    parent: Parent | None = None


class Previous(msgspec.Struct, gc=False):
    amount_refunded: _Amount | None = None


class Data(msgspec.Struct, gc=False):
    object: msgspec.Raw
    previous_attributes: Previous | None = None


class Envelope(msgspec.Struct, gc=False):
    id: _Id
    type: Annotated[str, msgspec.Meta(max_length=255)]
    created: _Time
    data: Data
    object: str = "event"


class Event(msgspec.Struct, gc=False):
    """A decoded event: the envelope fields and `data.object` (None when the object was unusable)."""

    # A Struct rather than a dataclass: one is made per webhook, and a Struct is a third of the cost.

    id: str
    type: str
    created: int
    obj: Obj | None
    previous: Previous | None = None
    object_error: str | None = None


class _WholeData(msgspec.Struct, gc=False):
    object: Obj
    previous_attributes: Previous | None = None


class _Whole(msgspec.Struct, gc=False):
    """`Envelope` with its object typed: a usable event decodes in one pass (the usual case)."""

    id: _Id
    type: Annotated[str, msgspec.Meta(max_length=255)]
    created: _Time
    data: _WholeData
    object: str = "event"


_envelope = msgspec.json.Decoder(Envelope)
_object = msgspec.json.Decoder(Obj)
_whole = msgspec.json.Decoder(_Whole)

#: Reasons a body or object is rejected (bounded `reason` label values).
EVENT_ERRORS = ("invalid_json", "invalid_event", "out_of_range", "too_deep", "invalid_object")
# msgspec's constraint messages: "Expected `int` <= 9223372036854775807", "Number out of range",
# "Expected `str` matching regex ..." (a decimal that is not one).
_RANGE = re.compile(r"out of range|Expected `(?:int|float)` [<>]=?|matching regex")


def error_reason(exc: BaseException, default: str = "invalid_event") -> str:
    """The bounded reason of a decode failure: too deep, out of range, not JSON, or `default`."""
    if isinstance(exc, RecursionError):
        return "too_deep"
    if isinstance(exc, msgspec.ValidationError):
        return "out_of_range" if _RANGE.search(str(exc)) else default
    return "invalid_json"


def decode_event(body: bytes) -> Event:
    """Decode a webhook body or one Events API entry.

    Raises:
        EventError: not JSON (`invalid_json`), nested deeper than the decoder allows (`too_deep`: the
            interpreter's recursion limit, ~1,000 levels), a value out of range (`out_of_range`), or not
            an event envelope (`invalid_event`). An envelope whose `data.object` has unexpected or
            out-of-range fields decodes with `obj=None` and `object_error`.
    """
    try:
        # One pass when everything is usable; anything else is decided by the two-step path below,
        # which tells an unusable envelope (refused) from an unusable object (recorded as invalid).
        whole = _whole.decode(body)
    except Exception:
        pass
    else:
        if whole.object == "event" and whole.id and whole.type:
            data = whole.data
            return Event(whole.id, whole.type, whole.created, data.object, data.previous_attributes, None)
    return decode_in_two_steps(body)


def decode_in_two_steps(body: bytes) -> Event:
    """`decode_event` as two decodes: the envelope (its object kept raw), then the object.

    What `decode_event` returns or raises for every body; its one-pass decode only saves the second
    scan of a usable event (`tests/sources/test_stripe_payload.py` checks the two agree).
    """
    try:
        env = _envelope.decode(body)
    except (msgspec.ValidationError, RecursionError) as exc:
        raise EventError(error_reason(exc), str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec reports some invalid UTF-8 as UnicodeDecodeError rather than DecodeError
        raise EventError("invalid_json", str(exc)) from None
    if env.object != "event" or not env.id or not env.type:
        raise EventError("invalid_event", "not an event object")
    try:
        obj: Obj | None = _object.decode(env.data.object)
        error = None
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        obj, error = None, f"{error_reason(exc, 'invalid_object')}: {exc}"
    return Event(env.id, env.type, env.created, obj, env.data.previous_attributes, error)


def decode_object(raw: bytes | msgspec.Raw) -> Obj:
    """Decode one API object (e.g. a subscription from `/v1/subscriptions`).

    Raises:
        msgspec.ValidationError, msgspec.DecodeError: the object has unexpected field types.
    """
    return _object.decode(raw)
