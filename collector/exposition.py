"""Render metric families as Prometheus text (0.0.4) or OpenMetrics 1.0, from cached text.

Pure functions over `collector.metrics.Family`: each series' label text is escaped once and kept,
and a family that did not change since the last scrape reuses its rendered text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from collector.metrics import COUNTER, HISTOGRAM, Family

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "content_type",
    "escape_help",
    "escape_label_value",
    "format_value",
    "go_float",
    "render",
    "render_document",
    "render_family",
    "render_header",
    "wants_openmetrics",
]

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def wants_openmetrics(accept: str | None) -> bool:
    """True when an Accept header asks for OpenMetrics (Prometheus sends it first when it can)."""
    if not accept:
        return False
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        if media.strip().lower() == "application/openmetrics-text":
            q = 1.0
            for p in params.split(";"):
                k, _, v = p.strip().partition("=")
                if k == "q":
                    try:
                        q = float(v)
                    except ValueError:
                        q = 0.0
            if q > 0:
                return True
    return False


def escape_label_value(value: str) -> str:
    """Escape a label value as the text format requires (backslash, double quote, newline)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Format a sample value: integers without a fraction, Go's spelling of infinities and NaN."""
    if type(value) is int:
        return str(value)
    if value.is_integer() and -1e15 < value < 1e15:  # False for NaN and the infinities
        return str(int(value))
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    return repr(value)


def go_float(value: float) -> str:
    """A bucket bound as client_python's `floatToGoString` spells it (`1.0`, `1e+06`): the same
    series as a client_python exporter, without importing prometheus_client into `collector replay`."""
    d = float(value)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _labels(fam: Family, key: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(fam.labelnames, key, strict=True))


def _template(fam: Family, key: tuple[str, ...]) -> str:
    """One series' lines with `%` placeholders for its values (a literal `%` in labels is doubled)."""
    labels = _labels(fam, key).replace("%", "%%") if key else ""
    name = fam.name
    if fam.kind != HISTOGRAM:
        return f"{name}{{{labels}}} %r\n" if labels else f"{name} %r\n"
    # client_python spells bounds as Go floats (le="1.0"); matching it keeps series identical.
    sep = "," if labels else ""
    braced = f"{{{labels}}}" if labels else ""
    les = [go_float(b) for b in fam.buckets] + ["+Inf"]
    return "".join(
        [*(f'{name}_bucket{{{labels}{sep}le="{le}"}} %d\n' for le in les),
         f"{name}_sum{braced} %r\n{name}_count{braced} %d\n"]
    )  # fmt: skip


def _values(fam: Family) -> list[Any]:
    """The family's sample values in template order (histograms: cumulative buckets, sum, count)."""
    if fam.kind != HISTOGRAM:
        return list(fam.series.values())
    out: list[Any] = []
    extend, append = out.extend, out.append
    for cells in fam.series.values():
        extend(accumulate(cells))  # cumulative bucket counts, then count + sum (replaced by the sum)
        out[-1] = cells[-1]
        append(out[-2])  # the count: the +Inf bucket
    return out


def _finite(values: list[float]) -> bool:
    """True when every value is finite, checked in C (a sum that overflows only takes the slow path)."""
    total = sum(values)
    return total - total == 0


def render_family(fam: Family, openmetrics: bool = False) -> str:
    """Render one family (empty string when it has no series).

    An unchanged family reuses its whole text (`Family.rendered`). Otherwise the family's text is one
    `%` format of its cached template (`Family.series_template`: every series' label text, escaped
    once) with all its values: one C call formats every sample, instead of a Python-level string build
    per sample line.
    """
    cached = fam.rendered(openmetrics)
    if cached is not None:
        return cached
    template = fam.series_template(lambda key: _template(fam, key))
    if not template:
        fam.keep_rendered(openmetrics, "")
        return ""
    values = _values(fam)
    if _finite(values if fam.kind != HISTOGRAM else values[len(fam.buckets) + 1 :: len(fam.buckets) + 3]):
        body = template % tuple(values)
    else:  # NaN and the infinities are spelled NaN, +Inf, -Inf, not Python's nan/inf
        body = template % tuple([v if v - v == 0 else _Spelled(format_value(v)) for v in values])
    text = render_header(fam, openmetrics) + body
    fam.keep_rendered(openmetrics, text)
    return text


def render_header(fam: Family, openmetrics: bool = False) -> str:
    """The family's `# HELP` and `# TYPE` lines (OpenMetrics names a counter's family without `_total`)."""
    family_name = fam.name[:-6] if openmetrics and fam.kind == COUNTER else fam.name
    return f"# HELP {family_name} {escape_help(fam.help)}\n# TYPE {family_name} {fam.kind}\n"


class _Spelled(str):
    """A value already spelled out: `%r` of it is the text itself."""

    def __repr__(self) -> str:
        return str.__str__(self)


def render(families: Iterable[Family], openmetrics: bool = False) -> str:
    """Concatenate the families' text; the caller appends `# EOF` for OpenMetrics."""
    return "".join(render_family(f, openmetrics) for f in families)


def render_document(families: Iterable[Family], openmetrics: bool = False) -> str:
    """A complete exposition of just these families: OpenMetrics requires the closing `# EOF`."""
    text = render(families, openmetrics)
    return text + "# EOF\n" if openmetrics else text


def content_type(openmetrics: bool) -> str:
    return OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
