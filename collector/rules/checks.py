"""What `rules.schema` and `rules.stages` share to validate rules data: the error type, the collector of
every problem in a document, and the field-path and number checks.

Kept apart from `schema` (which reads the OpenAPI documents a label names) so the stages' validation
stays pure: data in, specs or errors out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from typing import Any, TypeGuard

__all__ = ["STAGE_KEYS", "RulesError"]

#: Top-level keys of a rules document besides `rules` (parsed by collector.rules.stages).
STAGE_KEYS = ("extract", "join")


class RulesError(ValueError):
    """A rules file or preset that cannot be used; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class _Ctx:
    """Collects every problem of one rule or stage, each prefixed with where it is."""

    where: str
    errors: list[str] = field(default_factory=list)

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
