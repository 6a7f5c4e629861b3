"""Generate one Python function per dispatch group: the hot path of the rules engine.

A group is the rules that can match one discriminator value (`message == "http_request"`). Its
function reads each needed field once; every residual match and label is a pure function of the raw
fields read, so their outcome (one series key per rule, or None) is computed once per distinct tuple
of raw values and cached; per line only values are converted and `Family.series` updated inline.
Generated source instead of nested closures: ~4x fewer Python calls per line.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from collector.metrics import COUNTER, Family
from collector.rules.decode import LineDecoder
from collector.rules.normalize import NORMALIZERS, Budget, TemplateMatcher, label_text, status_code, to_number
from collector.rules.schema import LabelSpec, RuleSpec

__all__ = ["GroupFn", "GroupMeta", "field_label", "generate_group", "label_converter"]

#: Label caches are cleared past this size (raw URLs are unbounded; the label values they map to are not).
CACHE_LIMIT = 4096
_CMP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass
class GroupMeta:
    """A generated group's parts, for generating a whole-batch loop around them."""

    prep: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # raw field tuple -> one series key (or None) per rule
    cache: dict[tuple[Any, ...], tuple[Any, ...]]  # prep's results (the generated group fills it too)
    reads: list[str]  # source lines setting the r-variables from the decoded line `o`
    raw: str  # source of the raw tuple expression (`(r0, r5, )`)
    value_vars: list[str | None]  # per rule: the r-variable holding its value field
    rules: list[tuple[RuleSpec, tuple[Any, ...] | None, Family, tuple[str, ...]]]


class GroupFn(Protocol):
    """A generated group function, `fn(line) -> matched`, carrying its parts (`meta`) for the batch
    generator (collector.rules.batch)."""

    meta: GroupMeta

    def __call__(self, line: Any, /) -> bool: ...


def label_converter(spec: LabelSpec, cache: dict[Any, str]) -> Callable[[Any], str]:
    """Raw field value -> label text for one label spec, remembered in `cache`."""
    norm = NORMALIZERS[spec.normalize] if spec.normalize else label_text
    mapping = dict(spec.mapping)
    allow, other, default = spec.allow, spec.other, spec.default

    def convert(raw: Any) -> str:
        text = norm(raw)
        if text is None:
            text = default
        else:
            text = mapping.get(text, text)
            if allow is not None and text not in allow:
                text = other
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[raw] = text
        return text

    return convert


def field_label(spec: LabelSpec, budget: Budget | None) -> Callable[[Any, Any, Any], str]:
    """(raw field, raw template, raw status) -> label text, for labels with template/status/budget.

    A logged template wins; else the URL matched against the configured templates; else a 404/405 is
    `unmatched` (a scanner's URLs make one series); else the normalised field. The budget comes last,
    so constants (`unmatched`, the default) never use it up.
    """
    norm = NORMALIZERS[spec.normalize] if spec.normalize else label_text
    mapping = dict(spec.mapping)
    allow, other, default, unmatched = spec.allow, spec.other, spec.default, spec.unmatched
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
        text = mapping.get(text, text)
        if allow is not None and text not in allow:
            text = other
        return admit(text) if admit is not None else text

    return convert


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


_GROUPS = itertools.count(1)


def register_source(filename: str, src: str) -> None:
    """Put generated source in linecache, so a traceback through it shows the generated lines."""
    import linecache

    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)


