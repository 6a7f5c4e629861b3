"""Stages that run on decoded lines before the rules: regex extraction and two-line joins.

`extract` turns a string field into fields (uvicorn and gunicorn put the request in the message);
`join` carries the fields of one line onto a later line of the same request (Fastify logs `incoming
request` and `request completed` under one `reqId`). Both work on the decoder's frozen Structs, making
a copy only of the lines they change. A join's pending table is bounded, expires, and is checkpointed
with the offsets (`state`/`restore`), so a join is exactly-once across restarts.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from collector.rules.checks import STAGE_KEYS, RulesError, Spec, _Ctx, _is_number, _paths
from collector.rules.decode import LineDecoder
from collector.rules.match import forms  # the same spellings rules accept (200 and "200")

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Extract", "ExtractSpec", "Join", "JoinSpec", "StageSpec", "build_stages", "parse_stages"]


EXTRACT_KEYS = {"from", "regex", "types", "when"}
JOIN_KEYS = {"key", "start", "end", "carry", "max_pending", "expire_after"}
TYPES = ("str", "int", "float")


class ExtractSpec(Spec):
    """A regex with named groups on a string field; each group becomes a top-level field of the line."""

    __slots__ = _compare = ("origin", "source", "regex", "types", "when")
    origin: str
    source: tuple[str, ...]  # the string field (first present)
    regex: re.Pattern[str]
    types: tuple[tuple[str, str], ...]  # group -> str | int | float
    when: tuple[tuple[str, tuple[Any, ...]], ...]  # (path, allowed values): all must hold

    def __init__(
        self,
        origin: str,
        source: tuple[str, ...],
        regex: re.Pattern[str],
        types: tuple[tuple[str, str], ...] = (),
        when: tuple[tuple[str, tuple[Any, ...]], ...] = (),
    ) -> None:
        self._init(origin=origin, source=source, regex=regex, types=types, when=when)

    def paths(self) -> set[str]:
        return {*self.source, *self.regex.groupindex, *(p for p, _v in self.when)}


class JoinSpec(Spec):
    """Two lines of one request joined by a key: `start` fields are carried onto the `end` line.

    Fastify logs `incoming request` (req) and `request completed` (res, responseTime) with one reqId.
    """

    __slots__ = _compare = ("origin", "key", "start", "end", "carry", "max_pending", "expire_after")
    origin: str
    key: tuple[str, ...]  # fields that identify one request (reqId within pid and hostname)
    start: tuple[tuple[str, tuple[Any, ...]], ...]
    end: tuple[tuple[str, tuple[Any, ...]], ...]
    carry: tuple[str, ...]  # top-level fields copied from the start line when the end line lacks them
    max_pending: int  # started, not yet ended: oldest dropped past this
    expire_after: float  # seconds a start waits for its end

    def __init__(
        self,
        origin: str,
        key: tuple[str, ...],
        start: tuple[tuple[str, tuple[Any, ...]], ...],
        end: tuple[tuple[str, tuple[Any, ...]], ...],
        carry: tuple[str, ...],
        max_pending: int = 10_000,
        expire_after: float = 600.0,
    ) -> None:
        self._init(
            origin=origin, key=key, start=start, end=end, carry=carry, max_pending=max_pending,
            expire_after=expire_after,
        )  # fmt: skip

    def paths(self) -> set[str]:
        return {*self.key, *self.carry, *(p for p, _v in self.start), *(p for p, _v in self.end)}


StageSpec = ExtractSpec | JoinSpec


def parse_stages(data: Any, origin: str) -> list[StageSpec]:
    """The `extract` and `join` stages of a rules document (none for a bare list of rules).

    Raises:
        RulesError: one line per problem.
    """
    if not isinstance(data, dict):
        return []
    errors: list[str] = []
    out: list[StageSpec] = []
    for kind in STAGE_KEYS:
        raw = data.get(kind, [])
        items = raw if isinstance(raw, list) else [raw]
        for i, item in enumerate(items, 1):
            ctx = _Ctx(f"{origin}: {kind} {i}")
            spec = _extract(item, ctx, origin) if kind == "extract" else _join(item, ctx, origin)
            errors.extend(ctx.errors)
            if spec is not None and not ctx.errors:
                out.append(spec)
    if errors:
        raise RulesError(errors)
    return out


def _when(raw: Any, ctx: _Ctx, key: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """`{field: value | {in: [...]}}` -> ((path, values), ...): equality only, all must hold."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        ctx.err(key, "expected a mapping of field: value or field: {in: [values]}")
        return ()
    out = []
    for path, cond in raw.items():
        _paths(path, ctx, f"{key}.{path}")
        if isinstance(cond, dict):
            values = cond.get("in")
            if set(cond) != {"in"} or not isinstance(values, list) or not values:
                ctx.err(f"{key}.{path}", "expected a value or {in: [values]}")
                continue
            out.append((str(path), tuple(values)))
        elif isinstance(cond, list):
            ctx.err(f"{key}.{path}", "use {in: [...]} to match one of several values")
        else:
            out.append((str(path), (cond,)))
    return tuple(out)


