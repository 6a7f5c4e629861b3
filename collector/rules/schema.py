"""Rules file schema: YAML (or the same data from a preset) -> validated, immutable rule specs.

Every problem in a file is collected and reported at once, each naming the file, the rule (index and
metric) and the field, so an operator can fix a file in one pass. No I/O beyond reading the file.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from collector.metrics import COUNTER, GAUGE, HISTOGRAM, Family, MetricDefinitionError
from collector.rules.checks import STAGE_KEYS, RulesError, Spec, _Ctx, _is_number, _paths
from collector.rules.match import AllOf, AnyOf, Cond, Match, Not, Op
from collector.rules.normalize import NORMALIZERS

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "DEFAULT_DURATION_BUCKETS",
    "DEFAULT_SIZE_BUCKETS",
    "STAGE_KEYS",
    "LabelSpec",
    "RuleSpec",
    "RulesError",
    "ValueSpec",
    "parse_rules",
]

#: 5 ms .. 10 s, the catalog's HTTP latency buckets (same as the mtail benchmark program).
DEFAULT_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: 100 B .. 10 MB, response sizes.
DEFAULT_SIZE_BUCKETS = (100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0)
#: Multipliers from a logged unit to the metric's base unit (Prometheus wants seconds and bytes).
UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "bytes": 1.0, "kib": 1024.0, "mib": 1024.0**2}
COMPARISONS = ("gt", "gte", "lt", "lte")
CONDITION_OPS = ("equals", "not_equals", "in", "not_in", "regex", "exists", *COMPARISONS)
RULE_KEYS = {
    "name", "metric", "type", "help", "match", "labels", "value", "action", "buckets",
    "max_series", "expire_after", "floor",
}  # fmt: skip
LABEL_KEYS = {
    "from", "value", "normalize", "map", "allow", "other", "default",
    "template", "status", "unmatched", "max_values", "templates", "openapi",
}  # fmt: skip
#: Label normalisers whose output is a small fixed set: the series limit never folds these labels.
BOUNDED_NORMALIZERS = frozenset({"status_code", "status_class", "http_method", "level"})
GAUGE_ACTIONS = ("set", "inc", "dec")


class LabelSpec(Spec):
    """How one label value is taken from a line."""

    __slots__ = _compare = (
        "name", "paths", "const", "normalize", "mapping", "allow", "other", "default",
        "template", "status", "unmatched", "max_values", "templates",
    )  # fmt: skip
    name: str
    paths: tuple[str, ...]  # dotted field paths; the first present one wins
    const: str | None  # fixed value instead of a field
    normalize: str | None
    mapping: tuple[tuple[str, str], ...]  # applied after normalize
    allow: frozenset[str] | None  # values outside it become `other`
    other: str
    default: str  # when the field is missing
    template: tuple[str, ...]  # fields holding a logged route template: used first when present
    status: tuple[str, ...]  # the status code field, for `unmatched`
    unmatched: str | None  # the value for a 404/405 without a template (one series for scanners)
    max_values: int | None  # value budget: past it, new values become `other`
    templates: tuple[str, ...]  # route templates (list or OpenAPI paths) URLs are matched against

    def __init__(
        self,
        name: str,
        paths: tuple[str, ...] = (),
        const: str | None = None,
        normalize: str | None = None,
        mapping: tuple[tuple[str, str], ...] = (),
        allow: frozenset[str] | None = None,
        other: str = "other",
        default: str = "",
        template: tuple[str, ...] = (),
        status: tuple[str, ...] = (),
        unmatched: str | None = None,
        max_values: int | None = None,
        templates: tuple[str, ...] = (),
    ) -> None:
        self._init(
            name=name, paths=paths, const=const, normalize=normalize, mapping=mapping, allow=allow,
            other=other, default=default, template=template, status=status, unmatched=unmatched,
            max_values=max_values, templates=templates,
        )  # fmt: skip

    @property
    def fields(self) -> bool:
        """Does the value depend on more than the one field (template, status, budget, templates)?"""
        return bool(self.template or self.status or self.max_values or self.templates)

    @property
    def bounded(self) -> bool:
        """Is the label's value set small and fixed (never folded by the series limit)?"""
        return self.const is not None or self.allow is not None or self.normalize in BOUNDED_NORMALIZERS