class _Gen:
    def __init__(self, dec: LineDecoder, budgets: dict[LabelSpec, Budget] | None = None) -> None:
        self.dec = dec
        self.budgets = budgets if budgets is not None else {}
        self.ns: dict[str, Any] = {"_num": to_number, "_bisect": bisect_left, "_label_text": label_text}
        self.ids = itertools.count()
        self.reads: dict[tuple[str, ...], str] = {}
        self.read_lines: list[str] = []
        self.labels: dict[LabelSpec, str] = {}
        # reads only tested for presence (`exists`) enter the cache key as None/True, not their value:
        # `duration_ms: {exists: true}` must not make every distinct duration a new cache entry
        self.exists_used: set[str] = set()
        self.used: set[str] = set()

    def const(self, value: Any, prefix: str) -> str:
        name = f"{prefix}{next(self.ids)}"
        self.ns[name] = value
        return name

    def read(self, paths: tuple[str, ...]) -> str:
        """Variable holding the first present of `paths`, read once at the top of the function."""
        var = self.reads.get(paths)
        if var is not None:
            return var
        var = self.reads[paths] = f"r{next(self.ids)}"
        out = self.read_lines
        for n, path in enumerate(paths):
            pad = "    " if n == 0 else "    " + "    " * 1
            if n:
                out.append(f"    if {var} is None:")
            attrs = self.dec.attr(path).split(".")
            if len(attrs) == 1:
                out.append(f"{pad}{var} = o.{attrs[0]}")
                continue
            out.append(f"{pad}{var} = o.{attrs[0]}")
            for a in attrs[1:]:
                out.append(f"{pad}if {var} is not None: {var} = {var}.{a}")
        return var

    def label(self, spec: LabelSpec, indent: str, body: list[str], eager: bool) -> str:
        """Emit the computation of one label; eager labels are computed once per line and shared."""
        if spec.const is not None:
            return self.const(spec.const, "k")
        if spec in self.labels:
            return self.labels[spec]  # computed unconditionally at the top: reuse it
        body.append(f"{indent}# label {spec.name} <- {', '.join(spec.template + spec.paths) or 'constant'}")
        if spec.fields:  # several fields or a budget: computed in prep only, so no per-label cache
            args = [self.read(p) if p else "None" for p in (spec.paths, spec.template, spec.status)]
            self.used.update(a for a in args if a != "None")
            budget = self.budgets.get(spec)
            if budget is None and spec.max_values:
                budget = self.budgets[spec] = Budget(spec.max_values, spec.other)
            fn = self.const(field_label(spec, budget), "F")
            var = f"l{next(self.ids)}"
            body.append(f"{indent}{var} = {fn}({', '.join(args)})")
            if eager:
                self.labels[spec] = var
            return var
        raw = self.read(spec.paths)
        self.used.add(raw)
        cache: dict[Any, str] = {}
        c, v = self.const(cache, "C"), self.const(label_converter(spec, cache), "V")
        d = self.const(spec.default, "D")
        var = f"l{next(self.ids)}"
        body += [
            f"{indent}try:",
            f"{indent}    {var} = {c}[{raw}]",
            f"{indent}except KeyError:",
            f"{indent}    {var} = {v}({raw})",
            f"{indent}except TypeError:",
            f"{indent}    {var} = {d}",
        ]
        if eager:
            self.labels[spec] = var
        return var

    def predicate(self, match: tuple[Any, ...]) -> str:
        kind = match[0]
        if kind in ("all", "any"):
            joiner = " and " if kind == "all" else " or "
            return "(" + joiner.join(self.predicate(m) for m in match[1]) + ")"
        if kind == "not":
            return f"(not {self.predicate(match[1])})"
        _c, path, op, arg = match
        raw = self.read((path,))
        (self.exists_used if op == "exists" else self.used).add(raw)
        if op in ("equals", "in", "not_equals", "not_in"):
            values = (arg,) if op.endswith("equals") else arg
            s = self.const(frozenset(set().union(*(forms(x) for x in values))), "S")
            return f"({raw} {'not in' if op.startswith('not') else 'in'} {s})"
        if op == "exists":
            return f"({raw} is {'not ' if arg else ''}None)"
        if op == "regex":
            rx = self.const(arg.search, "X")
            return f"((_t := _label_text({raw})) is not None and {rx}(_t) is not None)"
        limit, cmp = self.const(float(arg), "N"), _CMP[op]
        # ints (status codes) compare directly; strings ("404" from nginx) go through _num
        return (
            f"(({raw}.__class__ is int and {raw} {cmp} {limit}) or ({raw}.__class__ is not int"
            f" and (_n := _num({raw})) is not None and _n {cmp} {limit}))"
        )


