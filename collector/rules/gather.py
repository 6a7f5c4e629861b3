"""Per-batch aggregation of the updates that commute: what makes a line cost a few opcodes.

Each distinct tuple of raw fields of a deferred group gets an *entry*: a line only counts itself into
its entry and appends its raw observed values to the list of the histogram series they go to (the
generated loop, `collector.rules.loop`, does that much per line). After the loop, counts are added to
counters once per entry, and each series' values are converted, bucketed (`bisect` mapped in C) and
summed in line order, so every count and sum is bit-identical to applying the lines one by one.

A group is deferred like this only when its updates commute with everything else in the batch: its
rules are counter/gauge `inc` without a value field or histogram `observe`, and no `set`/`dec` rule
writes the same metric (`deferrable`). Any other group applies its lines one by one
(updates inlined in the generated loop, `collector.rules.loop`).
"""

from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right
from collections import Counter
from functools import partial, reduce
from itertools import repeat
from operator import add, mul

import collector.rules.decide as decide  # CACHE_LIMIT read at call time (tests lower it)
from collector.metrics import Family
from collector.rules.decide import Group
from collector.rules.normalize import to_number

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Deferred", "Observe", "deferrable"]

_OWN = object()  # marks an entry's own value list
_DROP = object()  # marks the list of values a rule that does not apply to an entry would have used
Values = dict[tuple[str, ...], list["Any"]]  # histogram series key -> raw values of this batch, in line order
_FLOATS = list[float]
# `sum` adds floats left to right in C before 3.12, exactly as `total += v` per line (and ~8x faster
# than `reduce`); from 3.12 it compensates rounding, which would differ from the per-line code.
_sum: Callable[[list[float], float], float] = sum if sys.version_info < (3, 12) else partial(reduce, add)


def deferrable(groups: list[Group]) -> list[bool]:
    """Per group: can its updates be gathered per batch (see the module docstring)?"""
    ordered = {r.family.name for g in groups for r in g.rules if r.spec.action in ("set", "dec")}
    return [
        all(
            r.family.name not in ordered
            and (r.spec.action == "observe" or (r.spec.action == "inc" and r.spec.value is None))
            for r in g.rules
        )
        for g in groups
    ]


class Observe:
    """One histogram rule of a deferred group: its series' values gathered over a batch."""

    def __init__(
        self,
        fam: Family,
        scale: float,
        stamps: dict[tuple[str, ...], float] | None,
        now: list[float],
        on_bad_value: Callable[[str, Any], None],
        on_missing: Callable[[str, int], None] | None = None,
    ) -> None:
        self.fam, self.scale, self.stamps, self.now = fam, scale, stamps, now
        self.on_bad_value = on_bad_value
        self.on_missing = on_missing
        self.values: Values = {}
        self.bucket = partial(bisect_left, fam.buckets)

    def usable(self, raw: list[Any]) -> list[float]:
        """The numbers among raw values, as the per-line code converts them; bad ones reported.

        The usual case, floats and whole numbers (`"duration_ms":5`, converted as `float()` does), is
        checked and converted in C by msgspec, which refuses anything else (a bool, a string, null) for
        the loop below: 5-8 us per 1,000 values, where `set(map(type, raw))` took 26-62 us (measured
        side by side), ~3 % of replaying bench/genlogs.py lines.
        """
        from msgspec import ValidationError, convert  # loaded with the decoder

        try:
            return convert(raw, _FLOATS)  # a new list: the caller sorts it in place
        except ValidationError:
            pass
        out = []
        missing = 0
        for value in raw:
            if value is None:
                missing += 1  # a matched line without the value field
                continue
            number = value if value.__class__ is float else to_number(value)
            if number is None:
                self.on_bad_value(self.fam.name, value)
            else:
                out.append(number)
        if missing and self.on_missing is not None:
            self.on_missing(self.fam.name, missing)
        return out

    def flush(self) -> None:
        for k, raw in self.values.items():
            if raw:
                vals = self.usable(raw)
                if vals:
                    self._add(k, vals)
                raw.clear()  # the list stays: batch entries append to it

    def _add(self, k: tuple[str, ...], vals: list[float]) -> None:
        """Apply one series' usable values of a batch, in line order."""
        fam, series = self.fam, self.fam.series
        if self.scale != 1.0:
            vals = list(map(mul, vals, repeat(self.scale)))
        a = k
        if k not in series:
            a = fam.admit(k)
            if a is not k and fam.on_overflow is not None:
                for _ in range(len(vals) - 1):  # admit() counted one; every value is an update
                    fam.on_overflow(fam.name)
        c = series.get(a)
        if c is None:
            c = series[a] = [0] * (len(fam.buckets) + 1) + [0.0]
        total = _sum(vals, c[-1])  # value by value, as `c[-1] += v` per line
        if total == total:  # no NaN: bucket counts from the sorted values, in C
            vals.sort()  # in place: a list of this batch's, used up here (the sum is taken)
            below = 0
            for b, bound in enumerate(fam.buckets):
                upto = bisect_right(vals, bound)  # values <= bound, i.e. bisect_left(buckets, v) <= b
                c[b] += upto - below
                below = upto
            c[-2] += len(vals) - below
        else:  # a NaN sorts anywhere: place each value as the per-line code does
            for b, n in Counter(map(self.bucket, vals)).items():
                c[b] += n
        c[-1] = total
        if fam.changed is not None:
            fam.changed.add(a)
        if self.stamps is not None:
            self.stamps[a] = self.now[0]


