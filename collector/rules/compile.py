"""Compile validated rule specs into dispatch groups, their interpreted decisions and the one generated loop.

The pipeline, from a rules file to a metric update:

1. `schema` (and `stages`) validate YAML into frozen specs; a rule's `match:` becomes a typed tree
   (`match.Cond` / `AllOf` / `AnyOf` / `Not`).
2. `plan()` (pure) merges the rules per metric and checks them against the families already in the
   metric state, so a bad reload fails before anything changes.
3. `build()` registers the families, picks the discriminator (the field most rules test with
   `equals`/`in`, e.g. `message`) and makes one `decide.Group` per set of rules a discriminator value
   can reach: the group interprets the residual matches and the labels once per distinct tuple of raw
   fields (cached), which also gives `--explain` its reasons and the per-rule match counts.
4. `loop.generate_loop()` writes the only generated code, the loop over a decoded batch: dispatch,
   inlined field reads, and per-batch gathering (`gather`) of the updates that commute.

`decode.LineDecoder` turns a batch of lines into Structs holding only the fields the rules read.
"""

from __future__ import annotations

from collections import Counter

from collector.metrics import Family, MetricState
from collector.rules.decide import Group, GroupRule, Labeler
from collector.rules.decode import LineDecoder
from collector.rules.gather import Deferred, deferrable
from collector.rules.loop import Loop, generate_loop
from collector.rules.match import forms, top_level_keys, without
from collector.rules.normalize import Budget
from collector.rules.schema import LabelSpec, RulesError, RuleSpec
from collector.rules.stages import Extract, Join, JoinSpec, StageSpec, build_stages

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["Compiled", "FamilyDef", "Plan", "build", "plan"]


class FamilyDef:
    """One metric as the rules define it (several rules may feed the same metric)."""

    __slots__ = ("buckets", "expire_after", "help", "kind", "labelnames", "max_series", "name", "unbounded")

    def __init__(
        self,
        name: str,
        kind: str,
        help: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
        max_series: int,
        expire_after: float | None,
        unbounded: set[str] | None = None,
    ) -> None:
        self.name, self.kind, self.help, self.labelnames = name, kind, help, labelnames
        self.buckets, self.max_series, self.expire_after = buckets, max_series, expire_after
        self.unbounded = unbounded if unbounded is not None else set()  # labels the series limit folds

    def signature(self) -> tuple[Any, ...]:
        return (self.name, self.kind, self.labelnames, self.buckets)


class Plan:
    """What `build` will do: the rules, their metrics and the discriminator field."""

    __slots__ = ("discriminator", "families", "rules", "stages")

    def __init__(
        self,
        rules: list[RuleSpec],
        families: dict[str, FamilyDef],
        discriminator: str | None,
        stages: list[StageSpec] | None = None,
    ) -> None:
        self.rules, self.families, self.discriminator = rules, families, discriminator
        self.stages = stages if stages is not None else []


class Compiled:
    """A rule set ready for the hot path."""

    def __init__(
        self,
        plan: Plan,
        decoder: LineDecoder,
        families: dict[str, Family],
        groups: list[Group],
        reach: list[list[Any]],
        loop: Loop | None,
        labeler: Labeler,
        matches: list[int],
        seen: dict[str, dict[tuple[str, ...], float]],
        now: list[float],
    ) -> None:
        self.plan = plan
        self.decoder = decoder
        self.families = families
        self.groups = groups  # the dispatch groups, in the loop's numbering
        self.reach = reach  # per group: the discriminator values that select it (empty: any other value)
        self.loop = loop  # the generated batch loop (None: no rule can match anything)
        self.labeler = labeler
        self.matches = matches  # per rule of `plan.rules`: lines it matched since this rule set was built
        self.seen = seen  # idle expiry
        self.now = now  # batch time, read by expiring rules
        self.stages: list[Extract | Join] = []  # run on decoded lines before `apply`
        self.deferred: list[Deferred | None] = []  # per group: its per-batch gathering
        self._literals: bool | None = None  # `decoder.literals` of the batch the entries were made in

    @property
    def budgets(self) -> dict[LabelSpec, Budget]:
        """Label value budgets, shared by every rule that computes the label."""
        return self.labeler.budgets

    def apply(self, objs: list[Any]) -> int:
        """Apply decoded lines; how many some rule used."""
        if self.decoder.literals is not self._literals:
            # The gathering entries are keyed by raw tuples of the batch they were made in: equal
            # strings, but not the same objects once the decoder returns its Literals (or stops), so
            # each lookup would compare them char by char. Entries are empty between batches (flushed):
            # they are made again, from the decisions already cached.
            self._literals = self.decoder.literals
            for entry in self.deferred:
                if entry is not None:
                    entry.entries.clear()
        return self.loop.apply(objs) if self.loop is not None else 0


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


