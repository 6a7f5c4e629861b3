"""The one generated function of the rules engine: the loop over a decoded batch.

Per line it reads the discriminator, takes the branch of its dispatch group, reads the group's raw
fields into a tuple and either counts the line into that tuple's entry (a deferred group, see
`collector.rules.gather`) or applies its updates in place (inlined: gauge set/dec and counters by a
value field must keep line order). Everything that decides (matches, labels) is interpreted in
`collector.rules.decide`, once per distinct tuple. The loop is generated because it is the only code that runs per line: field reads become attribute loads inlined in the
tuple, discriminator values are literals, and a line costs no Python call. Its source is registered
in `linecache` under `<rules loop ...>`, so tracebacks and `replay --show-compiled` show it.
"""

from __future__ import annotations

import keyword
import linecache
import re
from bisect import bisect_left
from functools import partial

from collector.metrics import COUNTER
from collector.rules.decide import Group, Read
from collector.rules.decode import LineDecoder
from collector.rules.gather import Deferred, Observe
from collector.rules.normalize import to_number

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["MAX_CHAIN", "Loop", "generate_loop"]

#: Discriminator values compared one by one before a dict lookup is cheaper.
MAX_CHAIN = 8


class Loop:
    """The generated batch loop: `apply(objs) -> lines some rule used`, its source text and file name."""

    __slots__ = ("apply", "filename", "source")

    def __init__(self, apply: Callable[[list[Any]], int], source: str, filename: str) -> None:
        self.apply, self.source, self.filename = apply, source, filename


class _Source:
    """Names, constants and lines of the function being generated."""

    def __init__(self, dec: LineDecoder) -> None:
        self.dec = dec
        self.ns: dict[str, Any] = {}
        self.names: set[str] = set()
        self.locals: list[str] = []  # bound names the loop reads per line
        self.legend: list[str] = []

    def bind(self, name: str, value: Any, per_line: bool = True) -> str:
        """A readable name of the generated function bound to `value`: a default argument (a local,
        LOAD_FAST) when the loop uses it per line, else a global."""
        if name in self.ns and self.ns[name] is value:
            return name  # the same object (a family's series, `to_number`) under one name
        base, n = name, 1
        while name in self.names or keyword.iskeyword(name):
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        self.ns[name] = value
        if per_line:
            self.locals.append(name)
        return name

    def literal(self, value: Any) -> str:
        """Source for a discriminator value: a literal where Python has one, else a bound constant."""
        if value.__class__ in (str, int):
            return repr(value)
        return self.bind("value", value)

    def read(
        self, paths: tuple[str, ...], indent: str, body: list[str], done: dict[tuple[str, ...], str]
    ) -> str:
        """An expression for the first present of `paths`: an inlined attribute load for one top-level
        field, else a variable set by statements appended to `body` (once per branch)."""
        attrs = [self.dec.attr(p) for p in paths]
        if len(paths) == 1 and "." not in attrs[0]:
            return f"o.{attrs[0]}"
        var = done.get(paths)
        if var is not None:
            return var
        var = done[paths] = self.bind("v_" + re.sub(r"\W", "_", paths[0]), None, per_line=False)
        del self.ns[var]  # a variable of the loop, assigned per line
        body.append(f"{indent}# {var} <- {' or '.join(paths)}")
        for n, attr in enumerate(attrs):
            pad = indent if n == 0 else indent + "    "
            if n:
                body.append(f"{indent}if {var} is None:")
            first, *rest = attr.split(".")
            body.append(f"{pad}{var} = o.{first}")
            for a in rest:
                body.append(f"{pad}if {var} is not None: {var} = {var}.{a}")
        return var


def _key(
    src: _Source, reads: list[Read], indent: str, body: list[str], done: dict[tuple[str, ...], str]
) -> str:
    parts = []
    for r in reads:
        expr = src.read(r.paths, indent, body, done)
        parts.append(f"(None if {expr} is None else True)" if r.presence else expr)
    return "(" + "".join(f"{p}, " for p in parts) + ")"


