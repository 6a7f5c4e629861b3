"""The settings models' machinery: typed fields with defaults, constraints and descriptions, validated
and coerced when a model is built, every problem reported at once with its path.

What pydantic did for the settings, in the ~300 lines we use of it: importing pydantic and building our
models cost the idle daemon ~12 MB of resident memory (issue 22). The coercions and messages are
pydantic's lax mode's (`"5"` is an int, `"yes"` a bool, `"Input should be greater than 0"`), so the
`ConfigError` lines operators see did not change (tests/settings_differential.py holds the old
loader's outcomes as ground truth).

A model declares fields as annotated class attributes, with `setting(...)` for a default factory,
bounds, a description or a field's validators; `@model_check` methods check the whole model. `Model(**data)` validates
(so settings built in code are checked and coerced too) and raises `ValidationError`.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal, TypeVar

__all__ = [
    "Before",
    "FieldInfo",
    "Model",
    "NoDecode",
    "Secret",
    "ValidationError",
    "dump",
    "model_check",
    "setting",
]

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<required>"})()
_FAIL: Any = object()  # a value failed validation (its error is recorded)
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="Model")


class Secret:
    """A secret string: `repr` and `str` never show it (logs, tracebacks, dumps); `get_secret_value()` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{self}')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


class NoDecode:
    """Marks a list field whose variable is not JSON-decoded by the loader (its `Before` reads it)."""


class Before:
    """`Annotated[..., Before(fn)]`: `fn(value)` runs before the type's validation (may raise ValueError)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn


class ValidationError(ValueError):
    """Every problem of one validation; `errors()` gives {loc, msg, type, input} per problem."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in errors))
        self._errors = errors

    def errors(self) -> list[dict[str, Any]]:
        return list(self._errors)


class _Spec:
    """What `setting()` returns in a class body; replaced by a `FieldInfo` when the model is resolved."""

    __slots__ = ("before", "check", "default", "default_factory", "description", "limits", "min_length")

    def __init__(
        self,
        default: Any,
        default_factory: Callable[[], Any] | None = None,
        description: str = "",
        limits: tuple[tuple[str, float], ...] = (),
        min_length: int | None = None,
        before: Callable[[Any], Any] | None = None,
        check: Callable[[Any], Any] | None = None,
    ) -> None:
        self.default, self.default_factory, self.description = default, default_factory, description
        self.limits, self.min_length, self.before, self.check = limits, min_length, before, check


def setting(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | None = None,
    description: str = "",
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    before: Callable[[Any], Any] | None = None,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A field's default (or `default_factory`), bounds, description (`--help`, README) and validators:
    `before(raw)` runs on the input, `check(value)` on the validated value; both return the value to
    keep and raise ValueError with a message for the operator.

    Typed `Any` so that `x: int = setting(default=5, ge=1)` type-checks as an int attribute.
    """
    # checked in pydantic's order, so the first message of an out-of-range NaN is the same
    limits = tuple((op, v) for op, v in (("le", le), ("lt", lt), ("ge", ge), ("gt", gt)) if v is not None)
    return _Spec(default, default_factory, description, limits, min_length, before, check)


class FieldInfo:
    """One resolved field: its type (Annotated stripped), metadata, default, bounds and description."""

    __slots__ = (
        "after",
        "annotation",
        "before",
        "default",
        "default_factory",
        "description",
        "limits",
        "metadata",
        "min_length",
        "name",
    )

    def __init__(self, name: str, hint: Any, spec: Any) -> None:
        self.name = name
        self.metadata: tuple[Any, ...] = ()
        if typing.get_origin(hint) is typing.Annotated:
            self.metadata = hint.__metadata__
            hint = hint.__origin__
        self.annotation = hint
        if not isinstance(spec, _Spec):
            spec = _Spec(spec)
        self.default, self.default_factory, self.description = (
            spec.default,
            spec.default_factory,
            spec.description,
        )
        self.limits, self.min_length = spec.limits, spec.min_length
        # a field's own `before` runs first, then its type's (`CommaList`'s split), as pydantic did
        self.before = [f for f in (spec.before, *(m.fn for m in self.metadata if isinstance(m, Before))) if f]
        self.after = [spec.check] if spec.check is not None else []

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def get_default(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default


def model_check(fn: F) -> F:
    """Decorate a method `check(self) -> None` run once every field is valid (raise ValueError)."""
    fn.__model_check__ = True  # type: ignore[attr-defined]
    return fn


@typing.dataclass_transform(kw_only_default=True, field_specifiers=(setting,))
class _ModelMeta(type):
    @property
    def model_fields(cls) -> dict[str, FieldInfo]:
        """name -> field, in declaration order (bases' fields first), resolved at first use."""
        found: dict[str, FieldInfo] | None = cls.__dict__.get("_resolved")
        if found is None:
            found = _resolve(cls)
            type.__setattr__(cls, "_resolved", found)
        return found


def _resolve(cls: type) -> dict[str, FieldInfo]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, FieldInfo] = {}
    for name, hint in hints.items():
        if name.startswith("_") or typing.get_origin(hint) is ClassVar:
            continue
        spec = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), _MISSING)
        fields[name] = FieldInfo(name, hint, spec)
    return fields


