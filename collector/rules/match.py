"""The typed match tree a rule's `match:` compiles into, and the one interpreter that evaluates it.

`evaluate(match, get)` decides whether a line matches; given a `why` list it also records the reason
(the condition that decided), which is what `replay --explain` prints: the engine and the explanation
run the same code. It runs once per distinct tuple of raw field values (the decisions are cached per
dispatch group, see `collector.rules.decide`), never per line, so it is plain interpreted Python.
"""

from __future__ import annotations

import enum

from collector.rules.checks import Spec
from collector.rules.normalize import label_text, to_number

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["AllOf", "AnyOf", "Cond", "Match", "Not", "Op", "evaluate", "forms", "top_level_keys", "without"]


class Op(enum.StrEnum):
    """A condition on one field, as written in a rules file."""

    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    IN = "in"
    NOT_IN = "not_in"
    REGEX = "regex"
    EXISTS = "exists"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


#: Ops that test membership in a set of values (and their negations).
MEMBERSHIP = (Op.EQUALS, Op.NOT_EQUALS, Op.IN, Op.NOT_IN)
_COMPARE: dict[Op, Callable[[Any, Any], bool]] = {
    Op.GT: lambda a, b: a > b,
    Op.GTE: lambda a, b: a >= b,
    Op.LT: lambda a, b: a < b,
    Op.LTE: lambda a, b: a <= b,
}


def forms(value: Any) -> set[Any]:
    """A value and its other JSON spellings (200 and "200"), so `status: 200` matches nginx's strings."""
    out = {value}
    if isinstance(value, int | float) and not isinstance(value, bool):
        out.add(label_text(value))
    elif isinstance(value, str):
        number = to_number(value)
        if number is not None:
            out.add(int(number) if number.is_integer() else number)
    return out


class Cond(Spec):
    """`path op arg`: one condition on one field (the first present value of `path`)."""

    __slots__ = ("allowed", "arg", "limit", "op", "path")
    _compare = ("path", "op", "arg")
    path: str
    op: Op
    arg: Any  # a scalar (equals), a tuple (in), a compiled regex, a bool (exists) or a number
    # what the decision uses, derived from `arg` once: every spelling of the allowed values, or the limit
    allowed: frozenset[Any]
    limit: float

    def __init__(self, path: str, op: Op, arg: Any) -> None:
        self._init(path=path, op=op, arg=arg)
        if op in MEMBERSHIP:
            self._init(allowed=frozenset(set().union(*(forms(v) for v in self.values))))
        if op in _COMPARE:
            self._init(limit=float(arg))

    @property
    def values(self) -> tuple[Any, ...]:
        """The values of a membership condition, as written."""
        return (self.arg,) if self.op in (Op.EQUALS, Op.NOT_EQUALS) else tuple(self.arg)

    def paths(self) -> set[str]:
        return {self.path}

    def test(self, raw: Any) -> bool:
        """Does the raw field value satisfy the condition? (None: the field is absent.)"""
        op = self.op
        if op in MEMBERSHIP:
            inside = raw in self.allowed
            return not inside if op in (Op.NOT_EQUALS, Op.NOT_IN) else inside
        if op is Op.EXISTS:
            return (raw is not None) == bool(self.arg)
        if op is Op.REGEX:
            text = label_text(raw)  # numbers are matched as they are written in a label
            return text is not None and self.arg.search(text) is not None
        compare = _COMPARE[op]
        if raw.__class__ is int:  # ints (status codes) compare exactly, without a float
            return compare(raw, self.limit)
        number = to_number(raw)  # "404" from nginx
        return number is not None and compare(number, self.limit)

    def reason(self, raw: Any, ok: bool) -> str:
        """Why `test(raw)` gave `ok`, for `--explain` (text only: the decision is `test`'s)."""
        path, op, shown = self.path, self.op, f"{self.path}={raw!r}"
        if op in MEMBERSHIP:
            values = list(self.values)
            if op in (Op.NOT_EQUALS, Op.NOT_IN):
                return f"{shown} not excluded" if ok else f"{shown} is one of {values}"
            if raw is None and not ok:
                return f"field {path} missing"
            return shown if ok else f"{shown} is not one of {values}"
        if op is Op.EXISTS:
            present = raw is not None
            if ok:
                return f"{path} {'present' if present else 'absent'}"
            return f"field {path} {'present' if present else 'missing'}"
        if raw is None:
            return f"field {path} missing"
        if op is Op.REGEX:
            return f"{shown} {'matches' if ok else 'does not match'} /{self.arg.pattern}/"
        if to_number(raw) is None:
            return f"{shown} is not a number"
        return f"{shown} {'is' if ok else 'is not'} {op.value} {self.arg}"