class ValueSpec(Spec):
    """A numeric field and the factor that converts it to the metric's base unit."""

    __slots__ = _compare = ("paths", "scale")
    paths: tuple[str, ...]
    scale: float

    def __init__(self, paths: tuple[str, ...], scale: float = 1.0) -> None:
        self._init(paths=paths, scale=scale)


class RuleSpec(Spec):
    """One validated rule: when `match` holds, update `metric` with `labels` and `value`."""

    __slots__ = _compare = (
        "origin", "index", "metric", "kind", "help", "match", "labels", "value", "action", "buckets",
        "max_series", "expire_after", "floor", "name",
    )  # fmt: skip
    origin: str  # "preset winston" or a file path, for messages
    index: int
    metric: str
    kind: str
    help: str
    match: Match | None  # the typed match tree (collector.rules.match); None: every line
    labels: tuple[LabelSpec, ...]
    value: ValueSpec | None
    action: str  # counter: inc; gauge: set|inc|dec; histogram: observe
    buckets: tuple[float, ...]
    max_series: int | None
    expire_after: float | None
    floor: float | None  # gauges: never below this (in-flight gauges when a start line was missed)
    name: str

    def __init__(
        self,
        origin: str,
        index: int,
        metric: str,
        kind: str,
        help: str,
        match: Match | None,
        labels: tuple[LabelSpec, ...] = (),
        value: ValueSpec | None = None,
        action: str = "inc",
        buckets: tuple[float, ...] = (),
        max_series: int | None = None,
        expire_after: float | None = None,
        floor: float | None = None,
        name: str = "",
    ) -> None:
        self._init(
            origin=origin, index=index, metric=metric, kind=kind, help=help, match=match, labels=labels,
            value=value, action=action, buckets=buckets, max_series=max_series,
            expire_after=expire_after, floor=floor, name=name,
        )  # fmt: skip

    @property
    def where(self) -> str:
        return f"{self.origin}: rule {self.index} ({self.name or self.metric})"

    def paths(self) -> set[str]:
        """Every field path the rule reads (what the decoder must extract)."""
        out: set[str] = set()
        for label in self.labels:
            out.update(label.paths, label.template, label.status)
        if self.value is not None:
            out.update(self.value.paths)
        if self.match is not None:
            out |= self.match.paths()
        return out


