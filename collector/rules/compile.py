"""Compile validated rule specs into a dispatch table of generated functions that update families.

`plan()` is pure: it merges the rules per metric and checks them against the families already in the
metric state, so a bad reload fails before anything changes. `build()` registers the families and
returns a `Compiled` whose `table` maps a discriminator value (the `message`/`event` field) to one
generated function (see `collector.rules.codegen`) holding only the rules that can match that value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.metrics import Family, MetricState
from collector.rules.batch import generate_batch
from collector.rules.codegen import GroupFn, forms, generate_group
from collector.rules.decode import LineDecoder
from collector.rules.normalize import Budget
from collector.rules.schema import LabelSpec, RulesError, RuleSpec
from collector.rules.stages import Extract, Join, JoinSpec, StageSpec, build_stages

__all__ = ["Compiled", "FamilyDef", "Plan", "build", "plan"]

Rule = Callable[[Any], bool]


@dataclass
class FamilyDef:
    """One metric as the rules define it (several rules may feed the same metric)."""

    name: str
    kind: str
    help: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...]
    max_series: int
    expire_after: float | None
    unbounded: set[str] = field(default_factory=set)  # labels the series limit folds (route, not status)

    def signature(self) -> tuple[Any, ...]:
        return (self.name, self.kind, self.labelnames, self.buckets)


@dataclass
class Plan:
    """What `build` will do: the rules, their metrics and the discriminator field."""

    rules: list[RuleSpec]
    families: dict[str, FamilyDef]
    discriminator: str | None
    stages: list[StageSpec] = field(default_factory=list)


@dataclass
class Compiled:
    """A rule set ready for the hot path."""

    plan: Plan
    decoder: LineDecoder
    discriminator: Callable[[Any], Any] | None
    table: dict[Any, Rule]  # discriminator value -> generated function of the rules that can match
    always: Rule  # rules with no condition on the discriminator (used for any other value)
    families: dict[str, Family]
    seen: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)  # idle expiry
    now: list[float] = field(default_factory=lambda: [0.0])  # batch time, read by expiring rules
    apply: Callable[[list[Any]], int] = lambda objs: 0  # decoded batch -> lines some rule used
    stages: list[Extract | Join] = field(default_factory=list)  # run on decoded lines before `apply`
    budgets: dict[LabelSpec, Budget] = field(default_factory=dict)  # label value budgets, shared
    groups: list[Rule] = field(default_factory=list)  # the generated functions (--show-compiled)


def plan(
    rules: Sequence[RuleSpec],
    metrics: MetricState,
    owned: set[str],
    max_series: int,
    stages: Sequence[StageSpec] = (),
) -> Plan:
    """Merge rules per metric and check them against families that rules did not create.

    Raises:
        RulesError: rules that disagree about a metric, or a metric another part of the collector owns.
    """
    errors: list[str] = []
    families: dict[str, FamilyDef] = {}
    first: dict[str, RuleSpec] = {}
    for rule in rules:
        labelnames = tuple(lb.name for lb in rule.labels)
        fam = families.get(rule.metric)
        if fam is None:
            first[rule.metric] = rule
            families[rule.metric] = FamilyDef(
                rule.metric, rule.kind, rule.help, labelnames, rule.buckets,
                rule.max_series or max_series, rule.expire_after,
                {lb.name for lb in rule.labels if not lb.bounded},
            )  # fmt: skip
            continue
        fam.unbounded |= {lb.name for lb in rule.labels if not lb.bounded}
        where = first[rule.metric].where
        if fam.kind != rule.kind:
            errors.append(f"{rule.where}: type: {rule.kind} but {where} makes it a {fam.kind}")
        elif set(fam.labelnames) != set(labelnames):
            errors.append(f"{rule.where}: labels: {list(labelnames)} but {where} uses {list(fam.labelnames)}")
        elif fam.buckets != rule.buckets:
            errors.append(f"{rule.where}: buckets: differ from {where}")
        fam.help = fam.help or rule.help
        if rule.max_series:
            fam.max_series = rule.max_series
        if rule.expire_after:
            fam.expire_after = rule.expire_after
    for name in families:
        existing = metrics.families.get(name)
        if existing is not None and name not in owned:
            errors.append(f"{first[name].where}: metric: {name} is already a {existing.kind} elsewhere")
    if errors:
        raise RulesError(errors)
    return Plan(list(rules), families, _discriminator(rules), list(stages))


def _keys(rule: RuleSpec) -> list[tuple[str, tuple[Any, ...]]]:
    """Top-level `field equals/in` conditions of a rule: (path, values)."""
    match = rule.match
    parts = match[1] if match is not None and match[0] == "all" else (match,) if match else ()
    return [
        (p[1], (p[3],) if p[2] == "equals" else p[3])
        for p in parts
        if p[0] == "cond" and p[2] in ("equals", "in")
    ]


def _discriminator(rules: Sequence[RuleSpec]) -> str | None:
    counts = Counter(path for rule in rules for path in {p for p, _v in _keys(rule)})
    return counts.most_common(1)[0][0] if counts else None


def build(
    p: Plan,
    metrics: MetricState,
    on_overflow: Callable[[str], None],
    on_bad_value: Callable[[str, Any], None],
    on_missing: Callable[[str, int], None] | None = None,
) -> Compiled:
    """Register the planned families (keeping values of unchanged ones) and compile the rules."""
    families: dict[str, Family] = {}
    for fd in p.families.values():
        existing = metrics.families.get(fd.name)
        if existing is not None and existing.signature() != fd.signature():
            metrics.unregister(fd.name)  # redefined by a reload: its old values cannot carry over
        fam = metrics.family(fd.name, fd.kind, fd.help, fd.labelnames, fd.buckets or None, fd.max_series)
        fam.on_overflow = on_overflow
        fam.fold_only(sorted(fd.unbounded))
        families[fd.name] = fam
    paths = set().union(*(r.paths() for r in p.rules))
    if p.discriminator:
        paths.add(p.discriminator)
    values = {path for r in p.rules if r.value is not None for path in r.value.paths}
    stage_paths = set().union(*(s.paths() for s in p.stages)) if p.stages else set()
    # join keys (reqId) and extracted strings are unique per line: never learnt as Literals
    unique = {
        path
        for st in p.stages
        for path in (st.key if isinstance(st, JoinSpec) else (*st.source, *st.regex.groupindex))
    }
    decoder = LineDecoder(paths | stage_paths, literal_paths=paths - values - unique)
    budgets: dict[LabelSpec, Budget] = {}
    seen: dict[str, dict[tuple[str, ...], float]] = {
        fd.name: {} for fd in p.families.values() if fd.expire_after
    }
    now = [0.0]
    prepared = []  # (spec, residual match, family, label order, discriminator values or None)
    for rule in p.rules:
        keys = [v for path, v in _keys(rule) if path == p.discriminator][:1]
        match = _strip(rule.match, p.discriminator) if keys else rule.match
        fd = p.families[rule.metric]
        prepared.append((rule, match, families[rule.metric], fd.labelnames, keys[0] if keys else None))
    groups: dict[tuple[int, ...], GroupFn] = {}

    def group(indices: tuple[int, ...]) -> GroupFn:
        fn = groups.get(indices)
        if fn is None:
            fn = groups[indices] = generate_group(
                [prepared[i][:4] for i in indices], decoder, seen, now, on_bad_value, budgets, on_missing
            )
        return fn

    always = tuple(i for i, r in enumerate(prepared) if r[4] is None)
    by_key: dict[Any, list[int]] = {}
    for i, r in enumerate(prepared):
        for value in r[4] or ():
            for form in forms(value):
                by_key.setdefault(form, []).append(i)
    table: dict[Any, Rule] = {k: group(tuple(sorted(set(v) | set(always)))) for k, v in by_key.items()}
    disc = decoder.getter([p.discriminator]) if p.discriminator else None
    fallback = group(always) if always else _no_rule
    compiled = Compiled(p, decoder, disc, table, fallback, families, seen, now)
    compiled.stages = build_stages(p.stages, decoder)
    compiled.budgets = budgets
    compiled.groups = list(groups.values())
    attr = decoder.attr(p.discriminator) if p.discriminator else None
    fns = list(groups.values())
    if fns:  # one loop over the batch, commuting updates gathered per batch: collector.rules.batch
        number = {id(fn): j for j, fn in enumerate(fns)}
        index = {k: number[id(fn)] for k, fn in table.items()}
        fb = number[id(fallback)] if always else -1
        metas = [fn.meta for fn in fns]
        compiled.apply = generate_batch(
            metas, fns, index, fb, attr, disc, seen, now, on_bad_value, on_missing
        )
    else:
        compiled.apply = _batch_loop(attr, disc, table, fallback)
    return compiled


def _batch_loop(
    attr: str | None, disc: Callable[[Any], Any] | None, table: dict[Any, Rule], fallback: Rule
) -> Callable[[list[Any]], int]:
    """The per-batch loop, generated so a flat discriminator is a plain attribute read (no call)."""
    if attr is None:
        select = "A"
    elif "." not in attr:
        select = f"get(o.{attr}, A)"
    else:
        select = "get(D(o), A)"
    src = (
        "def apply(objs):\n"
        "    n = 0\n"
        "    get = T.get\n"
        "    for o in objs:\n"
        f"        if {select}(o):\n"
        "            n += 1\n"
        "    return n\n"
    )
    ns: dict[str, Any] = {"T": table, "A": fallback, "D": disc}
    exec(compile(src, "<rules batch loop>", "exec"), ns)
    apply: Callable[[list[Any]], int] = ns["apply"]
    return apply


def _no_rule(_line: Any) -> bool:
    return False


def _strip(match: tuple[Any, ...] | None, disc: str | None) -> tuple[Any, ...] | None:
    """The match without its first top-level condition on the discriminator (the table checks it)."""
    if match is None:
        return None
    if match[0] == "cond":
        return None
    parts = list(match[1])
    for j, part in enumerate(parts):
        if part[0] == "cond" and part[1] == disc and part[2] in ("equals", "in"):
            del parts[j]
            break
    return None if not parts else parts[0] if len(parts) == 1 else ("all", tuple(parts))