class Model(metaclass=_ModelMeta):
    """Base of every settings model; `Model(**data)` validates and coerces `data`.

    Raises:
        ValidationError: every invalid, missing or (with `extra = "forbid"`) unknown field at once.
    """

    #: Unknown names: an error ("forbid") or dropped ("ignore").
    extra: ClassVar[Literal["forbid", "ignore"]] = "forbid"

    def __init__(self, **data: Any) -> None:
        cls = type(self)
        data = cls._prepare(data)
        fields = cls.model_fields
        errors: list[dict[str, Any]] = []
        values: dict[str, Any] = {}
        for name, info in fields.items():
            if name in data:
                values[name] = _field(info, data[name], (name,), errors)
            elif info.required:
                errors.append(_error((name,), "missing", "Field required", data))
            else:
                values[name] = info.get_default()
        if cls.extra == "forbid":
            errors += [_error((k,), "extra_forbidden", "Extra inputs are not permitted", v)
                       for k, v in data.items() if k not in fields]  # fmt: skip
        if errors:
            raise ValidationError(errors)
        self.__dict__.update(values)
        self.model_fields_set: frozenset[str] = frozenset(k for k in data if k in fields)
        for check in _model_checks(cls):
            try:
                check(self)
            except ValueError as exc:
                raise ValidationError([_error((), "value_error", str(exc), data)]) from None

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The input as the fields read it (a hook for subclasses)."""
        return data

    @classmethod
    def model_validate(cls: type[M], data: Any) -> M:
        """A model from a mapping (or the instance itself)."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ValidationError([_error((), "model_type", _model_type_msg(cls), data)])
        return cls(**data)

    def model_copy(self: M, update: Mapping[str, Any] | None = None) -> M:
        """A validated copy with `update`'s fields replaced."""
        data = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**data, **(update or {})})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in type(self).model_fields)
        return f"{type(self).__name__}({fields})"


def _model_checks(cls: type) -> Iterator[Callable[[Any], None]]:
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        for name, fn in klass.__dict__.items():
            if getattr(fn, "__model_check__", False) and name not in seen:
                seen.add(name)
                yield getattr(cls, name)  # the most derived override


def _error(loc: tuple[str | int, ...], kind: str, msg: str, value: Any) -> dict[str, Any]:
    return {"loc": loc, "type": kind, "msg": msg, "input": value}


def _model_type_msg(cls: type) -> str:
    return f"Input should be a valid dictionary or instance of {cls.__name__}"


def _field(info: FieldInfo, value: Any, loc: tuple[str | int, ...], errors: list[dict[str, Any]]) -> Any:
    raw = value
    value = _validated(info.before, value, raw, loc, errors)
    if value is _FAIL:
        return _FAIL
    before = len(errors)
    value = _convert(info.annotation, value, loc, errors)
    if len(errors) > before:
        return _FAIL
    if value is not None:
        problem = _bounds(info, value)
        if problem is not None:
            errors.append(_error(loc, problem[0], problem[1], raw))
            return _FAIL
    return _validated(info.after, value, raw, loc, errors)


def _validated(
    fns: Sequence[Callable[[Any], Any]], value: Any, raw: Any, loc: tuple[str | int, ...], errors: list[dict[str, Any]]
) -> Any:
    """`value` through a field's validators in order; `_FAIL` (the error recorded against `raw`) if one refuses."""
    try:
        for fn in fns:
            value = fn(value)
    except ValueError as exc:
        errors.append(_error(loc, "value_error", str(exc), raw))
        return _FAIL
    return value


_BOUND_TEXT = {
    "gt": "greater than",
    "ge": "greater than or equal to",
    "lt": "less than",
    "le": "less than or equal to",
}
_BOUND_OK: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda v, b: v > b, "ge": lambda v, b: v >= b, "lt": lambda v, b: v < b, "le": lambda v, b: v <= b,
}  # fmt: skip
_BOUND_KIND = {"gt": "greater_than", "ge": "greater_than_equal", "lt": "less_than", "le": "less_than_equal"}