class AllOf(Spec):
    """Every part holds (the keys of one `match:` mapping, or a list). No parts: never holds."""

    __slots__ = _compare = ("parts",)
    parts: tuple[Match, ...]

    def __init__(self, parts: tuple[Match, ...]) -> None:
        self._init(parts=parts)

    def paths(self) -> set[str]:
        return set().union(*(p.paths() for p in self.parts))


class AnyOf(Spec):
    """At least one part holds (`any: [...]`)."""

    __slots__ = _compare = ("parts",)
    parts: tuple[Match, ...]

    def __init__(self, parts: tuple[Match, ...]) -> None:
        self._init(parts=parts)

    def paths(self) -> set[str]:
        return set().union(*(p.paths() for p in self.parts))


class Not(Spec):
    """The part does not hold (`not: {...}`)."""

    __slots__ = _compare = ("part",)
    part: Match

    def __init__(self, part: Match) -> None:
        self._init(part=part)

    def paths(self) -> set[str]:
        return self.part.paths()


Match = Cond | AllOf | AnyOf | Not
if TYPE_CHECKING:
    #: Raw field value by field paths (the first present of them); what `evaluate` reads a line through.
    Getter = Callable[[tuple[str, ...]], Any]


def evaluate(match: Match | None, get: Getter, why: list[str] | None = None) -> bool:
    """Does the line seen through `get` match? With `why`, one reason (what decided) is appended."""
    if match is None:
        ok, reason = True, "no condition"
    elif isinstance(match, Cond):
        raw = get((match.path,))
        ok = match.test(raw)
        if why is None:
            return ok
        reason = match.reason(raw, ok)
    elif why is None:  # the engine's path: no reasons built
        if isinstance(match, AllOf):
            # An empty `match: []` never matched in the generated engine (an empty `and` was `()`): kept.
            return bool(match.parts) and all(evaluate(p, get) for p in match.parts)
        if isinstance(match, AnyOf):
            return any(evaluate(p, get) for p in match.parts)
        return not evaluate(match.part, get)
    else:
        parts = match.parts if isinstance(match, AllOf | AnyOf) else (match.part,)
        reasons: list[str] = []
        results = []
        for part in parts:  # evaluated as the engine does: stop at the first part that decides
            results.append(evaluate(part, get, reasons))
            if results[-1] != isinstance(match, AllOf):
                break
        if isinstance(match, AllOf):
            ok = bool(parts) and all(results)
            reason = reasons[-1] if not ok and reasons else "all conditions hold"
        elif isinstance(match, AnyOf):
            ok = any(results)
            reason = reasons[-1] if ok else "none of: " + "; ".join(reasons)
        else:
            ok = not results[0]
            reason = f"not ({reasons[0]})"
    if why is not None:
        why.append(reason)
    return ok


def top_level_keys(match: Match | None) -> list[tuple[str, tuple[Any, ...]]]:
    """The top-level `field equals/in` conditions of a match: (path, values), in order."""
    parts: Sequence[Match] = match.parts if isinstance(match, AllOf) else (match,) if match else ()
    return [(p.path, p.values) for p in parts if isinstance(p, Cond) and p.op in (Op.EQUALS, Op.IN)]


def without(match: Match | None, path: str | None) -> Match | None:
    """The match without its first top-level `equals/in` condition on `path` (dispatch checks that)."""
    if match is None or isinstance(match, Cond):
        return None  # called only when that condition exists: a lone condition is all of it
    if not isinstance(match, AllOf):
        return match
    parts = list(match.parts)
    for j, part in enumerate(parts):
        if isinstance(part, Cond) and part.path == path and part.op in (Op.EQUALS, Op.IN):
            del parts[j]
            break
    return None if not parts else parts[0] if len(parts) == 1 else AllOf(tuple(parts))
