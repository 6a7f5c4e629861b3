"""Stripe events -> metric effects: the pure mapping from a decoded event to deltas (no I/O).

Decoding and validation live in `payload.py` (re-exported here).

Only the fields the handlers use are decoded (msgspec, typed), so a whole event costs microseconds
instead of the StripeObject tree `stripe.Webhook.construct_event` builds. Both payload generations are
accepted: pre-2025 (`invoice.subscription`, top-level `current_period_*`) and post-basil
(`invoice.parent.subscription_details.subscription`, `current_period_*` on subscription items).

Source of truth for payment value: the PaymentIntent (`payment_intent.succeeded`, `amount_received`).
Invoices and Checkout Sessions paid by card create a PaymentIntent, so `invoice.paid` and
`checkout.session.completed` add no value (they would double count); only legacy Charges without a
PaymentIntent (`charge.succeeded` with `payment_intent: null`) add value on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from collector.sources.stripe.currency import currency_label
from collector.sources.stripe.payload import (
    EVENT_ERRORS,
    MAX_AMOUNT,
    Event,
    EventError,
    Obj,
    PaymentError,
    decode_event,
    decode_object,
    error_reason,
)

__all__ = [
    "ACTIVE",
    "DECLINE_CODES",
    "EVENT_ERRORS",
    "KIND_CREATED",
    "KIND_DELETED",
    "KIND_UPDATED",
    "MAX_AMOUNT",
    "SUBSCRIPTION_STATUSES",
    "Effects",
    "Event",
    "EventError",
    "RefundObs",
    "SubState",
    "decode_event",
    "decode_object",
    "effects",
    "error_reason",
    "monthly_amount",
    "subscription_state",
]


# -- bounded label values ---------------------------------------------------------------------------

#: Stripe's documented card decline codes (docs.stripe.com/declines/codes); anything else is `other`.
DECLINE_CODES = frozenset(
    [
        "authentication_required",
        "approve_with_id",
        "call_issuer",
        "card_not_supported",
        "card_velocity_exceeded",
        "currency_not_supported",
        "do_not_honor",
        "do_not_try_again",
        "duplicate_transaction",
        "expired_card",
        "fraudulent",
        "generic_decline",
        "incorrect_number",
        "incorrect_cvc",
        "incorrect_pin",
        "incorrect_zip",
        "insufficient_funds",
        "invalid_account",
        "invalid_amount",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "invalid_pin",
        "issuer_not_available",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "no_action_taken",
        "not_permitted",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "pickup_card",
        "pin_try_exceeded",
        "processing_error",
        "reenter_transaction",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "service_not_allowed",
        "stolen_card",
        "stop_payment_order",
        "testmode_decline",
        "transaction_not_allowed",
        "try_again_later",
        "withdrawal_count_limit_exceeded",
    ]
)

#: Subscription statuses Stripe documents; anything else is reported as `other`.
SUBSCRIPTION_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)
ACTIVE = "active"
# Terminal statuses: Stripe never moves a subscription out of these, so no later event may either.
_TERMINAL = frozenset(("canceled", "incomplete_expired"))
# Where a status sits in Stripe's subscription lifecycle (docs.stripe.com/billing/subscriptions/overview:
# incomplete -> active | incomplete_expired; trialing -> active; active -> past_due -> unpaid |
# canceled; paused <-> active). Only used to order two states that carry the same `created` second.
_STATUS_RANK = {
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "other": 2,
    "past_due": 3,
    "paused": 4,
    "unpaid": 4,
    "canceled": 5,
    "incomplete_expired": 5,
}
#: Event kind rank: a subscription's `created` event comes before any `updated`, `deleted` after all.
KIND_CREATED, KIND_UPDATED, KIND_DELETED = 0, 1, 2
_KINDS = {
    "customer.subscription.created": KIND_CREATED,
    "customer.subscription.deleted": KIND_DELETED,
}

_DISPUTE_STATUSES = frozenset(
    [
        "warning_needs_response",
        "warning_under_review",
        "warning_closed",
        "needs_response",
        "under_review",
        "won",
        "lost",
        "prevented",
    ]
)
_CHECKOUT_MODES = frozenset(("payment", "subscription", "setup"))


def decline_label(error: PaymentError | None) -> str:
    """`decline_code` label: a documented decline code, `other`, or `none` when the error has none."""
    code = error.decline_code if error is not None else None
    if not code:
        return "none"
    return code if code in DECLINE_CODES else "other"


def _bounded(value: str | None, allowed: frozenset[str] | tuple[str, ...]) -> str:
    return value if value is not None and value in allowed else "other"


# -- subscriptions ----------------------------------------------------------------------------------

# Monthly factor per interval: a year is 12 months, a week 52/12 of a month, a day 365/12 (Stripe's
# MRR normalisation).
_PER_MONTH = {
    "month": Fraction(1),
    "year": Fraction(1, 12),
    "week": Fraction(52, 12),
    "day": Fraction(365, 12),
}


def monthly_amount(obj: Obj) -> tuple[Fraction, str]:
    """A subscription's recurring amount per month in minor units, and its currency label.

    Licensed (per-seat) items count as unit amount x quantity; metered and tiered items have no fixed
    price and add nothing. Discounts and taxes are not applied.
    """
    total = Fraction(0)
    currency = obj.currency
    for item in obj.items.data if obj.items is not None else ():
        unit: Fraction | None = None
        interval, count, usage, item_currency = None, 1, None, None
        if item.price is not None:
            p = item.price
            if p.unit_amount is not None:
                unit = Fraction(p.unit_amount)
            elif p.unit_amount_decimal:
                unit = Fraction(p.unit_amount_decimal)
            item_currency = p.currency
            if p.recurring is not None:
                interval, count, usage = (
                    p.recurring.interval,
                    p.recurring.interval_count or 1,
                    p.recurring.usage_type,
                )
        if (unit is None or interval is None) and item.plan is not None:
            pl = item.plan
            unit = Fraction(pl.amount) if pl.amount is not None else unit
            interval, count, usage = pl.interval, pl.interval_count or 1, pl.usage_type
            item_currency = item_currency or pl.currency
        currency = currency or item_currency
        if unit is None or usage == "metered" or interval not in _PER_MONTH:
            continue
        quantity = item.quantity if item.quantity is not None else 1
        total += unit * quantity * _PER_MONTH[interval] / count
    return total, currency_label(currency)


@dataclass(frozen=True)
class SubState:
    """What the collector keeps per subscription (in the store and in memory)."""

    id: str
    status: str
    currency: str
    mrr: Fraction  # minor units per month
    created: int  # `created` of the event (or reconciliation time) this state comes from
    kind: int = KIND_UPDATED  # which event kind it comes from (created < updated/snapshot < deleted)

    @property
    def terminal(self) -> bool:
        return self.status in _TERMINAL

    def order(self) -> tuple[bool, int, int, int, Fraction, str]:
        """The total order of states of one subscription: state decides, never arrival.

        Terminal first (a late `updated` never resurrects a `deleted` subscription), then `created`
        (Stripe does not guarantee delivery order); Stripe's timestamps are whole seconds, so a tie is
        broken by the lifecycle: the event kind (`created` before `updated` before `deleted`), then the
        status's place in the lifecycle (`incomplete` before `active`), then the content itself, so
        any two deliveries of the same events, in any order, by webhook or by polling, end equal.
        """
        return (
            self.terminal,
            self.created,
            self.kind,
            _STATUS_RANK.get(self.status, 2),
            self.mrr,
            self.currency,
        )

    def supersedes(self, old: SubState | None) -> bool:
        """True when this state may replace `old` (see `order`)."""
        return old is None or self.order() >= old.order()

    def ties(self, old: SubState | None) -> bool:
        """Same `created` second, different content: the order came from the lifecycle, not time."""
        return (
            old is not None
            and old.created == self.created
            and (old.status, old.mrr, old.currency) != (self.status, self.mrr, self.currency)
        )


def subscription_state(obj: Obj, created: int, kind: int = KIND_UPDATED) -> SubState | None:
    """The state a subscription object describes, or None without an id."""
    if not obj.id:
        return None
    mrr, currency = monthly_amount(obj)
    return SubState(obj.id, _bounded(obj.status, SUBSCRIPTION_STATUSES), currency, mrr, created, kind)


# -- event -> effects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundObs:
    """A charge's refunded total as an event shows it; the delta needs the stored high-water mark."""

    charge_id: str
    currency: str
    amount_refunded: int
    previous: int | None  # `previous_attributes.amount_refunded`, exact when present
    #: What identifies the refunds this event shows: the ids of `charge.refunds` when embedded, and the
    #: charge total it brought (`amount_refunded`) - each refund raises the total, so one total is one
    #: refund whatever order the events arrive in.
    refund_ids: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()


