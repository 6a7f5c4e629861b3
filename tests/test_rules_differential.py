"""The rules engine gives, seed for seed, the metric output the previous (generated) engine gave.

Random rules (every operator, label option, action) over random lines (hostile values, bad lines),
through both entry points; ground truth: the previous engine's outputs in a golden file (see
tests/rules_differential.py for how they were made and when to regenerate them).
"""

from __future__ import annotations

import json

import pytest

from tests.rules_differential import GOLDEN, SEEDS, outcome

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

_golden = json.loads(GOLDEN.read_text())


def test_the_golden_file_covers_rejected_rules_and_every_seed() -> None:
    assert set(_golden) == {str(s) for s in SEEDS}
    assert sum("rejected" in v for v in _golden.values()) < len(SEEDS) // 4  # most rule sets load


@pytest.mark.parametrize("seed", SEEDS)
def test_random_rules_over_random_lines_give_the_previous_engines_metrics(seed: int) -> None:
    assert outcome(seed) == _golden[str(seed)]