def load_yaml(text: str) -> Any:
    """YAML text as data, with libyaml's parser when PyYAML has it (~20x faster than the pure-Python
    one: `collector replay` pays it at every start). PyYAML is imported here, not at the top, so a
    collector with presets only never loads it.

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # both loaders are safe


def parse_text(text: str, origin: str, load: Callable[[str], Any] = load_yaml) -> list[RuleSpec]:
    """Validate rules from YAML text (see `parse_rules`), parsed by `load` (`collector replay` passes
    `load_yaml` through its cache, collector.rules.yamlcache).

    Raises:
        RulesError: bad YAML or invalid rules.
    """
    try:
        data = load(text)
    except Exception as exc:
        import yaml

        if not isinstance(exc, yaml.YAMLError):
            raise
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RulesError([f"{origin}: not valid YAML{at}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_rules(data, origin)


def parse_rules(data: Any, origin: str) -> list[RuleSpec]:
    """Validate rules given as data: `{"rules": [...]}` or a bare list of rule mappings.

    Raises:
        RulesError: one line per problem, naming the origin, rule and field.
    """
    if isinstance(data, dict):
        extra = set(data) - {"rules", *STAGE_KEYS}
        if extra:
            raise RulesError(
                [f"{origin}: unknown top-level key(s) {sorted(extra)}; expected rules, extract or join"]
            )
        data = data.get("rules")
    if not isinstance(data, list) or not data:
        raise RulesError([f"{origin}: expected a non-empty list under 'rules'"])
    errors: list[str] = []
    specs: list[RuleSpec] = []
    for i, raw in enumerate(data, 1):
        label = raw.get("metric") if isinstance(raw, dict) else None
        ctx = _Ctx(f"{origin}: rule {i}" + (f" ({label})" if label else ""))
        spec = _rule(raw, ctx, origin, i)
        errors.extend(ctx.errors)
        if spec is not None and not ctx.errors:
            specs.append(spec)
    if errors:
        raise RulesError(errors)
    return specs


def _rule(raw: Any, ctx: _Ctx, origin: str, index: int) -> RuleSpec | None:
    if not isinstance(raw, dict):
        ctx.err("rule", "expected a mapping with metric, type, match, ...")
        return None
    for key in sorted(set(raw) - RULE_KEYS):
        ctx.err(key, f"unknown key; expected one of {', '.join(sorted(RULE_KEYS))}")
    metric = raw.get("metric")
    kind = raw.get("type")
    if not isinstance(metric, str) or not metric:
        ctx.err("metric", "required: the Prometheus metric name")
        metric = ""
    if kind not in (COUNTER, GAUGE, HISTOGRAM):
        ctx.err("type", f"must be counter, gauge or histogram, not {kind!r}")
        kind = COUNTER
    help_text = raw.get("help", "")
    if not isinstance(help_text, str):
        ctx.err("help", "must be a string")
        help_text = ""
    match = _match(raw["match"], ctx, "match") if "match" in raw else None
    labels = _labels(raw.get("labels", {}), ctx)
    value = _value(raw["value"], ctx) if "value" in raw else None
    action = raw.get("action")
    if kind == GAUGE:
        if action not in GAUGE_ACTIONS:
            ctx.err("action", f"a gauge needs action set, inc or dec, not {action!r}")
        elif action == "set" and value is None:
            ctx.err("value", "action set needs a value field")
    elif action is not None:
        ctx.err(
            "action",
            f"only gauges take an action; a {kind} always {'observes' if kind == HISTOGRAM else 'increments'}",
        )
    action = action if kind == GAUGE else ("observe" if kind == HISTOGRAM else "inc")
    if kind == HISTOGRAM and value is None:
        ctx.err("value", "a histogram needs a value field")
    buckets = _buckets(raw.get("buckets"), metric, kind, ctx)
    max_series = raw.get("max_series")
    if max_series is not None and (
        not isinstance(max_series, int) or isinstance(max_series, bool) or max_series < 1
    ):
        ctx.err("max_series", f"must be a positive integer, not {max_series!r}")
    expire = raw.get("expire_after")
    if expire is not None and (not _is_number(expire) or expire <= 0):
        ctx.err("expire_after", f"must be a positive number of seconds, not {expire!r}")
    floor = raw.get("floor")
    if floor is not None and (kind != GAUGE or not _is_number(floor)):
        ctx.err("floor", "only gauges take a floor, and it must be a number")
    name = raw.get("name", "")
    if metric and not ctx.errors:
        try:
            Family(metric, kind, help_text, [lb.name for lb in labels], buckets or None)
        except MetricDefinitionError as exc:
            ctx.err("metric", str(exc).removeprefix(f"{metric}: "))
    return RuleSpec(
        origin=origin,
        index=index,
        metric=metric,
        kind=kind,
        help=help_text,
        match=match,
        labels=labels,
        value=value,
        action=action or "inc",
        buckets=buckets,
        max_series=max_series,
        expire_after=float(expire) if _is_number(expire) else None,
        floor=float(floor) if _is_number(floor) else None,
        name=str(name),
    )


def _match(raw: Any, ctx: _Ctx, key: str) -> Match | None:
    """`{field: scalar | {op: arg}, any: [...], all: [...], not: {...}}` -> a match tree (AND of keys)."""
    if isinstance(raw, list):
        return AllOf(tuple(m for i, r in enumerate(raw) if (m := _match(r, ctx, f"{key}[{i}]"))))
    if not isinstance(raw, dict) or not raw:
        ctx.err(key, f"expected a mapping of field: condition, not {raw!r}")
        return None
    parts: list[Match] = []
    for name, cond in raw.items():
        sub = f"{key}.{name}"
        if name in ("any", "all"):
            if not isinstance(cond, list) or not cond:
                ctx.err(sub, "expected a non-empty list of matches")
                continue
            found = tuple(m for i, r in enumerate(cond) if (m := _match(r, ctx, f"{sub}[{i}]")))
            parts.append(AnyOf(found) if name == "any" else AllOf(found))
        elif name == "not":
            inner = _match(cond, ctx, sub)
            if inner is not None:
                parts.append(Not(inner))
        else:
            _paths(name, ctx, sub)
            parts.extend(_conditions(name, cond, ctx, sub))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _conditions(path: str, cond: Any, ctx: _Ctx, key: str) -> list[Match]:
    if not isinstance(cond, dict):
        if isinstance(cond, list):
            ctx.err(key, "use {in: [...]} to match one of several values")
            return []
        return [Cond(path, Op.EQUALS, cond)]
    out: list[Match] = []
    for op, arg in cond.items():
        where = f"{key}.{op}"
        if op not in CONDITION_OPS:
            ctx.err(where, f"unknown condition; expected one of {', '.join(CONDITION_OPS)}")
        elif op in ("in", "not_in") and (not isinstance(arg, list) or not arg):
            ctx.err(where, "expected a non-empty list of values")
        elif op in ("equals", "not_equals") and isinstance(arg, dict | list):
            ctx.err(where, "expected a single value")
        elif op == "exists" and not isinstance(arg, bool):
            ctx.err(where, "expected true or false")
        elif op in COMPARISONS and not _is_number(arg):
            ctx.err(where, f"expected a number, not {arg!r}")
        elif op == "regex":
            if not isinstance(arg, str):
                ctx.err(where, "expected a regular expression string")
                continue
            try:
                out.append(Cond(path, Op.REGEX, re.compile(arg)))
            except re.error as exc:
                ctx.err(where, f"not a valid regular expression: {exc}")
        else:
            out.append(Cond(path, Op(op), tuple(arg) if isinstance(arg, list) else arg))
    return out


def _labels(raw: Any, ctx: _Ctx) -> tuple[LabelSpec, ...]:
    if not isinstance(raw, dict):
        ctx.err("labels", "expected a mapping of label name: field path or {from: ..., ...}")
        return ()
    out = []
    for name, spec in raw.items():
        key = f"labels.{name}"
        if isinstance(spec, str | list):
            spec = {"from": spec}
        if not isinstance(spec, dict):
            ctx.err(key, "expected a field path or a mapping with from/value, normalize, map, default")
            continue
        for bad in sorted(set(spec) - LABEL_KEYS):
            ctx.err(f"{key}.{bad}", f"unknown key; expected one of {', '.join(sorted(LABEL_KEYS))}")
        if ("from" in spec) == ("value" in spec):
            ctx.err(key, "needs exactly one of from (field path) or value (constant)")
            continue
        paths = _paths(spec["from"], ctx, f"{key}.from") if "from" in spec else ()
        norm = spec.get("normalize")
        if norm is not None and norm not in NORMALIZERS:
            ctx.err(
                f"{key}.normalize", f"unknown normaliser {norm!r}; expected one of {', '.join(NORMALIZERS)}"
            )
        mapping = spec.get("map", {})
        if not isinstance(mapping, dict):
            ctx.err(f"{key}.map", "expected a mapping of value: label value")
            mapping = {}
        allow = spec.get("allow")
        if allow is not None and (not isinstance(allow, list) or not allow):
            ctx.err(f"{key}.allow", "expected a non-empty list of allowed values")
            allow = None
        extra = _label_extras(spec, ctx, key)
        out.append(
            LabelSpec(
                **extra,
                name=str(name),
                paths=paths,
                const=str(spec["value"]) if "value" in spec else None,
                normalize=norm,
                mapping=tuple((_text(k), _text(v)) for k, v in mapping.items()),
                allow=frozenset(_text(a) for a in allow) if allow is not None else None,
                other=_text(spec.get("other", "other")),
                default=_text(spec.get("default", "")),
            )
        )
    return tuple(out)


def _label_extras(spec: dict[str, Any], ctx: _Ctx, key: str) -> dict[str, Any]:
    """The route-bounding keys of a label: template, status + unmatched, max_values, templates/openapi."""
    out: dict[str, Any] = {}
    if "template" in spec:
        out["template"] = _paths(spec["template"], ctx, f"{key}.template")
    if "status" in spec:
        out["status"] = _paths(spec["status"], ctx, f"{key}.status")
    if "unmatched" in spec:
        if not spec.get("status"):
            ctx.err(f"{key}.unmatched", "needs status: the field holding the status code")
        out["unmatched"] = _text(spec["unmatched"])
    if "max_values" in spec:
        mv = spec["max_values"]
        if not isinstance(mv, int) or isinstance(mv, bool) or mv < 1:
            ctx.err(f"{key}.max_values", f"must be a positive integer, not {mv!r}")
        else:
            out["max_values"] = mv
    templates: list[str] = []
    if "templates" in spec:
        raw = spec["templates"]
        if not isinstance(raw, list) or not all(isinstance(t, str) and t.startswith("/") for t in raw):
            ctx.err(f"{key}.templates", "expected a list of route templates starting with /")
        else:
            templates += raw
    if "openapi" in spec:
        templates += _openapi_paths(spec["openapi"], ctx, f"{key}.openapi")
    if templates:
        out["templates"] = tuple(templates)
    return out


def _openapi_paths(raw: Any, ctx: _Ctx, key: str) -> list[str]:
    """The `paths` of an OpenAPI (3.x, or Swagger 2 with `basePath`) document, JSON or YAML."""
    if not isinstance(raw, str):
        ctx.err(key, "expected the path of an OpenAPI document")
        return []
    import yaml

    try:
        doc = load_yaml(Path(raw).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        ctx.err(key, f"cannot read the OpenAPI document: {exc}")
        return []
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, dict) or not paths:
        ctx.err(key, f"{raw}: no `paths` in the OpenAPI document")
        return []
    base = str(doc.get("basePath", "")).rstrip("/")
    return [base + str(p) for p in paths if str(p).startswith("/")]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _value(raw: Any, ctx: _Ctx) -> ValueSpec | None:
    if isinstance(raw, str | list):
        raw = {"from": raw}
    if not isinstance(raw, dict) or "from" not in raw:
        ctx.err("value", "expected a field path or {from: path, unit: ms|s|us|ns|bytes|kib|mib, scale: n}")
        return None
    for bad in sorted(set(raw) - {"from", "unit", "scale"}):
        ctx.err(f"value.{bad}", "unknown key; expected from, unit or scale")
    paths = _paths(raw["from"], ctx, "value.from")
    scale = 1.0
    if "unit" in raw and "scale" in raw:
        ctx.err("value", "give unit or scale, not both")
    elif "unit" in raw:
        if raw["unit"] not in UNITS:
            ctx.err("value.unit", f"unknown unit {raw['unit']!r}; expected one of {', '.join(UNITS)}")
        else:
            scale = UNITS[raw["unit"]]
    elif "scale" in raw:
        if not _is_number(raw["scale"]) or raw["scale"] == 0:
            ctx.err("value.scale", f"expected a non-zero number, not {raw['scale']!r}")
        else:
            scale = float(raw["scale"])
    return ValueSpec(paths, scale)


def _buckets(raw: Any, metric: str, kind: str, ctx: _Ctx) -> tuple[float, ...]:
    if kind != HISTOGRAM:
        if raw is not None:
            ctx.err("buckets", "only histograms take buckets")
        return ()
    if raw is None:
        if metric.endswith("_seconds"):
            return DEFAULT_DURATION_BUCKETS
        if metric.endswith("_bytes"):
            return DEFAULT_SIZE_BUCKETS
        ctx.err("buckets", "required for a histogram whose name does not end in _seconds or _bytes")
        return ()
    if not isinstance(raw, list) or not raw or not all(_is_number(b) for b in raw):
        ctx.err("buckets", "expected a non-empty list of finite numbers")
        return ()
    bounds = tuple(float(b) for b in raw)
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        ctx.err("buckets", "must be strictly ascending")
        return ()
    return bounds
