"""The settings loader gives, seed for seed, the outcome the pydantic-based loader gave.

Random configurations (environment, env file, flags, `<VAR>_FILE` secrets; wrong types, out-of-range
numbers, bad JSON sections, unknown names, empty strings, missing secret files) through `load_settings`
and `typo_warnings`; ground truth: the pydantic loader's outcomes in a golden file (see
tests/settings_differential.py for how they were made and when to regenerate them): accepted or
rejected, the effective configuration, and every error line, word for word.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.settings_differential import GOLDEN, SEEDS, case, help_text, outcome

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

_golden = json.loads(GOLDEN.read_text())

# The one deliberate difference: a value of none of a union's types (a WebSocket target's `send` or
# `expect`) was one line per member, named by pydantic's internal type names
# (`...[0].send.dict[str,any]: Input should be a valid dictionary`); it is one line now, saying what
# the value may be.
_MEMBER = re.compile(r"^(invalid setting \S+?\.(send|expect))\.(str|dict\[str,any\]|list\[any\]): .*$")
_KINDS = {"str": "a string", "dict[str,any]": "a JSON object", "list[any]": "a JSON list"}


# The second: a variable below another one's value (`COLLECTOR_LOGS__PATHS` and
# `COLLECTOR_LOGS__PATHS__X` at once) was a TypeError traceback when the value came first and silently
# ignored when it came last; it is refused now, in either order, before anything is validated.
def _below_a_value(seed: int) -> list[str]:
    c = case(seed)
    names = {k.upper() for k in [*c["env"], *(c["env_file"] or {})] if k.upper().startswith("COLLECTOR_")}
    return [
        f"invalid setting {deep}: unknown setting ({short} is a value, not a section)"
        for deep in sorted(names)
        for short in sorted(names)
        if short.count("__") >= 1 and deep.startswith(short + "__")
    ]


def _as_now(lines: list[str]) -> list[str]:
    """The golden error lines with pydantic's per-member union lines merged into our one line."""
    out: list[str] = []
    members: list[str] = []
    for i, line in enumerate(lines):
        m = _MEMBER.match(line)
        if m:
            members.append(_KINDS[m.group(3)])
            nxt = _MEMBER.match(lines[i + 1]) if i + 1 < len(lines) else None
            if nxt is None or nxt.group(1) != m.group(1):
                out.append(f"{m.group(1)}: Input should be {', '.join(members[:-1])} or {members[-1]}")
                members = []
        else:
            out.append(line)
    return out


def test_the_golden_file_covers_accepted_and_rejected_configurations() -> None:
    outcomes = _golden["outcomes"]
    assert set(outcomes) == {str(s) for s in SEEDS}
    accepted = sum("ok" in v for v in outcomes.values())
    assert len(SEEDS) // 5 < accepted < len(SEEDS) * 3 // 4
    assert sum(bool(v.get("warnings")) for v in outcomes.values()) > 5  # typo warnings too
    assert sum(_as_now(v["error"]) != v["error"] for v in outcomes.values() if "error" in v) < 10
    assert sum(bool(_below_a_value(int(s))) for s in outcomes) < 5


def test_help_text_is_the_same() -> None:
    assert help_text() == _golden["help"]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_configurations_load_as_the_pydantic_loader_loaded_them(seed: int) -> None:
    expected = _golden["outcomes"][str(seed)]
    if "error" in expected:
        expected = {"error": _as_now(expected["error"])}
    if _below_a_value(seed):
        expected = {"error": _below_a_value(seed)}
    assert outcome(seed) == expected
