"""Match-and-label decisions of one dispatch group, interpreted and cached per tuple of raw field values.

A group is the rules that can match one discriminator value (`message == "http_request"`). Every
residual match and every label of its rules is a pure function of the raw fields they read, so
`Group.decide(raw)` evaluates them (`collector.rules.match.evaluate`, the label converters below) once
per distinct tuple of raw values and caches the outcome: one series key per rule, or None where the
rule does not match. Replaying 400,000 lines decides ~163 times; the per-line work (values and series
updates) is the one generated loop's (`collector.rules.loop`), gathered per batch where updates
commute (`collector.rules.gather`).
"""

from __future__ import annotations

from collector.metrics import Family
from collector.rules.match import evaluate
from collector.rules.normalize import NORMALIZERS, Budget, TemplateMatcher, label_text, status_code
from collector.rules.schema import LabelSpec, RuleSpec

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from collector.rules.match import Getter, Match

__all__ = ["CACHE_LIMIT", "Group", "GroupRule", "Labeler", "Read", "field_label", "label_converter"]

#: Decision caches are cleared past this size (raw URLs are unbounded; the label values they map to are not).
CACHE_LIMIT = 4096
Key = tuple[str, ...]


def _mapped(spec: LabelSpec) -> Callable[[str], str]:
    """Label text -> its final value: the `map`, then values outside `allow` become `other`."""
    mapping = dict(spec.mapping)
    allow, other = spec.allow, spec.other

    def finish(text: str) -> str:
        text = mapping.get(text, text)
        return other if allow is not None and text not in allow else text

    return finish


def label_converter(spec: LabelSpec) -> Callable[[Any], str]:
    """Raw field value -> label text for a label read from one field (no template, status or budget)."""
    norm = NORMALIZERS[spec.normalize] if spec.normalize else label_text
    finish, default = _mapped(spec), spec.default

    def convert(raw: Any) -> str:
        text = norm(raw)
        return default if text is None else finish(text)

    return convert


def field_label(spec: LabelSpec, budget: Budget | None) -> Callable[[Any, Any, Any], str]:
    """(raw field, raw template, raw status) -> label text, for labels with template/status/budget.

    A logged template wins; else the URL matched against the configured templates; else a 404/405 is
    `unmatched` (a scanner's URLs make one series); else the normalised field. The budget comes last,
    so constants (`unmatched`, the default) never use it up.
    """
    norm = NORMALIZERS[spec.normalize] if spec.normalize else label_text
    finish, default, unmatched = _mapped(spec), spec.default, spec.unmatched
    match = TemplateMatcher(spec.templates).match if spec.templates else None
    admit = budget.admit if budget is not None else None

    def convert(raw: Any, template: Any, status: Any) -> str:
        text = norm(template) if template.__class__ is str and template else None
        if text is None and match is not None and raw.__class__ is str:
            text = match(raw)
        if text is None:
            if unmatched is not None and status_code(status) in ("404", "405"):
                return unmatched
            text = norm(raw)
            if text is None:
                return default
        text = finish(text)
        return admit(text) if admit is not None else text

    return convert


class Labeler:
    """Computes label values from raw fields; value budgets are shared by every rule using the label.

    Args:
        budgets: label spec -> its value budget; filled as labels with `max_values` are first seen.
    """

    def __init__(self, budgets: dict[LabelSpec, Budget]) -> None:
        self.budgets = budgets
        self._simple: dict[LabelSpec, Callable[[Any], str]] = {}
        self._fields: dict[LabelSpec, Callable[[Any, Any, Any], str]] = {}

    def label(self, spec: LabelSpec, get: Getter) -> str:
        """The label's value for the line seen through `get` (a budget admits it here)."""
        if spec.const is not None:
            return spec.const
        if spec.fields:  # several fields or a budget
            fn = self._fields.get(spec)
            if fn is None:
                budget = self.budgets.get(spec)
                if budget is None and spec.max_values:
                    budget = self.budgets[spec] = Budget(spec.max_values, spec.other)
                fn = self._fields[spec] = field_label(spec, budget)
            template = get(spec.template) if spec.template else None
            status = get(spec.status) if spec.status else None
            return fn(get(spec.paths), template, status)
        convert = self._simple.get(spec)
        if convert is None:
            convert = self._simple[spec] = label_converter(spec)
        try:
            return convert(get(spec.paths))
        except TypeError:  # an unhashable value in a mapping lookup
            return spec.default

    def reads(self, spec: LabelSpec) -> list[tuple[str, ...]]:
        """The field reads the label's value depends on."""
        if spec.const is not None:
            return []
        if spec.fields:
            return [p for p in (spec.paths, spec.template, spec.status) if p]
        return [spec.paths]


class Read:
    """One field read of a group: the first present of `paths`. A read only tested for presence
    (`exists`) enters the decision key as True/None, so distinct durations are not distinct keys."""

    # plain classes, not dataclasses, here: each dataclass costs `collector replay` ~0.5 ms of start-up
    __slots__ = ("paths", "presence")

    def __init__(self, paths: tuple[str, ...], presence: bool = False) -> None:
        self.paths = paths
        self.presence = presence

    def __repr__(self) -> str:
        return f"Read({self.paths!r}, presence={self.presence})"