def _line_updates(src: _Source, group: Group, ind: str, done: dict[tuple[str, ...], str]) -> list[str]:
    """Each rule's update of one line, in line order: for groups whose updates do not commute (gauge
    `set`/`dec`, counters by a value field). `keys[j]` is rule j's series key (None: no match)."""
    out: list[str] = []
    for j, rule in enumerate(group.rules):
        spec, fam = rule.spec, rule.family
        metric = re.sub(r"\W", "_", fam.name)
        out += [
            f"{ind}# rule {rule.number + 1}: {spec.action} {fam.name}",
            f"{ind}k = keys[{j}]",
            f"{ind}if k is not None:",
        ]
        at = ind + "    "
        if spec.value is not None:
            value = src.read(spec.value.paths, at, out, {})  # read inside this rule's `if`: its own
            out.append(f"{at}raw = {value}")
            if group.on_missing is not None:  # a matched line without its value field: counted, not silent
                missing = src.bind(f"missing_{metric}", partial(group.on_missing, fam.name, 1))
                out += [f"{at}if raw is None:", f"{at}    {missing}()"]
            bad = src.bind(f"bad_value_{metric}", partial(group.on_bad_value, fam.name))
            negative = " or v < 0.0" if fam.kind == COUNTER else ""
            out += [
                f"{at}if raw is not None:",
                f"{at}    v = raw if raw.__class__ is float else {src.bind('to_number', to_number)}(raw)",
                f"{at}    if v is None{negative}:",
                f"{at}        {bad}(raw)",
                f"{at}    else:",
            ]
            at += "        "
            if spec.value.scale != 1.0:
                out.append(f"{at}v *= {spec.value.scale!r}")
        else:
            out.append(f"{at}v = 1")
        series = src.bind(f"series_{metric}", fam.series)
        out += [f"{at}if k not in {series}:", f"{at}    k = {src.bind(f'admit_{metric}', fam.admit)}(k)"]
        if spec.action == "observe":
            buckets = src.bind(f"buckets_{metric}", fam.buckets)
            out += [
                f"{at}c = {series}.get(k)",
                f"{at}if c is None:",
                f"{at}    c = {series}[k] = [0] * {len(fam.buckets) + 1} + [0.0]",
                f"{at}c[{src.bind('bisect_left', bisect_left)}({buckets}, v)] += 1",
                f"{at}c[-1] += v",
            ]
        elif spec.action == "inc":
            out.append(f"{at}{series}[k] = {series}.get(k, 0) + v")
        elif spec.action == "dec":
            out.append(f"{at}x = {series}.get(k, 0.0) - v")
            floor = spec.floor
            out.append(
                f"{at}{series}[k] = x if x >= {floor!r} else {floor!r}"
                if floor is not None
                else f"{at}{series}[k] = x"
            )
        else:
            out.append(f"{at}{series}[k] = float(v)")
        if fam.changed is not None:  # the checkpoint writes only the series that changed
            out.append(f"{at}{src.bind(f'changed_{metric}', fam.changed)}.add(k)")
        stamps = group.seen.get(fam.name)
        if stamps is not None:  # idle expiry
            out.append(f"{at}{src.bind(f'stamps_{metric}', stamps)}[k] = {src.bind('now', group.now)}[0]")
        out.append(f"{at}hit = True")
    return out


