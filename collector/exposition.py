"""Render metric families as Prometheus text (0.0.4) or OpenMetrics 1.0, from cached text.

Pure functions over `collector.metrics.Family`: each series' label text is escaped once and kept,
and a family that did not change since the last scrape reuses its rendered text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.utils import floatToGoString

from collector.metrics import COUNTER, HISTOGRAM, Family

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "escape_help",
    "escape_label_value",
    "format_value",
    "render",
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
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value.is_integer() and -1e15 < value < 1e15:
        return str(int(value))
    return repr(value)


def _label_text(fam: Family, key: tuple[str, ...]) -> str:
    text = fam._label_text.get(key)
    if text is None:
        if key:
            text = ",".join(
                f'{n}="{escape_label_value(v)}"' for n, v in zip(fam.labelnames, key, strict=True)
            )
        else:
            text = ""
        fam._label_text[key] = text
    return text


def render_family(fam: Family, openmetrics: bool = False) -> str:
    """Render one family (empty string when it has no series), reusing the cached text if unchanged."""
    cached = fam._text.get(openmetrics)
    if cached is not None:
        return cached
    if not fam.series:
        fam._text[openmetrics] = ""
        return ""
    name = fam.name
    family_name = name[:-6] if openmetrics and fam.kind == COUNTER else name
    out = [f"# HELP {family_name} {escape_help(fam.help)}\n# TYPE {family_name} {fam.kind}\n"]
    append = out.append
    if fam.kind == HISTOGRAM:
        # client_python spells bounds as Go floats (le="1.0"); matching it keeps series identical.
        les = [floatToGoString(b) for b in fam.buckets] + ["+Inf"]
        for key, cells in fam.series.items():
            labels = _label_text(fam, key)
            prefix = f"{name}_bucket{{{labels}," if labels else f"{name}_bucket{{"
            cumulative = 0
            for le, count in zip(les, cells, strict=False):
                cumulative += count
                append(f'{prefix}le="{le}"}} {cumulative}\n')
            braced = f"{{{labels}}}" if labels else ""
            append(
                f"{name}_sum{braced} {format_value(float(cells[-1]))}\n{name}_count{braced} {cumulative}\n"
            )
    else:
        for key, value in fam.series.items():
            labels = _label_text(fam, key)
            if labels:
                append(f"{name}{{{labels}}} {format_value(value)}\n")
            else:
                append(f"{name} {format_value(value)}\n")
    text = "".join(out)
    fam._text[openmetrics] = text
    return text


def render(families: Iterable[Family], openmetrics: bool = False) -> str:
    """Concatenate the families' text; the caller appends `# EOF` for OpenMetrics."""
    return "".join(render_family(f, openmetrics) for f in families)
