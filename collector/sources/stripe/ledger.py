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


#: One event's result and the rows it writes: (applied, charge write, subscription write). A plain
#: tuple: `step` runs per event on the webhook path.
Step = tuple[Applied, ChargeWrite | None, SubWrite | None]


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
    applied = Applied(counters=list(eff.counters))
    charge_write: ChargeWrite | None = None
    sub_write: SubWrite | None = None
    if eff.refund is not None:
        charge_write, deltas = refund(eff.refund, charge or ChargeFacts(), now)
        applied.counters.extend(deltas)
    if eff.subscription is not None:
        sub_write, canceled, tied = subscription(eff.subscription, sub or SubFacts())
        applied.subscription = sub_write.state if sub_write is not None else None
        applied.tied = eff.subscription.id if tied else None
        if canceled:
            applied.counters.append((CANCELED, (), 1))
    return applied, charge_write, sub_write


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


#: One change to publish: (family, label values, value, add): add `value` to the series when `add`,
#: else set it to `value`. A plain tuple, not a NamedTuple: it is built per event on the webhook path.
MetricChange = tuple[str, tuple[str, ...], float, bool]


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
        out: list[MetricChange] = []
        for name, labels, value in counters:
            family, labels, shown, _add = self.counter(name, labels, value)
            out.append((family, labels, shown, False))  # after a clear, adding the total is setting it
        if last_event is not None:
            self.last_event = last_event
            out.append((LAST_EVENT_FAMILY, (), last_event, False))
        return out

    def counter(self, name: str, labels: tuple[str, ...], delta: int) -> MetricChange:
        """One committed counter delta."""
        if name in VALUE_FAMILIES:
            key = (name, labels)
            total = self.minor[key] = self.minor.get(key, 0) + delta
            return (name, labels, to_major(total, labels[0]), False)
        return (name, labels, delta, True)

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
        out: list[MetricChange] = [(ACTIVE_FAMILY, (), self.by_status[ACTIVE], False)]
        for st in (*SUBSCRIPTION_STATUSES, "other"):
            if self.by_status[st] or st in self._shown:
                self._shown.add(st)
                out.append((STATUS_FAMILY, (st,), self.by_status[st], False))
        for cur, minor in self.mrr.items():
            out.append((MRR_FAMILY, (cur,), to_major(minor, cur), False))
        return out

    def event(self, created: int) -> MetricChange | None:
        """A committed event's creation time: the newest-event gauge when it moved forward."""
        if created > (self.last_event or 0):
            self.last_event = created
            return (LAST_EVENT_FAMILY, (), created, False)
        return None

    def applied(self, applied: Applied, created: int) -> list[MetricChange]:
        """The metric changes of one committed, not duplicate, event."""
        # `counter` and `event` inlined: this runs per event on the webhook path.
        out: list[MetricChange] = []
        minor = self.minor
        for name, labels, delta in applied.counters:
            if name in VALUE_FAMILIES:
                key = (name, labels)
                total = minor[key] = minor.get(key, 0) + delta
                out.append((name, labels, to_major(total, labels[0]), False))
            else:
                out.append((name, labels, delta, True))
        if applied.subscription is not None:
            self.subscription(applied.subscription)
            out.extend(self.subscription_gauges())
        if created > (self.last_event or 0):
            self.last_event = created
            out.append((LAST_EVENT_FAMILY, (), created, False))
        return out
