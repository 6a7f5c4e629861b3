"""Pure label normalisers: status code, status class, HTTP method, route templating, numbers.

Each turns a raw decoded JSON value (str, int, float, bool or None) into a bounded label string, so
ids, uuids, hashes and query strings never become label values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "NORMALIZERS",
    "http_method",
    "label_text",
    "route_template",
    "status_class",
    "status_code",
    "to_number",
]

#: Methods kept as they are; anything else becomes OTHER (a scanner sending `FOO /` makes no series).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_NUMBER = re.compile(r"^[0-9][0-9,._-]*$")
_HEX = re.compile(r"^(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{8,}$")  # hex run with a digit: ids, hashes, ObjectIds
_HEX_IN = re.compile(r"(?<![0-9a-zA-Z])[0-9a-fA-F]{16,}(?![0-9a-zA-Z])")  # app.<hash>.js
_TOKEN = re.compile(r"^(?=.*[0-9])(?=.*[a-zA-Z])[A-Za-z0-9_=+-]{20,}$")  # base64url ids, tokens
_EMAIL = re.compile(r"^[^@/]+@[^@/]+$")
#: Keep at most this many path segments; deeper paths end in `/...` (crawlers invent deep paths).
MAX_SEGMENTS = 8


def label_text(value: Any) -> str | None:
    """A decoded JSON scalar as label text (None for missing, objects and arrays)."""
    if value is None:
        return None
    cls = value.__class__
    if cls is str:
        return value
    if cls is bool:
        return "true" if value else "false"
    if cls is int:
        return str(value)
    if cls is float:
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def to_number(value: Any) -> float | None:
    """A JSON number, or a string holding one (nginx quotes its variables), as float; else None."""
    cls = value.__class__
    if cls is float or cls is int:
        return float(value)
    if cls is str:
        try:
            number = float(value)
        except ValueError:
            return None
        return number if number == number else None  # "nan" is not a measurement
    return None


def status_code(value: Any) -> str | None:
    """`200`, `"200"`, `200.0` -> `"200"`; anything outside 100-599 -> `"other"`."""
    number = to_number(value)
    if number is None:
        return None if value is None else "other"
    code = int(number)
    return str(code) if 100 <= code <= 599 and code == number else "other"


def status_class(value: Any) -> str | None:
    """`404` -> `"4xx"`; anything outside 100-599 -> `"other"`."""
    code = status_code(value)
    if code is None or code == "other":
        return code
    return code[0] + "xx"


def http_method(value: Any) -> str | None:
    """Upper-cased HTTP method; unknown methods -> `"OTHER"`."""
    if value.__class__ is not str:
        return None
    method = value.upper()
    return method if method in HTTP_METHODS else "OTHER"


def _segment(seg: str) -> str:
    if not seg or seg[0] == ":" or seg == "*":
        return seg  # empty, or already a template (`:id`, `*`)
    if _NUMBER.match(seg) or _UUID.match(seg) or _HEX.match(seg) or _TOKEN.match(seg) or _EMAIL.match(seg):
        return ":id"
    return _HEX_IN.sub(":hash", seg) if len(seg) >= 16 else seg


def route_template(value: Any) -> str | None:
    """Collapse ids, uuids, hashes, tokens and emails in a URL path to `:id`; drop query and fragment.

    A logged route template (`/api/videos/:id`) passes through unchanged, so one normaliser serves
    loggers that log the template and loggers that only log the raw URL.
    """
    if value.__class__ is not str:
        return None
    path = value.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # absolute-form request target: keep only the path
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    if not path:
        return "/"
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS + 1:
        segments = [*segments[: MAX_SEGMENTS + 1], "..."]
    return "/".join(_segment(s) for s in segments)


def _lower(value: Any) -> str | None:
    text = label_text(value)
    return None if text is None else text.lower()


def _upper(value: Any) -> str | None:
    text = label_text(value)
    return None if text is None else text.upper()


#: Name in a rules file -> function from raw value to label text (None: missing, use the default).
NORMALIZERS: dict[str, Callable[[Any], str | None]] = {
    "status_code": status_code,
    "status_class": status_class,
    "http_method": http_method,
    "route": route_template,
    "lower": _lower,
    "upper": _upper,
}