def _extract(raw: Any, ctx: _Ctx, origin: str) -> ExtractSpec | None:
    if not isinstance(raw, dict):
        ctx.err("extract", "expected a mapping with from, regex, types, when")
        return None
    for bad in sorted(set(raw) - EXTRACT_KEYS):
        ctx.err(bad, f"unknown key; expected one of {', '.join(sorted(EXTRACT_KEYS))}")
    source = _paths(raw.get("from"), ctx, "from")
    try:
        rx = re.compile(str(raw.get("regex", "")))
    except re.error as exc:
        ctx.err("regex", f"not a valid regular expression: {exc}")
        return None
    if not rx.groupindex:
        ctx.err("regex", "needs named groups, (?P<name>...): each becomes a field")
    types = raw.get("types", {})
    if not isinstance(types, dict):
        ctx.err("types", "expected a mapping of group: str | int | float")
        types = {}
    for group, typ in types.items():
        if group not in rx.groupindex:
            ctx.err(f"types.{group}", "not a named group of the regex")
        if typ not in TYPES:
            ctx.err(f"types.{group}", f"expected one of {', '.join(TYPES)}, not {typ!r}")
    when = _when(raw.get("when"), ctx, "when")
    return ExtractSpec(origin, source, rx, tuple((str(g), str(t)) for g, t in types.items()), when)


def _join(raw: Any, ctx: _Ctx, origin: str) -> JoinSpec | None:
    if not isinstance(raw, dict):
        ctx.err("join", "expected a mapping with key, start, end, carry")
        return None
    for bad in sorted(set(raw) - JOIN_KEYS):
        ctx.err(bad, f"unknown key; expected one of {', '.join(sorted(JOIN_KEYS))}")
    key = _paths(raw.get("key"), ctx, "key")
    carry = _paths(raw.get("carry"), ctx, "carry")
    for path in carry:
        if "." in path:
            ctx.err("carry", f"{path!r}: carry top-level fields (a whole object such as req)")
    start, end = _when(raw.get("start"), ctx, "start"), _when(raw.get("end"), ctx, "end")
    if not start or not end:
        ctx.err("start", "start and end are both required")
    pending, expire = raw.get("max_pending", 10_000), raw.get("expire_after", 600.0)
    if not isinstance(pending, int) or isinstance(pending, bool) or pending < 1:
        ctx.err("max_pending", f"must be a positive integer, not {pending!r}")
        pending = 1
    if not _is_number(expire) or expire <= 0:
        ctx.err("expire_after", f"must be a positive number of seconds, not {expire!r}")
        expire = 1.0
    return JoinSpec(origin, key, start, end, carry, int(pending), float(expire))


# -- runtime ----------------------------------------------------------------------------------------
_CONVERT: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float}


def _tester(when: tuple[tuple[str, tuple[Any, ...]], ...], dec: LineDecoder) -> Callable[[Any], bool]:
    checks = [(dec.getter([p]), frozenset().union(*(forms(v) for v in values))) for p, values in when]

    def test(obj: Any) -> bool:
        for get, allowed in checks:
            try:
                if get(obj) not in allowed:
                    return False
            except TypeError:  # an unhashable value is never one of the allowed scalars
                return False
        return True

    return test


def _top(dec: LineDecoder, path: str) -> str:
    return dec.attr(path)


