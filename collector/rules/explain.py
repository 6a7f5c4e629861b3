"""`collector replay --explain` and `--show-compiled`: what the rules do with a line, and the code they run.

`explain` interprets the validated rules (not the generated code) on each line, so it can say why a
rule did not match: the field that is missing, the value that is not in the allowed set, the number
that is not above the threshold. Labels are computed by the same converters the generated code uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from collector.rules.codegen import field_label, forms, label_converter
from collector.rules.compile import Compiled
from collector.rules.normalize import Budget, to_number
from collector.rules.schema import LabelSpec, RuleSpec
from collector.rules.stages import Extract, Join

__all__ = ["explain", "show_compiled"]

#: How much of a line is echoed.
ECHO = 160


class _Explainer:
    def __init__(self, c: Compiled) -> None:
        self.c = c
        self.dec = c.decoder
        self.getters: dict[tuple[str, ...], Callable[[Any], Any]] = {}
        self.budgets: dict[LabelSpec, Budget] = {}
        # a join of its own: explaining never disturbs the pending table of the running rules
        self.stages = [Join(st.spec, self.dec) if isinstance(st, Join) else st for st in c.stages]

    def get(self, paths: tuple[str, ...], obj: Any) -> Any:
        fn = self.getters.get(paths)
        if fn is None:
            fn = self.getters[paths] = self.dec.getter(list(paths))
        return fn(obj)

    def check(self, match: tuple[Any, ...] | None, obj: Any) -> tuple[bool, str]:
        """(holds, why): the reason names the first condition that failed."""
        if match is None:
            return True, "no condition"
        kind = match[0]
        if kind == "all":
            for part in match[1]:
                ok, why = self.check(part, obj)
                if not ok:
                    return False, why
            return True, "all conditions hold"
        if kind == "any":
            reasons = []
            for part in match[1]:
                ok, why = self.check(part, obj)
                if ok:
                    return True, why
                reasons.append(why)
            return False, "none of: " + "; ".join(reasons)
        if kind == "not":
            ok, why = self.check(match[1], obj)
            return (not ok), (f"not ({why})")
        _c, path, op, arg = match
        raw = self.get((path,), obj)
        shown = f"{path}={raw!r}"
        if op in ("equals", "in", "not_equals", "not_in"):
            values = (arg,) if op.endswith("equals") else arg
            allowed = set().union(*(forms(v) for v in values))
            inside = raw is not None and raw in allowed
            if op.startswith("not"):
                return (not inside), (
                    f"{shown} is one of {list(values)}" if inside else f"{shown} not excluded"
                )
            if raw is None:
                return False, f"field {path} missing"
            return inside, (f"{shown}" if inside else f"{shown} is not one of {list(values)}")
        if op == "exists":
            present = raw is not None
            if present == arg:
                return True, f"{path} {'present' if present else 'absent'}"
            return False, f"field {path} {'missing' if arg else 'present'}"
        if raw is None:
            return False, f"field {path} missing"
        if op == "regex":
            ok = isinstance(raw, str) and arg.search(raw) is not None
            return ok, f"{shown} {'matches' if ok else 'does not match'} /{arg.pattern}/"
        number = to_number(raw)
        if number is None:
            return False, f"{shown} is not a number"
        ok = {"gt": number > arg, "gte": number >= arg, "lt": number < arg, "lte": number <= arg}[op]
        return ok, f"{shown} {'is' if ok else 'is not'} {op} {arg}"

    def label(self, spec: LabelSpec, obj: Any) -> str:
        if spec.const is not None:
            return spec.const
        raw = self.get(spec.paths, obj)
        if spec.fields:
            budget = self.budgets.get(spec)
            if budget is None and spec.max_values:
                budget = self.budgets[spec] = Budget(spec.max_values, spec.other)
            template = self.get(spec.template, obj) if spec.template else None
            status = self.get(spec.status, obj) if spec.status else None
            return field_label(spec, budget)(raw, template, status)
        try:
            return label_converter(spec, {})(raw)
        except TypeError:
            return spec.default

    def rule(self, rule: RuleSpec, obj: Any) -> tuple[bool, list[str]]:
        ok, why = self.check(rule.match, obj)
        head = f"  rule {rule.index} {rule.metric} ({rule.origin})"
        if not ok:
            return False, [f"{head}: no match: {why}"]
        labels = " ".join(f'{lb.name}="{self.label(lb, obj)}"' for lb in rule.labels)
        out = [f"{head}: matched", f"    labels {{{labels}}}" if labels else "    no labels"]
        if rule.value is None:
            out.append("    update: +1" if rule.action == "inc" else f"    update: {rule.action} 1")
            return True, out
        raw = self.get(rule.value.paths, obj)
        if raw is None:
            out.append(
                f"    value: none of {list(rule.value.paths)} present: not observed, counted in "
                f'collector_log_value_errors_total{{metric="{rule.metric}",reason="missing"}}'
            )
            return True, out
        number = to_number(raw)
        if number is None:
            out.append(f"    value: {raw!r} is not a number: counted as not_a_number, not observed")
        else:
            out.append(
                f"    update: {rule.action} {number * rule.value.scale!r} (raw {raw!r} x {rule.value.scale})"
            )
        return True, out

    def line(self, n: int, line: bytes, now: float) -> list[str]:
        text = line.decode("utf-8", "replace")
        out = [f"line {n}: {text[:ECHO]}{'...' if len(text) > ECHO else ''}"]
        obj = self.dec.decode_one(line)
        if obj is None:
            return [*out, "  not a JSON object (counted as invalid_json or invalid_utf8)"]
        objs = [obj]
        for st in self.stages:
            if isinstance(st, Extract):
                before = objs[0]
                st.apply(objs)
                if objs[0] is not before:
                    out.append(f"  extract: /{st.spec.regex.pattern}/ on {st.spec.source[0]} gave fields")
                elif st.when is None or st.when(before):
                    out.append(f"  extract: {st.spec.source[0]} does not match /{st.spec.regex.pattern}/")
            else:
                key = tuple(get(objs[0]) for get in st.key)
                ending = st.is_end(objs[0]) and key in st.pending
                objs, consumed = st.apply(objs, now)
                if consumed:
                    return [*out, f"  join: start of request {key}: held until its end line"]
                if ending:
                    out.append(
                        f"  join: end of request {key}: carries {list(st.spec.carry)} from its start line"
                    )
                elif st.is_end(obj):
                    out.append(
                        f"  join: end of request {key} without a start line seen (counted as end_without_start)"
                    )
        matched = False
        for rule in self.c.plan.rules:
            ok, lines = self.rule(rule, objs[0])
            matched |= ok
            out += lines
        if not matched:
            out.append("  => no rule matched: counted as unmatched")
        return out


def explain(c: Compiled, lines: Iterable[bytes], limit: int, now: float = 0.0) -> Iterator[str]:
    """Explanation text for the first `limit` non-empty lines."""
    ex = _Explainer(c)
    n = 0
    for n, line in enumerate((ln for ln in lines if ln.strip()), 1):
        if n > limit:
            yield f"... stopped after {limit} lines (--explain-lines)"
            return
        yield from ex.line(n, line.rstrip(b"\r"), now)


def show_compiled(c: Compiled) -> str:
    """The generated code of a rule set, each function under the discriminator values that reach it."""
    disc = c.plan.discriminator
    reached: dict[int, list[Any]] = {}
    for value, fn in c.table.items():
        reached.setdefault(id(fn), []).append(value)
    parts = [
        f"# discriminator field: {disc!r}" if disc else "# no discriminator field: every line runs every rule"
    ]
    for fn in c.groups:
        values = reached.get(id(fn))
        where = f"{disc} in {sorted(map(repr, values))}" if values else "any other value"
        parts += ["", f"# -- group for {where}", fn.__doc__ or ""]
    batch = getattr(c.apply, "__doc__", None)
    if batch:
        parts += ["", "# -- the batch loop (collector.rules.batch) around the groups", batch]
    return "\n".join(parts)
