"""The chaos campaign's bounded mode: every scenario once against the real collector, nothing lost or doubled.

The long mode is `python -m bench.chaos --cycles 200` (see bench/chaos.py). Set COLLECTOR_CHAOS_SEED to
replay another seed; a failing cycle prints its scenario, configuration and seed.
"""

from __future__ import annotations

import os
import shutil

import pytest

from bench import chaos

pytestmark = pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate (apt)")

#: Scenarios whose vanished lines are the collector's to notice (a file deleted while it was down).
DELETIONS_WHILE_DOWN = {"delete_recreate", "inode_reuse"}


@pytest.mark.timeout(900)
def test_every_chaos_scenario_counts_each_line_on_disk_exactly_once() -> None:
    seed = int(os.environ.get("COLLECTOR_CHAOS_SEED", "7"))
    out: list[str] = []
    results = []
    for k, name in enumerate(sorted(chaos.SCENARIOS)):
        # Both configurations, alternating by scenario and seed: the live file only, and app.log*.
        config = ("live", "glob")[(k + seed) % 2]
        res = chaos.Cycle(name, config, seed * 1000 + k).run()
        results.append(res)
        out.append(f"{config} {name}: {res}")
    print("\n".join(out))
    print(chaos.table(results))
    broken = [r for r in results if not r.ok]
    assert broken == [], "\n".join(f"{r.config} {r.scenario} seed={r.seed}: {r}" for r in broken)
    for r in results:
        assert r.expected > 0 and r.counted >= r.expected, r
        if r.scenario in DELETIONS_WHILE_DOWN and r.gone_uncounted:
            assert r.loss_events > 0, f"{r.scenario}: lines lost with the file but no loss counted: {r}"
