"""One generated loop per rule set that applies a whole decoded batch with almost no work per line.

The per-group functions of `collector.rules.codegen` cost a call, a cache lookup and dict updates per
rule per line. Here the groups are inlined into one loop over the batch, and each distinct tuple of raw
fields gets a per-batch *entry*: a line only counts itself into its entry and appends its raw observed
values to the list of the histogram series they go to. After the loop, counts are added to counters
once per entry, and each series' values are converted, bucketed (`bisect` mapped in C) and summed in
line order, so every count and sum is bit-identical to applying the lines one by one.

A group is deferred like this only when its updates commute with everything else in the batch: its
rules are counter/gauge `inc` without a value field or histogram `observe`, and no `set`/`dec` rule
writes the same metric. Any other group runs its per-line function (`codegen`) inside the same loop.
"""

from __future__ import annotations

import itertools
import re
import sys
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial, reduce
from itertools import repeat
from operator import add, mul
from typing import Any

from collector.metrics import Family
from collector.rules.codegen import CACHE_LIMIT, GroupMeta
from collector.rules.normalize import to_number

__all__ = ["deferrable", "generate_batch"]

_SIMPLE = re.compile(r"^    (r\d+) = (o\.f\d+)$")  # a generated read of one top-level field
_SUB = re.compile(r"\br\d+\b")
_OWN = object()  # marks an entry's own value list
_DROP = object()  # marks the list of values a rule that does not apply to an entry would have used
MAX_CHAIN = 8  # discriminator values compared one by one before a dict lookup is cheaper
Values = dict[tuple[str, ...], list[Any]]  # histogram series key -> raw values of this batch, in line order
_FLOAT, _NUMBER = {float}, {float, int}
# `sum` adds floats left to right in C before 3.12, exactly as `total += v` per line (and ~8x faster
# than `reduce`); from 3.12 it compensates rounding, which would differ from the per-line code.
_sum: Callable[[list[float], float], float] = sum if sys.version_info < (3, 12) else partial(reduce, add)


def deferrable(metas: list[GroupMeta]) -> list[bool]:
    """Per group: can its updates be gathered per batch (see the module docstring)?"""
    ordered = {fam.name for m in metas for spec, _m, fam, _n in m.rules if spec.action in ("set", "dec")}
    return [
        all(
            fam.name not in ordered
            and (spec.action == "observe" or (spec.action == "inc" and spec.value is None))
            for spec, _m, fam, _n in m.rules
        )
        for m in metas
    ]


class _Observe:
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
        """The numbers among raw values, as the per-line code converts them; bad ones reported."""
        types = set(map(type, raw))
        if types == _FLOAT:
            return raw  # the usual case, checked in C
        if types <= _NUMBER:
            return list(map(float, raw))  # whole numbers (`"duration_ms":5`), converted in C
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


class _Group:
    """A deferred group: makes entries `[lines, always_hit, slot per rule...]` and flushes them.

    A counter rule's slot is its series key (None: the rule does not apply to that raw tuple); an
    observe rule's slot is the list its values are appended to: the series' shared list when another
    rule of the entry always counts the line (so the line is used whatever its value), else the entry's
    own list, whose usable values decide per line whether it was used.
    Entries outlive a batch (flushing zeroes them), so a raw tuple seen before costs no `make`.
    """

    def __init__(
        self,
        meta: GroupMeta,
        observers: list[_Observe | None],
        seen: dict[str, dict[tuple[str, ...], float]],
        now: list[float],
    ):
        self.meta, self.observers, self.now = meta, observers, now
        self.stamps = [seen.get(fam.name) for _s, _m, fam, _n in meta.rules]
        self.entries: dict[Any, list[Any]] = {}  # raw tuple -> entry, kept across batches

    def make(self, raw: tuple[Any, ...]) -> list[Any]:
        keys = self.meta.cache.get(raw)
        if keys is None:
            keys = self.meta.prep(raw)
        always = any(k is not None for k, ob in zip(keys, self.observers, strict=True) if ob is None)
        e: list[Any] = [0, always]
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
        rules = self.meta.rules
        for e in self.entries.values():
            count = e[0]
            if not count:
                continue  # not seen in this batch: no update, and no refreshed expiry stamp
            e[0] = 0
            if e[1]:
                used += count
            own = []
            for j, ob in enumerate(self.observers):
                slot = e[2 + j]
                if ob is None:
                    if slot is not None:
                        fam = rules[j][2]
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
        if len(self.entries) > CACHE_LIMIT:
            self.entries.clear()
            for ob in self.observers:
                if ob is not None:
                    ob.values.clear()

    @staticmethod
    def _merge(own: list[tuple[_Observe, list[Any]]], count: int) -> int:
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