def _discriminator(rules: Sequence[RuleSpec]) -> str | None:
    # paths in rule order (not a set's): a tie is broken the same way in every process
    counts = Counter(
        path for rule in rules for path in dict.fromkeys(p for p, _v in top_level_keys(rule.match))
    )
    # the first of the most used (as `most_common(1)`, without importing heapq for it)
    return max(counts.items(), key=lambda kv: kv[1])[0] if counts else None


def build(
    p: Plan,
    metrics: MetricState,
    on_overflow: Callable[[str], None],
    on_bad_value: Callable[[str, Any], None],
    on_missing: Callable[[str, int], None] | None = None,
    check_utf8: bool = False,
) -> Compiled:
    """Register the planned families (keeping values of unchanged ones), group the rules by the
    discriminator values that reach them and generate the batch loop."""
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
    # a level read as an object or array is a level of its own (`other`), as the level counter had it
    opaque = {path for r in p.rules for lb in r.labels if lb.normalize == "level" for path in lb.paths}
    decoder = LineDecoder(
        paths | stage_paths, literal_paths=paths - values - unique, opaque_paths=opaque, check_utf8=check_utf8
    )
    # every value budget exists from the start, so the engine can seed it with restored series' values
    labeler = Labeler(
        {
            lb: Budget(lb.max_values, lb.other)
            for r in p.rules
            for lb in r.labels
            if lb.max_values and lb.const is None
        }
    )
    seen: dict[str, dict[tuple[str, ...], float]] = {
        fd.name: {} for fd in p.families.values() if fd.expire_after
    }
    now = [0.0]
    matches = [0] * len(p.rules)
    prepared: list[tuple[GroupRule, list[Any] | None]] = []  # (rule, discriminator values or None)
    for number, rule in enumerate(p.rules):
        keys = [v for path, v in top_level_keys(rule.match) if path == p.discriminator][:1]
        fd = p.families[rule.metric]
        by_name = {lb.name: lb for lb in rule.labels}
        value = decoder.getter(list(rule.value.paths)) if rule.value is not None else None
        gr = GroupRule(
            number, rule, without(rule.match, p.discriminator) if keys else rule.match,
            families[rule.metric], tuple(by_name[n] for n in fd.labelnames), value,
        )  # fmt: skip
        prepared.append((gr, list(keys[0]) if keys else None))
    groups: dict[tuple[int, ...], Group] = {}

    def group(indices: tuple[int, ...]) -> Group:
        g = groups.get(indices)
        if g is None:
            rules = [prepared[i][0] for i in indices]
            g = groups[indices] = Group(rules, labeler, on_bad_value, on_missing, seen, now, matches)
        return g

    always = tuple(i for i, (_r, v) in enumerate(prepared) if v is None)
    by_key: dict[Any, list[int]] = {}
    for i, (_r, reached) in enumerate(prepared):
        for value in reached or ():
            for form in forms(value):
                by_key.setdefault(form, []).append(i)
    table = {k: group(tuple(sorted(set(v) | set(always)))) for k, v in by_key.items()}
    fallback = group(always) if always else None
    ordered = list(groups.values())
    position = {id(g): j for j, g in enumerate(ordered)}
    index = {k: position[id(g)] for k, g in table.items()}
    reach: list[list[Any]] = [[] for _ in ordered]
    for k, j in index.items():
        reach[j].append(k)
    disc = decoder.getter([p.discriminator]) if p.discriminator else None
    loop: Loop | None = None
    gathered: list[Deferred | None] = [None] * len(ordered)
    if ordered:
        fb = position[id(fallback)] if fallback is not None else -1
        loop, gathered = generate_loop(
            ordered, deferrable(ordered), index, fb, decoder, p.discriminator, disc
        )
    compiled = Compiled(p, decoder, families, ordered, reach, loop, labeler, matches, seen, now)
    compiled.stages = build_stages(p.stages, decoder)
    compiled.deferred = gathered
    return compiled