def _bounds(info: FieldInfo, value: Any) -> tuple[str, str] | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for op, bound in info.limits:
            if not _BOUND_OK[op](value, bound):
                return _BOUND_KIND[op], f"Input should be {_BOUND_TEXT[op]} {bound}"
    if info.min_length is not None and isinstance(value, str) and len(value) < info.min_length:
        s = "" if info.min_length == 1 else "s"
        return "string_too_short", f"String should have at least {info.min_length} character{s}"
    return None


_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}
_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0*)?")
_MEMBER_TEXT = {str: "a string", dict: "a JSON object", list: "a JSON list"}


def _convert(tp: Any, value: Any, loc: tuple[str | int, ...], errors: list[dict[str, Any]]) -> Any:
    """`value` as type `tp` (pydantic's lax mode), or `_FAIL` with its error appended to `errors`."""

    def fail(kind: str, msg: str) -> Any:
        errors.append(_error(loc, kind, msg, value))
        return _FAIL

    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(members) < len(typing.get_args(tp)):
            return None
        if len(members) == 1:
            return _convert(members[0], value, loc, errors)
        for member in members:  # the member of the value's own type (JSON data: str, dict or list)
            if isinstance(value, typing.get_origin(member) or member):
                return _convert(member, value, loc, errors)
        kinds = [_MEMBER_TEXT.get(typing.get_origin(m) or m, str(m)) for m in members]
        return fail("union_type", "Input should be " + ", ".join(kinds[:-1]) + " or " + kinds[-1])
    if origin is Literal:
        allowed = typing.get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        texts = [repr(a) for a in allowed]
        either = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]
        return fail("literal_error", f"Input should be {either}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            text = value.lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            return fail("bool_parsing", "Input should be a valid boolean, unable to interpret input")
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, int):
            return fail("bool_parsing", "Input should be a valid boolean, unable to interpret input")
        return fail("bool_type", "Input should be a valid boolean")
    if tp is int:
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                return fail("finite_number", "Input should be a finite number")
            if value != int(value):
                return fail(
                    "int_from_float", "Input should be a valid integer, got a number with a fractional part"
                )
            if abs(value) >= 2**63:
                return fail(
                    "int_parsing_size", "Unable to parse input string as an integer, exceeded maximum size"
                )
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if _INT_TEXT.fullmatch(text):
                return int(text.partition(".")[0])
            return fail(
                "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
            )
        return fail("int_type", "Input should be a valid integer")
    if tp is float:
        if isinstance(value, (int, float)):
            try:
                return float(value)
            except OverflowError:
                return fail("float_type", "Input should be a valid number")
        if isinstance(value, str):
            text = value.strip()
            if text.isascii():  # float() reads other scripts' digits too
                try:
                    return float(text)
                except ValueError:
                    pass
            return fail("float_parsing", "Input should be a valid number, unable to parse string as a number")
        return fail("float_type", "Input should be a valid number")
    if tp is str:
        if isinstance(value, str):
            return value
        return fail("string_type", "Input should be a valid string")
    if tp is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        return fail("string_type", "Input should be a valid string")
    if tp is Path:
        if isinstance(value, PurePath):
            return Path(value)
        if isinstance(value, str):
            return Path(value)
        return fail("path_type", "Input is not a valid path for <class 'pathlib.Path'>")
    if tp is re.Pattern or origin is re.Pattern:
        if isinstance(value, re.Pattern):
            return value
        if isinstance(value, str):
            try:
                return re.compile(value)
            except re.error:
                return fail("pattern_regex", "Input should be a valid regular expression")
        return fail("pattern_type", "Input should be a valid pattern")
    if origin is list:
        if not isinstance(value, (list, tuple, set, frozenset)):
            return fail("list_type", "Input should be a valid list")
        (item_tp,) = typing.get_args(tp) or (Any,)
        items = [_convert(item_tp, item, (*loc, i), errors) for i, item in enumerate(value)]
        return _FAIL if any(item is _FAIL for item in items) else items
    if origin is dict:
        if not isinstance(value, Mapping):
            return fail("dict_type", "Input should be a valid dictionary")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        out = {}
        for k, v in value.items():
            key = _convert(key_tp, k, (*loc, k, "[key]"), errors)
            out[key] = _convert(value_tp, v, (*loc, k), errors)
        return _FAIL if _FAIL in out.values() or _FAIL in out else out
    if isinstance(tp, type) and issubclass(tp, Model):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            return fail("model_type", _model_type_msg(tp))
        try:
            return tp(**value)
        except ValidationError as exc:
            errors += [{**e, "loc": (*loc, *e["loc"])} for e in exc.errors()]
            return _FAIL
    raise TypeError(f"settings field type {tp!r} is not supported")  # a programming error


def dump(value: Any) -> Any:
    """JSON-ready data of a model (secrets as `**********`, paths as text, patterns as their source)."""
    if isinstance(value, Model):
        return {name: dump(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Secret):
        return str(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    return value