class Deferred:
    """A deferred group: makes entries `[lines, always_hit, keys, slot per rule...]` and flushes them.

    A counter rule's slot is its series key (None: the rule does not apply to that raw tuple); an
    observe rule's slot is the list its values are appended to: the series' shared list when another
    rule of the entry always counts the line (so the line is used whatever its value), else the entry's
    own list, whose usable values decide per line whether it was used.
    Entries outlive a batch (flushing zeroes them), so a raw tuple seen before costs no `make`.
    """

    #: Where an entry's first slot is (`e[SLOTS + j]` is rule j's): the generated loop indexes with it.
    SLOTS = 3

    def __init__(self, group: Group, observers: list[Observe | None]) -> None:
        self.group, self.observers, self.now = group, observers, group.now
        self.stamps = [group.seen.get(r.family.name) for r in group.rules]
        self.entries: dict[Any, list[Any]] = {}  # raw tuple -> entry, kept across batches

    def make(self, raw: tuple[Any, ...]) -> list[Any]:
        """The entry of a raw tuple not seen since the last trim (its decisions: `Group.keys`)."""
        keys = self.group.keys(raw)
        always = any(k is not None for k, ob in zip(keys, self.observers, strict=True) if ob is None)
        e: list[Any] = [0, always, keys]
        for k, ob in zip(keys, self.observers, strict=True):
            if ob is None:
                e.append(k)
            elif k is None:
                e.append([_DROP])  # a throwaway list: the rule does not apply to these lines
            elif always:
                e.append(ob.values.setdefault(k, []))
            else:
                e.append([_OWN, k])  # own list, marked, key first; merged into the series' list at flush
        return e

    def flush(self) -> int:
        """Counts into counters, own value lists into the series' lists; the lines some rule used."""
        used = 0
        stamp = self.now[0]
        rules = self.group.rules
        matches = self.group.matches
        for e in self.entries.values():
            count = e[0]
            if not count:
                continue  # not seen in this batch: no update, and no refreshed expiry stamp
            e[0] = 0
            if e[1]:
                used += count
            own = []
            for j, ob in enumerate(self.observers):
                slot = e[self.SLOTS + j]
                if e[2][j] is not None:
                    matches[rules[j].number] += count
                if ob is None:
                    if slot is not None:
                        fam = rules[j].family
                        k = slot if slot in fam.series else fam.admit(slot)
                        if k is not slot and fam.on_overflow is not None:
                            for _ in range(count - 1):  # admit() counted one; every line is an update
                                fam.on_overflow(fam.name)
                        fam.series[k] = fam.series.get(k, 0) + count
                        if fam.changed is not None:
                            fam.changed.add(k)
                        stamps = self.stamps[j]
                        if stamps is not None:
                            stamps[k] = stamp
                elif slot and slot[0] is _OWN:
                    own.append((ob, slot))
                elif slot and slot[0] is _DROP:
                    del slot[1:]  # the rule does not apply to these lines: their values go unused
            if own:
                used += self._merge(own, count)
        return used

    def trim(self) -> None:
        """After the observers flushed: forget every entry when there are too many (raw values such as
        URLs are unbounded); their series' value lists go with them."""
        if len(self.entries) > decide.CACHE_LIMIT:  # read here: tests lower it
            self.entries.clear()
            for ob in self.observers:
                if ob is not None:
                    ob.values.clear()

    @staticmethod
    def _merge(own: list[tuple[Observe, list[Any]]], count: int) -> int:
        """Hand an entry's own value lists to the series; how many of its lines had a usable value."""
        usable = [False] * count
        for ob, slot in own:
            key, raw = slot[1], slot[2:]
            for i, value in enumerate(raw):
                if value is not None and (value.__class__ is float or to_number(value) is not None):
                    usable[i] = True
            ob.values.setdefault(key, []).extend(raw)
            del slot[2:]
        return sum(usable)