def generate_batch(
    metas: list[GroupMeta],
    fns: Sequence[Callable[[Any], bool]],
    index: dict[Any, int],
    fallback: int,
    disc_attr: str | None,
    disc: Callable[[Any], Any] | None,
    seen: dict[str, dict[tuple[str, ...], float]],
    now: list[float],
    on_bad_value: Callable[[str, Any], None],
    on_missing: Callable[[str, int], None] | None = None,
) -> Callable[[list[Any]], int]:
    """`apply(objs) -> lines used` for groups `metas` (per-line functions `fns`); `index` maps a
    discriminator value to a group number, `fallback` is the group of any other value (-1: none)."""
    ids = itertools.count()
    ns: dict[str, Any] = {"T": index, "D": disc}

    def const(value: Any, prefix: str) -> str:
        name = f"{prefix}{next(ids)}"
        ns[name] = value
        return name

    keys: dict[int, list[Any]] = {}
    for value, j in index.items():
        keys.setdefault(j, []).append(value)
    # A few discriminator values are compared directly: `==` on a fresh string is cheaper than hashing
    # it for a dict lookup (~13% of the loop with four groups); many values go through the dict.
    chain = disc_attr is not None and len(index) <= MAX_CHAIN
    if disc_attr is None:
        select = f"{fallback}"
    elif chain:
        select = f"o.{disc_attr}" if "." not in disc_attr else "D(o)"
    elif "." not in disc_attr:
        select = f"get(o.{disc_attr}, {fallback})"
    else:
        select = f"get(D(o), {fallback})"
    head = ["def apply(objs):", "    n = 0", "    get = T.get"]
    loop = ["    for o in objs:", f"        g = {select}"]

    def test(j: int) -> str:
        if not chain:
            return f"g == {j}"
        if j == fallback:
            return "True"
        return " or ".join(f"g == {const(v, 'K')}" for v in keys[j])

    order = [j for j in range(len(metas)) if j != fallback or not chain]
    if chain and fallback >= 0:
        order.append(fallback)  # any other value: last, as the `else`
    tail: list[str] = []
    trims: list[str] = []
    observers: list[_Observe] = []
    defer_all = deferrable(metas)
    for pos, j in enumerate(order):
        meta, fn, defer = metas[j], fns[j], defer_all[j]
        ind = " " * 12
        cond = test(j)
        loop.append(
            "        else:" if pos and cond == "True" else f"        {'if' if pos == 0 else 'elif'} {cond}:"
        )
        if not defer:
            loop += [f"{ind}if {const(fn, 'G')}(o):", f"{ind}    n += 1"]
            continue
        obs: list[_Observe | None] = []
        for spec, _m, fam, _n in meta.rules:
            ob = None
            if spec.action == "observe":
                assert spec.value is not None
                ob = _Observe(fam, spec.value.scale, seen.get(fam.name), now, on_bad_value, on_missing)
                observers.append(ob)
            obs.append(ob)
        group = _Group(meta, obs, seen, now)
        ns[f"B{j}"] = group.entries
        simple: dict[str, str] = {m[1]: m[2] for line in meta.reads if (m := _SIMPLE.match(line))}
        raw, values = meta.raw, list(meta.value_vars)
        if len(simple) == len(meta.reads):  # plain attribute reads: inlined where used (fewer opcodes)

            def inline(m: re.Match[str], reads: dict[str, str] = simple) -> str:
                return reads[m[0]]

            raw = _SUB.sub(inline, raw)
            values = [simple[v] if v else v for v in values]
        else:
            loop += [" " * 8 + line for line in meta.reads]  # the group's field reads, 4 to 12 spaces
        mk = const(group.make, "M")
        loop += [
            f"{ind}raw = {raw}",
            f"{ind}e = B{j}.get(raw)",
            f"{ind}if e is None:",
            f"{ind}    e = B{j}[raw] = {mk}(raw)",
            f"{ind}e[0] += 1",
        ]
        for at, (rv, ob) in enumerate(zip(values, obs, strict=True), start=2):
            if ob is not None:
                loop.append(f"{ind}e[{at}].append({rv})")
        tail.append(f"    n += {const(group.flush, 'F')}()")
        trims.append(f"    {const(group.trim, 'R')}()")
    tail += [f"    {const(ob.flush, 'O')}()" for ob in observers]
    tail += trims
    text = "\n".join([*head, *loop, *tail, "    return n"]) + "\n"
    from collector.rules.codegen import register_source

    register_source("<rules batch>", text)
    exec(compile(text, "<rules batch>", "exec"), ns)
    fn_: Callable[[list[Any]], int] = ns["apply"]
    fn_.__doc__ = text  # the generated source, for debugging
    return fn_
