"""Idle series expiry (`expire_after`) against an independent model, over seeded random campaigns.

`RuleSet.expire` skips its sweep until a series can be due (so an idle collector reads none of its
series); whatever it skips, which series exist at each scrape, and their counts, must be exactly
what a sweep of every series at every tick gives. The model is that plain sweep over a dict.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from collector.exposition import render
from collector.metrics import MetricState
from collector.rules import RuleSet
from tests.helpers import parse

pytestmark = pytest.mark.quick  # no servers, processes or sleeps: the clock is injected

LIMITS = {"fast_total": 5.0, "slow_total": 30.0, "kept_total": None}  # metric -> expire_after
IDS = [f"s{i}" for i in range(25)]


def _rules() -> list[dict[str, Any]]:
    rules = []
    for metric, limit in LIMITS.items():
        rule: dict[str, Any] = {
            "metric": metric,
            "type": "counter",
            "help": "h",
            "match": {"message": metric},
            "labels": {"id": {"from": "id"}},
        }
        if limit is not None:
            rule["expire_after"] = limit
        rules.append(rule)
    return rules


def _served(metrics: MetricState) -> dict[str, dict[str, float]]:
    samples = parse(render(metrics.families.values()))
    return {m: {s.labels["id"]: s.value for s in samples.get(m, [])} for m in LIMITS}


@pytest.mark.parametrize("seed", range(12))
def test_series_exist_exactly_as_a_sweep_of_every_series_at_every_tick_says(
    tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps({"rules": _rules()}))
    now = [1_000.0]
    metrics = MetricState()
    rs = RuleSet(metrics, logging.getLogger("test.expiry"), rules_path=path, clock=lambda: now[0])
    model: dict[str, dict[str, list[float]]] = {m: {} for m in LIMITS}  # metric -> id -> [count, last]
    for _step in range(400):
        r = rnd.random()
        if r < 0.35:  # a batch of lines at this instant
            batch = []
            for _ in range(rnd.randint(1, 6)):
                metric, sid = rnd.choice(list(LIMITS)), rnd.choice(IDS)
                batch.append(json.dumps({"message": metric, "id": sid}).encode())
                row = model[metric].setdefault(sid, [0.0, now[0]])
                row[0] += 1
                row[1] = now[0]
            rs.consume(batch)
        elif r < 0.85:  # the housekeeping tick; the model sweeps every series
            dropped = rs.expire()
            expected = 0
            for metric, limit in LIMITS.items():
                if limit is None:
                    continue
                for sid in [s for s, (_n, last) in model[metric].items() if now[0] - last > limit]:
                    del model[metric][sid]
                    expected += 1
            assert dropped == expected
        else:  # quiet for a while: idle stretches longer than either expire_after
            now[0] += rnd.choice([0.5, 4.0, 5.0, 12.0, 31.0, 90.0])
        now[0] += rnd.choice([0.0, 0.25, 1.0, 1.0, 2.0])
        if rnd.random() < 0.02:
            now[0] -= rnd.choice([1.0, 10.0])  # the wall clock stepped back (NTP)
        assert _served(metrics) == {m: {s: n for s, (n, _last) in rows.items()} for m, rows in model.items()}


def test_a_restored_series_starts_its_clock_at_the_first_tick_after_the_restore(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps({"rules": _rules()}))
    now = [1_000.0]
    metrics = MetricState()
    rs = RuleSet(metrics, logging.getLogger("test.expiry"), rules_path=path, clock=lambda: now[0])
    rs.consume([b'{"message": "fast_total", "id": "a"}'])
    assert rs.expire() == 0  # a sweep: nothing is due before 1005
    fam = metrics.families["fast_total"]
    fam.series[("b",)] = 7.0  # what the logs checkpoint restore loads (no stamp)
    rs.restore_state(rs.checkpoint_state())
    now[0] = 1_003.0
    assert rs.expire() == 0  # the restore swept at once: b's clock starts at 1003
    now[0] = 1_005.5
    assert rs.expire() == 1  # a expired
    now[0] = 1_008.5
    assert rs.expire() == 1  # b, 5.5 s after its clock started
    assert _served(metrics)["fast_total"] == {}
