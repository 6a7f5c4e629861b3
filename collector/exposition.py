"""Render metric families as Prometheus text (0.0.4) or OpenMetrics 1.0, from cached text.

Pure functions over `collector.metrics.Family`: each series' label text is escaped once and kept,
and a family that did not change since the last scrape reuses its rendered text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from prometheus_client.utils import floatToGoString

from collector.metrics import COUNTER, HISTOGRAM, Family

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "content_type",
    "escape_help",
    "escape_label_value",
    "format_value",
    "render",
    "render_document",
    "render_family",
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


def _labels(fam: Family, key: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(fam.labelnames, key, strict=True))


def _prefix(fam: Family, key: tuple[str, ...]) -> Any:
    """Cached text before each value of a series: `name{labels} `, or per-bucket lines for histograms."""
    cached = fam._label_text.get(key)
    if cached is None:
        labels = _labels(fam, key) if key else ""
        name = fam.name
        if fam.kind == HISTOGRAM:
            # client_python spells bounds as Go floats (le="1.0"); matching it keeps series identical.
            sep = "," if labels else ""
            les = [floatToGoString(b) for b in fam.buckets] + ["+Inf"]
            braced = f"{{{labels}}}" if labels else ""
            cached = (
                [f'{name}_bucket{{{labels}{sep}le="{le}"}} ' for le in les],
                f"{name}_sum{braced} ",
                f"{name}_count{braced} ",
            )
        else:
            cached = f"{name}{{{labels}}} " if labels else f"{name} "
        fam._label_text[key] = cached
    return cached


def _histogram_lines(fam: Family, key: tuple[str, ...], cells: list[Any]) -> str:
    buckets, sum_prefix, count_prefix = _prefix(fam, key)
    cumulative = list(accumulate(cells[:-1]))
    body = "".join([f"{b}{c}\n" for b, c in zip(buckets, cumulative, strict=True)])
    return f"{body}{sum_prefix}{format_value(cells[-1])}\n{count_prefix}{cumulative[-1]}\n"


def render_family(fam: Family, openmetrics: bool = False) -> str:
    """Render one family (empty string when it has no series).

    An unchanged family reuses its whole text; otherwise each series whose value did not change since
    it was last rendered reuses its line(s), so a scrape costs a formatted line only per changed series.
    """
    cached = fam._text.get(openmetrics)
    if cached is not None:
        return cached
    series = fam.series
    lines = fam._lines
    if len(lines) > len(series):
        # series removed directly from the dict (rule expiry): forget their cached text too
        for key in [k for k in lines if k not in series]:
            del lines[key]
            fam._label_text.pop(key, None)
    if not series:
        fam._text[openmetrics] = ""
        return ""
    family_name = fam.name[:-6] if openmetrics and fam.kind == COUNTER else fam.name
    out = [f"# HELP {family_name} {escape_help(fam.help)}\n# TYPE {family_name} {fam.kind}\n"]
    append = out.append
    get = lines.get
    if fam.kind == HISTOGRAM:
        for key, cells in series.items():
            entry = get(key)
            if entry is None or entry[0] != cells:
                entry = lines[key] = (list(cells), _histogram_lines(fam, key, cells))
            append(entry[1])
    else:
        prefixes = fam._label_text
        for key, value in series.items():
            entry = get(key)
            if entry is None or entry[0] != value:  # NaN never equals itself: re-rendered, still right
                prefix = prefixes.get(key) or _prefix(fam, key)
                # x - x == 0 only for finite numbers, which repr spells as Prometheus expects
                line = f"{prefix}{value!r}\n" if value - value == 0 else f"{prefix}{format_value(value)}\n"
                entry = lines[key] = (value, line)
            append(entry[1])
    text = "".join(out)
    fam._text[openmetrics] = text
    return text


def render(families: Iterable[Family], openmetrics: bool = False) -> str:
    """Concatenate the families' text; the caller appends `# EOF` for OpenMetrics."""
    return "".join(render_family(f, openmetrics) for f in families)


def render_document(families: Iterable[Family], openmetrics: bool = False) -> str:
    """A complete exposition of just these families: OpenMetrics requires the closing `# EOF`."""
    text = render(families, openmetrics)
    return text + "# EOF\n" if openmetrics else text


def content_type(openmetrics: bool) -> str:
    return OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
