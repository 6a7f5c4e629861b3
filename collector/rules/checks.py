"""What `rules.schema` and `rules.stages` share to validate rules data: the error type, the collector of
every problem in a document, and the field-path and number checks.

Kept apart from `schema` (which reads the OpenAPI documents a label names) so the stages' validation
stays pure: data in, specs or errors out.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from typing import Any, TypeGuard

__all__ = ["STAGE_KEYS", "RulesError", "Spec"]

#: Top-level keys of a rules document besides `rules` (parsed by collector.rules.stages).
STAGE_KEYS = ("extract", "join")


class RulesError(ValueError):
    """A rules file or preset that cannot be used; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class Spec:
    """Base of the immutable specs (rules, labels, matches, stages): equality, hash and repr by the
    fields named in `_compare`, as `@dataclass(frozen=True)` gave them. Not dataclasses: importing
    `dataclasses` (and `inspect`) and exec()ing each class's methods cost `collector replay` ~10 ms of
    a ~40 ms start. A subclass lists its fields in `__slots__`, sets them in `__init__` with `_init`.
    """

    __slots__ = ("_hash",)
    _compare: tuple[str, ...] = ()
    _hash: int

    def _init(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _key(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._compare])

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Spec)
        return self._key() == other._key()

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:  # computed once: the fields never change (label specs key the caches)
            h = hash(self._key())
            object.__setattr__(self, "_hash", h)
            return h

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._compare)})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name}")


class _Ctx:
    """Collects every problem of one rule or stage, each prefixed with where it is."""

    __slots__ = ("errors", "where")

    def __init__(self, where: str) -> None:
        self.where = where
        self.errors: list[str] = []

    def err(self, key: str, msg: str) -> None:
        self.errors.append(f"{self.where}: {key}: {msg}")


def _is_number(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _paths(raw: Any, ctx: _Ctx, key: str) -> tuple[str, ...]:
    """A dotted field path or a list of them, each checked (no empty parts)."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(p, str) and p for p in items):
        ctx.err(key, f"expected a dotted field path or a list of them, not {raw!r}")
        return ()
    for p in items:
        if any(not part for part in p.split(".")):
            ctx.err(key, f"{p!r} is not a valid dotted path")
    return tuple(items)
