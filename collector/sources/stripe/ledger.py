"""The Stripe ledger: what one event changes, decided without I/O.

Two pure halves, both unit-tested without a store or a server (`tests/sources/test_stripe_ledger.py`):

- `step`: one event's `Effects` (from `events.effects`) plus the stored facts it needs (the charge's
  refund marks, the subscription's stored state) and an explicit `now` in; the rows to write and the
  committed counter deltas (`Applied`) out. `state.py` reads the facts, calls it and writes the rows,
  inside the group commit's transaction, so events of one batch see each other's writes.
- `Mirror`: the in-memory view of what is committed (exact minor-unit totals, subscriptions and their
  aggregates, the newest event); it turns each `Applied` into the metric changes to publish.
  `source.py` applies those to its families.

The rules that decide (refunds counted once, the subscription order, a cancellation counted once)
live only here, so the store and the memory view cannot disagree about them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from collector.sources.stripe.currency import to_major
from collector.sources.stripe.events import ACTIVE, SUBSCRIPTION_STATUSES, Effects, RefundObs, SubState

__all__ = [
    "VALUE_FAMILIES",
    "Applied",
    "ChargeFacts",
    "ChargeWrite",
    "Delta",
    "MetricChange",
    "Mirror",
    "Step",
    "SubFacts",
    "SubWrite",
    "outcome",
    "refund",
    "snapshot_supersedes",
    "step",
    "subscription",
]

#: One counter change: family name, label values, integer delta (a count, or minor currency units).
Delta = tuple[str, tuple[str, ...], int]

#: Families whose value is a sum of minor currency units, exposed in major units.
VALUE_FAMILIES = frozenset(("stripe_payment_value_total", "stripe_refund_value_total"))

ACTIVE_FAMILY = "stripe_subscriptions_active"
STATUS_FAMILY = "stripe_subscriptions"
MRR_FAMILY = "stripe_monthly_recurring_revenue"
LAST_EVENT_FAMILY = "stripe_last_event_timestamp_seconds"
CANCELED = "stripe_subscriptions_canceled_total"


# -- one event against the stored facts -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeFacts:
    """What is stored about one charge's refunds."""

    #: The highest refunded total seen so far (0 when the charge is unknown).
    amount_refunded: int = 0
    #: The refunds already counted: `id:<refund id>` and `total:<amount_refunded>` keys.
    keys: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SubFacts:
    """What is stored about one subscription."""

    state: SubState | None = None
    canceled_counted: bool = False


@dataclass(frozen=True, slots=True)
class ChargeWrite:
    """Raise the charge's mark to `amount_refunded` (never lower it) and touch/add its refund keys."""

    charge_id: str
    amount_refunded: int
    keys: tuple[str, ...]
    updated_at: float


@dataclass(frozen=True, slots=True)
class SubWrite:
    """The subscription row after the event: `state` to store (None: keep the stored state)."""

    sub_id: str
    state: SubState | None
    canceled_counted: bool


@dataclass
class Applied:
    """The committed result of one event: deltas to mirror in memory, the subscription state written."""

    duplicate: bool = False
    counters: list[Delta] = field(default_factory=list)
    subscription: SubState | None = None
    #: The stored state had the same `created` second and other content: ordered by the lifecycle,
    #: worth re-reading from the API when a key is configured (Stripe's advice when order matters).
    tied: str | None = None


@dataclass
class Step:
    """One event's result and the rows it writes."""

    applied: Applied
    charge: ChargeWrite | None = None
    sub: SubWrite | None = None


def _refund_count(keys: Iterable[str]) -> int:
    # The charge's refunds are the larger of the two sets: a refund seen once by id and once by its
    # total is one refund, not two.
    ids = totals = 0
    for k in keys:
        if k.startswith("id:"):
            ids += 1
        elif k.startswith("total:"):
            totals += 1
    return max(ids, totals)


def refund(r: RefundObs, facts: ChargeFacts, now: float) -> tuple[ChargeWrite, list[Delta]]:
    """A charge's refund observation against its stored marks: the write and the counter deltas."""
    # previous_attributes gives the exact change, whatever the arrival order; without it, count what
    # exceeds the highest total seen so far for this charge (partial refunds count once).
    value = (
        r.amount_refunded - r.previous
        if r.previous is not None
        else r.amount_refunded - facts.amount_refunded
    )
    out: list[Delta] = []
    if value > 0:
        out.append(("stripe_refund_value_total", (r.currency,), value))
    # The count: each refund once, by its id when the charge embeds its refunds, else by the charge
    # total it brought; an out-of-order refund (its total below the mark) still counts.
    keys = (*(f"id:{i}" for i in r.refund_ids), *(f"total:{v}" for v in r.levels))
    added = _refund_count(facts.keys.union(keys)) - _refund_count(facts.keys)
    if added > 0:
        out.append(("stripe_refunds_total", (r.currency,), added))
    return ChargeWrite(r.charge_id, r.amount_refunded, keys, now), out


def subscription(new: SubState, facts: SubFacts) -> tuple[SubWrite | None, bool, bool]:
    """A subscription state against the stored one (`SubState.order` decides, never arrival).

    Returns:
        the row write (None: nothing to write), whether this is the first cancel seen, whether it
        tied on time with the stored state.
    """
    old = facts.state
    # Each subscription's cancellation counts once, from whichever event reports it, in any order.
    first_cancel = new.status == "canceled" and not facts.canceled_counted
    tied = new.ties(old)
    if not new.supersedes(old):
        return (SubWrite(new.id, None, True) if first_cancel else None), first_cancel, tied
    return SubWrite(new.id, new, facts.canceled_counted or first_cancel), first_cancel, tied