class Extract:
    """One `extract` stage: named groups of a regex on a string field become fields of the line."""

    def __init__(self, spec: ExtractSpec, dec: LineDecoder) -> None:
        self.spec = spec
        self.get = dec.getter(list(spec.source))
        self.when = _tester(spec.when, dec) if spec.when else None
        types = dict(spec.types)
        # groups no rule reads have no attribute: nothing to fill
        self.targets = [
            (group, _top(dec, group), _CONVERT[types.get(group, "str")]) for group in spec.regex.groupindex
        ]
        self.search = spec.regex.search
        self.failed = 0  # lines `when` selected whose field did not match (shown by --explain, counted)

    def apply(self, objs: list[Any]) -> None:
        from msgspec.structs import replace  # loaded with the decoder, not at start-up

        search, get, when, targets = self.search, self.get, self.when, self.targets
        for i, obj in enumerate(objs):
            if when is not None and not when(obj):
                continue
            text = get(obj)
            m = search(text) if text.__class__ is str else None
            if m is None:
                self.failed += 1
                continue
            fields = {}
            for group, attr, convert in targets:
                raw = m.group(group)
                if raw is not None:
                    try:
                        fields[attr] = convert(raw)
                    except ValueError:
                        continue  # `-` where gunicorn has no byte count: the field stays absent
            objs[i] = replace(obj, **fields)


class Join:
    """One `join` stage; `apply` drops the start lines (kept pending) and completes the end lines."""

    def __init__(self, spec: JoinSpec, dec: LineDecoder) -> None:
        self.spec = spec
        self.dec = dec
        self.key = [dec.getter([p]) for p in spec.key]
        self.is_start = _tester(spec.start, dec)
        self.is_end = _tester(spec.end, dec)
        self.carry = [_top(dec, p) for p in spec.carry]
        # key -> (time started, carried values): insertion order is start order, for expiry and eviction
        self.pending: OrderedDict[tuple[Any, ...], tuple[float, tuple[Any, ...]]] = OrderedDict()
        self.outcomes = {"joined": 0, "end_without_start": 0, "start_expired": 0, "start_evicted": 0}

    def apply(self, objs: list[Any], now: float) -> tuple[list[Any], int]:
        """(lines for the rules, start lines consumed); ends with a pending start carry its fields."""
        out = []
        consumed = 0
        pending, keys, carry = self.pending, self.key, self.carry
        from msgspec.structs import replace  # loaded with the decoder, not at start-up

        for obj in objs:
            if self.is_start(obj):
                key = tuple(get(obj) for get in keys)
                pending[key] = (now, tuple(getattr(obj, a) for a in carry))
                pending.move_to_end(key)
                if len(pending) > self.spec.max_pending:
                    pending.popitem(last=False)
                    self.outcomes["start_evicted"] += 1
                consumed += 1
                continue
            if self.is_end(obj):
                hit = pending.pop(tuple(get(obj) for get in keys), None)
                if hit is None:
                    self.outcomes["end_without_start"] += 1
                else:
                    self.outcomes["joined"] += 1
                    fields = {a: v for a, v in zip(carry, hit[1], strict=True) if getattr(obj, a) is None}
                    if fields:
                        obj = replace(obj, **fields)
            out.append(obj)
        self.expire(now)
        return out, consumed

    def expire(self, now: float) -> None:
        limit = now - self.spec.expire_after
        pending = self.pending
        while pending:
            key, (started, _v) = next(iter(pending.items()))
            if started >= limit:
                break
            del pending[key]
            self.outcomes["start_expired"] += 1

    # -- checkpoint ---------------------------------------------------------------------------------
    def state(self) -> list[list[Any]]:
        """The pending table as JSON-ready rows `[key, started, {carried field: value}]`."""
        import msgspec

        names = self.spec.carry
        return [
            [list(key), started, msgspec.to_builtins(dict(zip(names, values, strict=True)))]
            for key, (started, values) in self.pending.items()
        ]

    def restore(self, rows: list[Any]) -> None:
        """Load `state()` rows; carried objects are decoded by the line decoder, as from a log line."""
        import msgspec

        self.pending.clear()
        for row in rows:
            try:
                key, started, carried = row
                obj = self.dec.decode_one(msgspec.json.encode(carried))
            except (ValueError, TypeError, msgspec.DecodeError):
                continue  # a row this version cannot read: that one request counts without its start
            if obj is not None:
                values = tuple(getattr(obj, a) for a in self.carry)
                self.pending[tuple(key)] = (float(started), values)


def build_stages(specs: list[StageSpec], dec: LineDecoder) -> list[Extract | Join]:
    """Runtime stages in order: every extract, then every join."""
    out: list[Extract | Join] = [Extract(s, dec) for s in specs if isinstance(s, ExtractSpec)]
    out += [Join(s, dec) for s in specs if isinstance(s, JoinSpec)]
    return out