@dataclass
class Effects:
    """What one event changes: integer counter deltas (counts or minor units), refunds, subscriptions."""

    handled: bool = True
    counters: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)
    refund: RefundObs | None = None
    subscription: SubState | None = None
    problem: str | None = None  # a handled type whose object lacks what we need (counted as invalid)
    reason: str = "invalid_event"  # bounded reason counted with `problem`


def _invoice_kind(obj: Obj) -> str:
    sub = obj.subscription
    if sub is None and obj.parent is not None and obj.parent.subscription_details is not None:
        sub = obj.parent.subscription_details.subscription
    return "subscription" if sub else "one_off"


def effects(ev: Event) -> Effects:
    """Map an event to its metric effects (pure; the caller applies them exactly once)."""
    t = ev.type
    if t.startswith("customer.subscription."):
        return _subscription_effects(ev)
    handler = _HANDLERS.get(t)
    if handler is None:
        return Effects(handled=False)
    if ev.obj is None:
        return _unusable(ev)
    return handler(ev.obj, ev)


def _unusable(ev: Event) -> Effects:
    error = ev.object_error or "invalid_object"
    reason = error.split(":", 1)[0]
    return Effects(
        problem=f"data.object: {error}", reason=reason if reason in EVENT_ERRORS else "invalid_object"
    )