def step(eff: Effects, charge: ChargeFacts | None, sub: SubFacts | None, now: float) -> Step:
    """One recorded (not duplicate) event: its counter deltas and the rows it writes.

    Args:
        charge: the stored facts of `eff.refund`'s charge (needed when it has one).
        sub: the stored facts of `eff.subscription` (needed when it has one).
        now: when the event is recorded (stored with the refund marks, for their retention).
    """
    out = Step(Applied(counters=list(eff.counters)))
    if eff.refund is not None:
        out.charge, deltas = refund(eff.refund, charge or ChargeFacts(), now)
        out.applied.counters.extend(deltas)
    if eff.subscription is not None:
        out.sub, canceled, tied = subscription(eff.subscription, sub or SubFacts())
        out.applied.subscription = out.sub.state if out.sub is not None else None
        out.applied.tied = eff.subscription.id if tied else None
        if canceled:
            out.applied.counters.append((CANCELED, (), 1))
    return out


def snapshot_supersedes(st: SubState, old: SubState | None) -> bool:
    """Reconciliation: whether an API snapshot replaces the stored state (never counts a cancel)."""
    if old is not None and (old.status, old.currency, old.mrr) == (st.status, st.currency, st.mrr):
        return False
    return st.supersedes(old)


def outcome(applied: Applied, eff: Effects) -> str:
    """The delivery status of a committed event: duplicate, invalid, processed or ignored."""
    if applied.duplicate:
        return "duplicate"
    if eff.problem is not None:
        # Recorded so redeliveries are duplicates: retrying cannot fix a payload we cannot read.
        return "invalid"
    return "processed" if eff.handled else "ignored"


# -- the in-memory view ---------------------------------------------------------------------------


class MetricChange(NamedTuple):
    """One change to publish: add `value` to the series (`add`) or set it to `value`."""

    family: str
    labels: tuple[str, ...]
    value: float
    add: bool


class Mirror:
    """What is committed, in memory, and the metric changes that show it (pure, no families)."""

    def __init__(self) -> None:
        # Minor-unit totals behind the value families, so the exposed float is never a running sum.
        self.minor: dict[tuple[str, tuple[str, ...]], int] = {}
        # Subscriptions (a mirror of the store) and their aggregates, updated incrementally.
        self.subs: dict[str, SubState] = {}
        self.by_status: Counter[str] = Counter()
        self.mrr: dict[str, Fraction] = {}
        self.last_event: int | None = None
        # Statuses ever shown: a status that drops to 0 is shown as 0, not left at its old value.
        self._shown: set[str] = set()

    def clear(self) -> None:
        """Forget the view (before a restore sets it to the stored one)."""
        self.minor.clear()
        self.subs.clear()
        self.by_status.clear()
        self.mrr.clear()

    def restore(self, counters: Iterable[Delta], last_event: int | None) -> list[MetricChange]:
        """Set (never add) the view's counters to the stored totals; subscriptions follow one by one."""
        self.clear()
        out = []
        for name, labels, value in counters:
            change = self.counter(name, labels, value)
            out.append(change._replace(add=False))  # after a clear, adding the total is setting it
        if last_event is not None:
            self.last_event = last_event
            out.append(MetricChange(LAST_EVENT_FAMILY, (), last_event, False))
        return out

    def counter(self, name: str, labels: tuple[str, ...], delta: int) -> MetricChange:
        """One committed counter delta."""
        if name in VALUE_FAMILIES:
            key = (name, labels)
            total = self.minor[key] = self.minor.get(key, 0) + delta
            return MetricChange(name, labels, to_major(total, labels[0]), False)
        return MetricChange(name, labels, delta, True)

    def subscription(self, new: SubState) -> bool:
        """Take one committed subscription state; False when a later one is already held."""
        old = self.subs.get(new.id)
        # The same ordering rule as the store, so concurrent commits mirrored in any order agree.
        if not new.supersedes(old):
            return False
        if old is not None:
            self.by_status[old.status] -= 1
            if old.status == ACTIVE:
                self.mrr[old.currency] -= old.mrr
        self.subs[new.id] = new
        self.by_status[new.status] += 1
        if new.status == ACTIVE:
            self.mrr[new.currency] = self.mrr.get(new.currency, Fraction(0)) + new.mrr
        return True

    def subscription_gauges(self) -> list[MetricChange]:
        """The subscription gauges as they stand (active, by status, MRR per currency)."""
        out = [MetricChange(ACTIVE_FAMILY, (), self.by_status[ACTIVE], False)]
        for st in (*SUBSCRIPTION_STATUSES, "other"):
            if self.by_status[st] or st in self._shown:
                self._shown.add(st)
                out.append(MetricChange(STATUS_FAMILY, (st,), self.by_status[st], False))
        for cur, minor in self.mrr.items():
            out.append(MetricChange(MRR_FAMILY, (cur,), to_major(minor, cur), False))
        return out

    def event(self, created: int) -> MetricChange | None:
        """A committed event's creation time: the newest-event gauge when it moved forward."""
        if created > (self.last_event or 0):
            self.last_event = created
            return MetricChange(LAST_EVENT_FAMILY, (), created, False)
        return None

    def applied(self, applied: Applied, created: int) -> list[MetricChange]:
        """The metric changes of one committed, not duplicate, event."""
        out = [self.counter(name, labels, delta) for name, labels, delta in applied.counters]
        if applied.subscription is not None:
            self.subscription(applied.subscription)
            out.extend(self.subscription_gauges())
        moved = self.event(created)
        if moved is not None:
            out.append(moved)
        return out
