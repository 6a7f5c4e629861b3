"""`collector replay --explain` and `--show-compiled`: what the rules do with a line, and the code they run.

`explain` runs each rule's match tree through the engine's own interpreter (`match.evaluate`, which
records what decided), so it says why a rule did not match: the field that is missing, the value that
is not in the allowed set, the number that is not above the threshold. Labels come from the engine's
`decide.Labeler` (with budgets of its own: explaining never uses up the running rules' budgets).
`show_compiled` prints each dispatch group's decisions and the source of the one generated loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from collector.rules.compile import Compiled
from collector.rules.decide import Labeler
from collector.rules.match import AllOf, AnyOf, Cond, Match, Not, evaluate
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
        # budgets of its own, as full as the running ones: explaining admits nothing into them
        self.labeler = Labeler({spec: _copy(b) for spec, b in c.budgets.items()})
        # a join of its own: explaining never disturbs the pending table of the running rules
        self.stages = [Join(st.spec, self.dec) if isinstance(st, Join) else st for st in c.stages]

    def get(self, paths: tuple[str, ...], obj: Any) -> Any:
        fn = self.getters.get(paths)
        if fn is None:
            fn = self.getters[paths] = self.dec.getter(list(paths))
        return fn(obj)

    def check(self, match: Match | None, obj: Any) -> tuple[bool, str]:
        """(holds, why): decided by the engine's interpreter, which names what decided."""
        why: list[str] = []
        ok = evaluate(match, lambda paths: self.get(paths, obj), why)
        return ok, why[-1]

    def label(self, spec: LabelSpec, obj: Any) -> str:
        return self.labeler.label(spec, lambda paths: self.get(paths, obj))

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


def _copy(budget: Budget) -> Budget:
    out = Budget(budget.limit, budget.other)
    out.values = set(budget.values)
    return out


def describe(match: Match | None) -> str:
    """A match tree as one line of text (`message in ['a'] and status gte 400`)."""
    if match is None:
        return "always"
    if isinstance(match, Cond):
        arg = list(match.arg) if isinstance(match.arg, tuple) else getattr(match.arg, "pattern", match.arg)
        return f"{match.path} {match.op.value} {arg!r}"
    if isinstance(match, Not):
        return f"not ({describe(match.part)})"
    joiner = " and " if isinstance(match, AllOf) else " or "
    assert isinstance(match, AllOf | AnyOf)
    return "(" + joiner.join(describe(p) for p in match.parts) + ")"


def show_compiled(c: Compiled) -> str:
    """What a rule set runs: per dispatch group its rules, residual matches and label fields (decided
    by the interpreter, once per distinct tuple of those fields), then the generated batch loop."""
    disc = c.plan.discriminator
    parts = [
        f"# discriminator field: {disc!r}" if disc else "# no discriminator field: every line runs every rule"
    ]
    for number, (group, reach) in enumerate(zip(c.groups, c.reach, strict=True), 1):
        where = f"{disc} in {sorted(map(repr, reach))}" if reach else "any other value"
        fields = ", ".join(" or ".join(r.paths) + (" present" if r.presence else "") for r in group.reads)
        parts += ["", f"# -- group {number}, for {where}: decided per distinct ({fields or 'no field'})"]
        for rule in group.rules:
            parts.append(f"# rule {rule.number + 1} ({rule.spec.where}): {rule.spec.action} {rule.family.name}"
                         f" when {describe(rule.match)}")  # fmt: skip
            for lb in rule.labels:
                source = lb.const if lb.const is not None else ", ".join(lb.template + lb.paths)
                parts.append(
                    f"    # label {lb.name} <- {source}" + (f" ({lb.normalize})" if lb.normalize else "")
                )
            if rule.spec.value is not None:
                parts.append(f"    # value <- {', '.join(rule.spec.value.paths)} x {rule.spec.value.scale}")
    if c.loop is not None:
        parts += ["", f"# -- the batch loop, {c.loop.filename} (collector.rules.loop)", c.loop.source]
    return "\n".join(parts)