def generate_loop(
    groups: list[Group],
    deferred: list[bool],
    index: dict[Any, int],
    fallback: int,
    dec: LineDecoder,
    disc_path: str | None,
    disc: Callable[[Any], Any] | None,
) -> tuple[Loop, list[Deferred | None]]:
    """Generate the loop for `groups`; `index` maps a discriminator value to a group number,
    `fallback` is the group of any other value (-1: none). Returns the loop and the deferred groups."""
    src = _Source(dec)
    disc_attr = dec.attr(disc_path) if disc_path is not None else None
    values: dict[int, list[Any]] = {}
    for value, j in index.items():
        values.setdefault(j, []).append(value)
    # A few discriminator values are compared directly: `==` on a fresh string is cheaper than hashing
    # it for a dict lookup (~13% of the loop with four groups); many values go through the dict.
    chain = disc_attr is not None and len(index) <= MAX_CHAIN
    head = ["def apply(objs):", "    n = 0"]
    loop = ["    for o in objs:"]
    if disc_attr is None:
        pass  # no discriminator: every line runs the one group
    elif chain:
        loop.append(
            f"        g = {f'o.{disc_attr}' if '.' not in disc_attr else src.bind('discriminator', disc) + '(o)'}"
        )
    else:
        head.append(f"    get = {src.bind('group_of', index, per_line=False)}.get")
        value = f"o.{disc_attr}" if "." not in disc_attr else src.bind("discriminator", disc) + "(o)"
        loop.append(f"        g = get({value}, {fallback})")
    order = [j for j in range(len(groups)) if j != fallback or not chain]
    if chain and fallback >= 0:
        order.append(fallback)  # any other value: last, as the `else`
    tail: list[str] = []
    trims: list[str] = []
    observers: list[str] = []
    gathered: list[Deferred | None] = [None] * len(groups)
    for pos, j in enumerate(order):
        group = groups[j]
        number = j + 1
        ind = " " * 12 if disc_attr is not None else " " * 8
        if disc_attr is not None:
            if not chain:
                cond = f"g == {j}"
            elif j == fallback:
                cond = "True"
            else:
                cond = " or ".join(f"g == {src.literal(v)}" for v in values[j])
            loop.append(
                "        else:"
                if pos and cond == "True"
                else f"        {'if' if pos == 0 else 'elif'} {cond}:"
            )
        names = ", ".join(f"rule {r.number + 1} {r.family.name}" for r in group.rules)
        how = "gathered per batch" if deferred[j] else "applied line by line (updates in line order)"
        loop.append(f"{ind}# group {number}: {names}; {how}")
        done: dict[tuple[str, ...], str] = {}
        body: list[str] = []
        key = _key(src, group.reads, ind, body, done)
        fields = ", ".join(" or ".join(r.paths) + (" present" if r.presence else "") for r in group.reads)
        loop += body
        loop.append(f"{ind}key = {key}  # {fields or 'no field'}")
        if not deferred[j]:
            decisions = src.bind(f"decisions_{number}", group.cache)
            loop += [
                f"{ind}try:",
                f"{ind}    d = {decisions}[key]",
                f"{ind}except KeyError:",
                f"{ind}    d = {src.bind(f'decide_{number}', group.decide)}(key)",
                f"{ind}d[0] += 1  # lines per decision: the rules' match counts, added up per batch",
                f"{ind}keys = d[1]",
                f"{ind}hit = False",
                *_line_updates(src, group, ind, done),
                f"{ind}if hit:",
                f"{ind}    n += 1",
            ]
            tail.append(f"    {src.bind(f'count_matches_{number}', group.count_matches, per_line=False)}()")
            continue
        obs: list[Observe | None] = []
        for rule in group.rules:
            ob = None
            if rule.spec.action == "observe":
                assert rule.spec.value is not None
                stamps = group.seen.get(rule.family.name)
                ob = Observe(
                    rule.family,
                    rule.spec.value.scale,
                    stamps,
                    group.now,
                    group.on_bad_value,
                    group.on_missing,
                )
                observers.append(src.bind(f"flush_observe_{rule.number + 1}", ob.flush, per_line=False))
            obs.append(ob)
        entry = Deferred(group, obs)
        gathered[j] = entry
        entries = src.bind(f"entries_{number}", entry.entries)
        appends: list[str] = []
        for at, (rule, ob) in enumerate(zip(group.rules, obs, strict=True), start=Deferred.SLOTS):
            if ob is not None:
                assert rule.spec.value is not None
                value = src.read(rule.spec.value.paths, ind, appends, done)
                appends.append(f"{ind}e[{at}].append({value})  # {rule.family.name}")
        loop += [
            f"{ind}try:",  # a subscript is cheaper than a `.get` call; a new tuple is rare
            f"{ind}    e = {entries}[key]",
            f"{ind}except KeyError:",
            f"{ind}    e = {entries}[key] = {src.bind(f'new_entry_{number}', entry.make)}(key)",
            f"{ind}e[0] += 1",
            *appends,
        ]
        tail.append(f"    n += {src.bind(f'flush_{number}', entry.flush, per_line=False)}()")
        trims.append(f"    {src.bind(f'trim_{number}', entry.trim, per_line=False)}()")
    tail += [f"    {name}()" for name in observers]
    defaults = "".join(f", {name}={name}" for name in src.locals)
    head[0] = f"def apply(objs{defaults}):"
    text = "\n".join([*head, *loop, *tail, *trims, "    return n"]) + "\n"
    filename = f"<rules loop {hash(text) & 0xFFFFFFFFFFFF:012x}>"
    # the same text gets the same name within a process, so reloads do not grow linecache without bound
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    exec(compile(text, filename, "exec"), src.ns)
    return Loop(src.ns["apply"], text, filename), gathered
