"""Pure label normalisers: status code, status class, HTTP method, route templating, log level, numbers.

Each turns a raw decoded JSON value (str, int, float, bool or None) into a bounded label string, so
ids, uuids, hashes and query strings never become label values.
"""

from __future__ import annotations

import functools
import math
import re

__all__ = [
    "LEVELS",
    "NORMALIZERS",
    "OTHER",
    "UNMATCHED",
    "Budget",
    "TemplateMatcher",
    "http_method",
    "label_text",
    "normalise_level",
    "route_template",
    "status_class",
    "status_code",
    "to_number",
]

#: Methods kept as they are; anything else becomes OTHER (a scanner sending `FOO /` makes no series).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class _Segments:
    """The patterns `_segment` tells ids from words with. Compiled at its first call (`_segments`): at
    import they cost `collector replay` ~1.5 ms of every start, also the starts that normalise nothing."""

    def __init__(self) -> None:
        self.uuid = re.compile(
            r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
        )
        self.number = re.compile(r"^[0-9][0-9,._-]*$")
        # a hex run with a digit: ids, hashes, ObjectIds
        self.hex = re.compile(r"^(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{8,}$")
        self.hex_in = re.compile(r"(?<![0-9a-zA-Z])[0-9a-fA-F]{16,}(?![0-9a-zA-Z])")  # app.<hash>.js
        self.token = re.compile(r"^(?=.*[0-9])(?=.*[a-zA-Z])[A-Za-z0-9_=+-]{20,}$")  # base64url ids, tokens
        self.email = re.compile(r"^[^@/]+@[^@/]+$")
        self.date = re.compile(r"^[0-9]{4}-[0-9]{2}(-[0-9]{2})?([T ][0-9:.]+Z?)?$")
        # A slug: three or more words joined by - or _ (`why-we-moved-to-rust`), or two or more with a
        # digit in one of them (`release-2024`). Two plain words (`old-page`) look like a static route.
        self.slug = re.compile(
            r"^(?:[a-z0-9]+(?:[-_][a-z0-9]+){2,}|(?=[a-z0-9_-]*[0-9])[a-z0-9]+(?:[-_][a-z0-9]+)+)$", re.I
        )


@functools.cache
def _segments() -> _Segments:
    return _Segments()


TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any
#: Segments longer than this are ids or tokens whatever their shape (no route names its parts so).
LONG_SEGMENT = 40
#: The route of requests no route matched (404/405 without a logged template): one series, not one per URL.
UNMATCHED = "unmatched"
#: What a label value past its value budget becomes (see `Budget`).
OTHER = "other"
#: Keep at most this many path segments; deeper paths end in `/...` (crawlers invent deep paths).
MAX_SEGMENTS = 8


def label_text(value: Any) -> str | None:
    """A decoded JSON scalar as label text (None for missing, objects and arrays)."""
    if value is None:
        return None
    cls = value.__class__
    if cls is str:  # `cls is` rather than isinstance: the faster test on this per-line path
        text: str = value  # the class test is what narrows `value`; mypy does not read it
        return text
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
    if number != number or number in (math.inf, -math.inf):
        return "other"  # "inf" from a hostile line: int() would raise OverflowError out of the hot path
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
    rx = _segments()
    if rx.date.match(seg):
        return ":date"
    if rx.number.match(seg) or rx.uuid.match(seg) or rx.hex.match(seg):
        return ":id"
    if rx.slug.match(seg):  # before tokens: a long slug with a digit is still a slug
        return ":slug"
    if rx.token.match(seg) or rx.email.match(seg):
        return ":id"
    if len(seg) > LONG_SEGMENT:
        return ":id"
    return rx.hex_in.sub(":hash", seg) if len(seg) >= 16 else seg


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


class Budget:
    """The distinct values one label may take; past `limit`, new values become `other`.

    Shared by every rule that computes the same label, so `route` means the same in every family. The
    values admitted stay admitted (a value seen before never flips to `other`).
    """

    __slots__ = ("limit", "other", "refused", "values")

    def __init__(self, limit: int, other: str = OTHER) -> None:
        self.limit = limit
        self.other = other
        self.values: set[str] = set()
        self.refused = 0  # new values replaced by `other` (each distinct raw value once per cache life)

    def admit(self, text: str) -> str:
        values = self.values
        if text in values:
            return text
        if len(values) < self.limit:
            values.add(text)
            return text
        self.refused += 1
        return self.other


_PARAM = re.compile(r"^(?::\w+|\{[^/}]+\}|<[^/>]+>|\*)$")  # :id, {id}, <int:id>, *


class TemplateMatcher:
    """Match a URL path against route templates (`/users/:id`, `/users/{id}`, `/users/<id>`).

    Templates with more literal segments win (`/users/me` before `/users/:id`). Used for loggers that
    only log the URL: the app's templates list or OpenAPI `paths` name the routes.
    """

    def __init__(self, templates: tuple[str, ...]) -> None:
        compiled = []
        for t in templates:
            parts = t.split("?", 1)[0].rstrip("/").split("/") or [""]
            literal = sum(1 for p in parts if not _PARAM.match(p))
            rx = "/".join("[^/]+" if _PARAM.match(p) else re.escape(p) for p in parts)
            compiled.append((-literal, t, re.compile(f"^{rx}/?$")))
        compiled.sort(key=lambda c: c[0])
        self.templates = [(t, rx.match) for _n, t, rx in compiled]

    def match(self, path: str) -> str | None:
        path = path.split("?", 1)[0].split("#", 1)[0]
        for template, m in self.templates:
            if m(path):
                return template
        return None


#: The bounded set of `level` label values.
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "other")

_LEVEL_NAMES = {
    "trace": "trace",
    "silly": "trace",
    "debug": "debug",
    "verbose": "debug",
    "info": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "http": "info",
    "log": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "fatal": "fatal",
    "critical": "fatal",
    "crit": "fatal",
    "alert": "fatal",
    "emerg": "fatal",
    "emergency": "fatal",
    "panic": "fatal",
}


def normalise_level(value: Any) -> str | None:
    """Map a level field to one of `LEVELS`; None when the line has no level.

    pino/bunyan numeric levels (10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal) map by
    range, so custom levels in between land on the nearest standard level below.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _LEVEL_NAMES.get(value.strip().lower(), "other")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "other"
    if value < 20:
        return "trace"
    if value < 30:
        return "debug"
    if value < 40:
        return "info"
    if value < 50:
        return "warn"
    if value < 60:
        return "error"
    return "fatal"


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
    "level": normalise_level,
    "lower": _lower,
    "upper": _upper,
}