def _subscription_effects(ev: Event) -> Effects:
    if ev.obj is None:
        return _unusable(ev)
    state = subscription_state(ev.obj, ev.created, _KINDS.get(ev.type, KIND_UPDATED))
    if state is None:
        return Effects(problem="subscription without id")
    out = Effects(subscription=state)
    if ev.type == "customer.subscription.created":
        out.counters.append(("stripe_subscriptions_created_total", (), 1))
    return out


def _payment_intent_succeeded(obj: Obj, _ev: Event) -> Effects:
    amount = obj.amount_received if obj.amount_received is not None else obj.amount
    if amount is None:
        return Effects(problem="payment_intent without amount")
    cur = currency_label(obj.currency)
    return Effects(
        counters=[("stripe_payments_total", (cur,), 1), ("stripe_payment_value_total", (cur,), amount)]
    )


def _charge_succeeded(obj: Obj, _ev: Event) -> Effects:
    if obj.payment_intent:
        return Effects()  # counted by its payment_intent.succeeded: one source of truth
    if obj.amount is None:
        return Effects(problem="charge without amount")
    cur = currency_label(obj.currency)
    return Effects(
        counters=[("stripe_payments_total", (cur,), 1), ("stripe_payment_value_total", (cur,), obj.amount)]
    )


def _payment_failed(obj: Obj, _ev: Event) -> Effects:
    labels = (currency_label(obj.currency), decline_label(obj.last_payment_error))
    return Effects(counters=[("stripe_payment_failures_total", labels, 1)])


def _charge_refunded(obj: Obj, ev: Event) -> Effects:
    if not obj.id or obj.amount_refunded is None:
        return Effects(problem="charge without id or amount_refunded")
    prev = ev.previous.amount_refunded if ev.previous is not None else None
    ids: tuple[str, ...] = ()
    if obj.refunds is not None and not obj.refunds.has_more:
        ids = tuple(sorted({r.id for r in obj.refunds.data if r.status not in ("failed", "canceled")}))
    levels = (obj.amount_refunded,) if obj.amount_refunded else ()
    return Effects(
        refund=RefundObs(obj.id, currency_label(obj.currency), obj.amount_refunded, prev, ids, levels)
    )


def _dispute(obj: Obj, _ev: Event) -> Effects:
    return Effects(counters=[("stripe_disputes_total", (_bounded(obj.status, _DISPUTE_STATUSES),), 1)])


def _checkout_completed(obj: Obj, _ev: Event) -> Effects:
    mode = _bounded(obj.mode, _CHECKOUT_MODES)
    return Effects(counters=[("stripe_checkout_sessions_completed_total", (mode,), 1)])


def _invoice_payment_failed(obj: Obj, _ev: Event) -> Effects:
    return Effects(counters=[("stripe_invoice_payment_failures_total", (_invoice_kind(obj),), 1)])


def _accounted_elsewhere(_obj: Obj, _ev: Event) -> Effects:
    return Effects()  # value comes from the PaymentIntent; handled so it is not reported as ignored


_HANDLERS = {
    "payment_intent.succeeded": _payment_intent_succeeded,
    "payment_intent.payment_failed": _payment_failed,
    "charge.succeeded": _charge_succeeded,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute,
    "charge.dispute.closed": _dispute,
    "checkout.session.completed": _checkout_completed,
    "invoice.payment_failed": _invoice_payment_failed,
    "invoice.paid": _accounted_elsewhere,
    "invoice.payment_succeeded": _accounted_elsewhere,
}