def generate_group(
    rules: list[tuple[RuleSpec, tuple[Any, ...] | None, Family, tuple[str, ...]]],
    dec: LineDecoder,
    seen: dict[str, dict[tuple[str, ...], float]],
    now: list[float],
    on_bad_value: Callable[[str, Any], None],
    budgets: dict[LabelSpec, Budget] | None = None,
    on_missing: Callable[[str, int], None] | None = None,
) -> GroupFn:
    """Compile rules (spec, residual match, family, family label order) into `fn(line) -> matched`.

    Two generated functions: `prep(raw)` evaluates every residual match and label of the group from
    the tuple of raw fields they read (pure, so its result is cached per raw tuple); `group(line)`
    reads the fields, looks the tuple up, and only does the per-line work: values and updates.
    """
    g = _Gen(dec, budgets)
    g.ns["NOW"] = now
    prep: list[str] = []
    # Labels of rules without a residual match are needed on every line of the group: share them.
    for spec, match, _fam, _names in rules:
        if match is None:
            for lb in spec.labels:
                g.label(lb, "    ", prep, eager=True)
    keys: list[str] = []
    for spec, match, _fam, names in rules:
        ind = "    "
        kvar = f"k{next(g.ids)}"
        prep.append(f"{ind}# {spec.where}: {kvar} = its series key, None when it does not match")
        keys.append(kvar)
        if match is not None:
            prep.append(f"{ind}{kvar} = None")
            prep.append(f"{ind}if {g.predicate(match)}:")
            ind += "    "
        by_name = {lb.name: lb for lb in spec.labels}
        lvars = [g.label(by_name[n], ind, prep, eager=match is None) for n in names]
        prep.append(f"{ind}{kvar} = " + ("(" + "".join(f"{v}, " for v in lvars) + ")" if lvars else "()"))
    raw_vars = list(g.reads.values())  # everything matches and labels depend on: the cache key
    presence = g.exists_used - g.used
    targets = "(" + "".join(f"{v}, " for v in raw_vars) + ")"
    raw = (
        "("
        + "".join(f"(None if {v} is None else True), " if v in presence else f"{v}, " for v in raw_vars)
        + ")"
    )
    cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    g.ns["E"] = cache
    result = "(" + "".join(f"{k}, " for k in keys) + ")"
    prep_src = [
        "def prep(raw):",
        f"    {targets} = raw" if raw_vars else "    pass",
        *prep,
        f"    if len(E) >= {CACHE_LIMIT}:",
        "        E.clear()",  # raw values may be unbounded (URLs); what they map to is not
        f"    E[raw] = res = {result}",
        "    return res",
    ]
    body: list[str] = [f"    rk = {raw}", "    e = E.get(rk)", "    if e is None:", "        e = prep(rk)"]
    value_vars: list[str | None] = []
    for j, (spec, _match, fam, _names) in enumerate(rules):
        ind = "    "
        body += [
            f"{ind}# {spec.where}: {spec.action} {fam.name}",
            f"{ind}k = e[{j}]",
            f"{ind}if k is not None:",
        ]
        ind += "    "
        value_vars.append(g.read(spec.value.paths) if spec.value is not None else None)
        if spec.value is not None:
            rv = g.read(spec.value.paths)
            bad = g.const(lambda value, _m=fam.name: on_bad_value(_m, value), "B")
            neg = " or v < 0.0" if fam.kind == COUNTER else ""
            if on_missing is not None:  # a matched line without its value field: counted, not silent
                miss = g.const(lambda _m=fam.name: on_missing(_m, 1), "M")
                body += [f"{ind}if {rv} is None:", f"{ind}    {miss}()"]
            body += [
                f"{ind}if {rv} is not None:",
                f"{ind}    v = {rv} if {rv}.__class__ is float else _num({rv})",
                f"{ind}    if v is None{neg}:",
                f"{ind}        {bad}({rv})",
                f"{ind}    else:",
            ]
            ind += "        "
            if spec.value.scale != 1.0:
                body.append(f"{ind}v *= {g.const(spec.value.scale, 'N')}")
        else:
            body.append(f"{ind}v = 1")
        s, a = g.const(fam.series, "S"), g.const(fam.admit, "A")
        body += [f"{ind}if k not in {s}:", f"{ind}    k = {a}(k)"]
        if spec.action == "observe":
            b = g.const(fam.buckets, "B")
            empty = g.const(len(fam.buckets) + 1, "N")
            body += [
                f"{ind}c = {s}.get(k)",
                f"{ind}if c is None:",
                f"{ind}    c = {s}[k] = [0] * {empty} + [0.0]",
                f"{ind}c[_bisect({b}, v)] += 1",
                f"{ind}c[-1] += v",
            ]
        elif spec.action == "inc":
            body.append(f"{ind}{s}[k] = {s}.get(k, 0) + v")
        elif spec.action == "dec":
            body.append(f"{ind}x = {s}.get(k, 0.0) - v")
            if spec.floor is not None:
                f = g.const(spec.floor, "N")
                body.append(f"{ind}{s}[k] = x if x >= {f} else {f}")
            else:
                body.append(f"{ind}{s}[k] = x")
        else:
            body.append(f"{ind}{s}[k] = float(v)")
        if fam.changed is not None:  # the checkpoint writes only the series that changed
            body.append(f"{ind}{g.const(fam.changed, 'D')}.add(k)")
        if fam.name in seen:
            body.append(f"{ind}{g.const(seen[fam.name], 'E')}[k] = NOW[0]")
        body.append(f"{ind}hit = True")
    legend = [f"# {var} <- {' or '.join(paths)}" for paths, var in g.reads.items()]
    src = "\n".join(
        [
            *legend,
            *prep_src,
            "",
            "def group(o):",
            "    hit = False",
            *g.read_lines,
            *body,
            "    return hit",
            "",
        ]
    )
    filename = f"<rules group {next(_GROUPS)}>"
    register_source(filename, src)
    code = compile(src, filename, "exec")
    exec(code, g.ns)
    fn: GroupFn = g.ns["group"]
    fn.__doc__ = src  # the generated source, for debugging (`print(fn.__doc__)`)
    # What the batch generator (collector.rules.batch) reuses: the cached prep and the field reads.
    fn.meta = GroupMeta(g.ns["prep"], cache, list(g.read_lines), raw, value_vars, rules)
    return fn