class GroupRule:
    """One rule as a group runs it.

    Args:
        number: its position in the rule set (per-rule match counts).
        spec: the validated rule.
        match: what is left of its match after dispatch on the discriminator.
        family: the metric it updates.
        labels: its label specs in the family's label order (the series key's).
        value: decoded line -> raw value field (None: no value field, the update is 1).
    """

    __slots__ = ("family", "labels", "match", "number", "spec", "value")

    def __init__(
        self,
        number: int,
        spec: RuleSpec,
        match: Match | None,
        family: Family,
        labels: tuple[LabelSpec, ...],
        value: Callable[[Any], Any] | None,
    ) -> None:
        self.number, self.spec, self.match, self.family = number, spec, match, family
        self.labels, self.value = labels, value


class Group:
    """The rules that one discriminator value reaches, their field reads and their cached decisions.

    Args:
        rules: the rules, in rule-set order.
        labeler: label computation shared by the rule set (budgets).
        on_bad_value: `(metric, raw)` for a value that is not a usable number.
        on_missing: `(metric, count)` for matched lines without their value field.
        seen: metric -> series -> last update time, for metrics that expire idle series.
        now: the batch's time, `now[0]`.
        matches: per-rule match counts of the rule set, indexed by `GroupRule.number`.
    """

    def __init__(
        self,
        rules: list[GroupRule],
        labeler: Labeler,
        on_bad_value: Callable[[str, Any], None],
        on_missing: Callable[[str, int], None] | None,
        seen: dict[str, dict[Key, float]],
        now: list[float],
        matches: list[int],
    ) -> None:
        self.rules, self.labeler, self.seen, self.now, self.matches = rules, labeler, seen, now, matches
        self.on_bad_value, self.on_missing = on_bad_value, on_missing
        self.cache: dict[tuple[Any, ...], list[Any]] = {}  # raw tuple -> [lines counted, keys per rule]
        self.decided = 0  # how many times `decide` ran (the cache's misses)
        order: list[tuple[str, ...]] = []
        tested: set[tuple[str, ...]] = set()  # read only by `exists`
        used: set[tuple[str, ...]] = set()
        for rule in rules:
            for paths, presence in _match_reads(rule.match):
                (tested if presence else used).add(paths)
                if paths not in order:
                    order.append(paths)
            for spec in rule.labels:
                for paths in labeler.reads(spec):
                    used.add(paths)
                    if paths not in order:
                        order.append(paths)
        self.reads = [Read(p, p in tested and p not in used) for p in order]
        self._index = {r.paths: i for i, r in enumerate(self.reads)}
        # labels of rules without a residual match are needed for every line of the group: computed
        # first and shared (the order budgets admit values in is part of the behaviour)
        self._eager = list(dict.fromkeys(lb for r in rules if r.match is None for lb in r.spec.labels))

    def keys(self, raw: tuple[Any, ...]) -> tuple[Key | None, ...]:
        """The series key of each rule for a tuple of raw reads (None: the rule does not match)."""
        decision = self.cache.get(raw)
        keys: tuple[Key | None, ...] = (decision if decision is not None else self.decide(raw))[1]
        return keys

    def decide(self, raw: tuple[Any, ...]) -> list[Any]:
        """Evaluate every residual match and label for `raw` (one value per `reads`) and cache the
        decision `[lines counted, keys]` (the generated loop counts the lines of line-by-line groups)."""
        self.decided += 1
        index = self._index

        def get(paths: tuple[str, ...]) -> Any:
            return raw[index[paths]]

        label = self.labeler.label
        shared = {spec: label(spec, get) for spec in self._eager if spec.const is None}
        keys: list[Key | None] = []
        for rule in self.rules:
            if rule.match is not None and not evaluate(rule.match, get):
                keys.append(None)
                continue
            keys.append(tuple(shared[lb] if lb in shared else label(lb, get) for lb in rule.labels))
        if len(self.cache) >= CACHE_LIMIT:
            self.count_matches()  # the counts of the decisions about to be forgotten
            self.cache.clear()  # raw values may be unbounded (URLs); what they map to is not
        decision = self.cache[raw] = [0, tuple(keys)]
        return decision

    def count_matches(self) -> None:
        """Add the lines counted per decision to each matching rule's count, and zero them."""
        matches, rules = self.matches, self.rules
        for decision in self.cache.values():
            count = decision[0]
            if count:
                decision[0] = 0
                for rule, k in zip(rules, decision[1], strict=True):
                    if k is not None:
                        matches[rule.number] += count


def _match_reads(match: Match | None) -> list[tuple[tuple[str, ...], bool]]:
    """(paths, only tested for presence) of every condition in a match tree, in tree order."""
    from collector.rules.match import AllOf, AnyOf, Cond, Not, Op

    if match is None:
        return []
    if isinstance(match, Cond):
        return [((match.path,), match.op is Op.EXISTS)]
    if isinstance(match, Not):
        return _match_reads(match.part)
    assert isinstance(match, AllOf | AnyOf)
    return [r for part in match.parts for r in _match_reads(part)]
