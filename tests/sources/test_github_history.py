"""The DORA history's transitions, pure: changes in, history out, then figures from `dora.analyze_repo`."""

from __future__ import annotations

import random
import sqlite3
from itertools import permutations
from pathlib import Path

import pytest
from aiohttp import web

from collector import dora
from collector.app import RUNTIME, build_app
from collector.dora import Deployment, Incident, Push
from collector.sources.github import DeploymentsSource, GitHubSource, store_sql
from collector.sources.github.engine import DoraEngine
from collector.sources.github.history import Change, History, histogram_cells
from tests.helpers import make_settings

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

R = "acme/shop"


def dep(key: str, state: str, at: float, sha: str = "abc") -> Deployment:
    return Deployment(key, sha, 100.0, state, at)


def test_statuses_of_one_deployment_fold_in_any_order_and_the_earliest_terminal_wins() -> None:
    statuses = [dep("d1", "in_progress", 110), dep("d1", "success", 120), dep("d1", "failure", 130)]
    results = set()
    for order in permutations(statuses):
        h = History()
        for d in order:  # one change per status, committed in turn
            change = Change(deployments=[(R, "production", d, "api")])
            h.commit(h.merge(change), change)
        results.add(h.deployments_of(R)["d1"][1])
    assert results == {dep("d1", "success", 120)}


def test_several_statuses_within_one_change_fold_into_each_other() -> None:
    h = History()
    change = Change(
        deployments=[
            (R, "production", dep("d1", "pending", 110), "api"),
            (R, "staging", dep("d1", "success", 120), "api"),
        ]
    )
    merged = h.merge(change)
    assert [m[1:3] for m in merged] == [
        ("production", dep("d1", "pending", 110)),
        ("production", dep("d1", "success", 120)),
    ]
    assert h.deployments_of(R) == {}  # merge modifies nothing
    assert h.commit(merged, change) == {R}
    assert h.deployments_of(R)["d1"] == ("production", dep("d1", "success", 120), "api")


def test_incidents_open_close_and_removal_and_the_previous_success() -> None:
    h = History()
    c1 = Change(
        deployments=[
            (R, "production", dep("a", "success", 50, "sha_a"), "ci"),
            (R, "production", dep("b", "success", 90, "sha_b"), "ci"),
        ],
        incidents=[(R, Incident(7, 60.0))],
        pushes=[("other/repo", Push("s2", "s1", (("s2", 10.0),)))],
    )
    assert h.commit(h.merge(c1), c1) == {R, "other/repo"}
    assert h.previous_success_sha(R, "production", 90) == "sha_a"
    assert h.previous_success_sha(R, "staging", 1e9) is None
    c2 = Change(incidents=[(R, Incident(7, 60.0, 80.0))])
    h.commit(h.merge(c2), c2)
    assert h.repos[R].incidents[7].closed_at == 80.0
    c3 = Change(incidents_removed=[(R, 7)])
    h.commit(h.merge(c3), c3)
    assert h.repos[R].incidents == {}
    inputs = h.inputs(R)
    assert inputs is not None and sorted(d.key for d in inputs[0]["production"]) == ["a", "b"]
    assert h.inputs("nobody/none") is None


def test_history_in_figures_out() -> None:
    h = History()
    day = dora.DAY
    now = 10 * day
    c = Change(
        deployments=[
            (
                R,
                "production",
                Deployment(f"d{i}", f"s{i}", now - i * day, "success", now - i * day + 60),
                "ci",
            )
            for i in range(1, 8)
        ],
    )
    h.commit(h.merge(c), c)
    inputs = h.inputs(R)
    assert inputs is not None
    reports = dora.analyze_repo(*inputs, now, dora.WINDOWS, "incidents", False)
    assert reports["production"].counts == {"success": 7}
    assert reports["production"].windows["7d"].frequency_per_day == 1.0
    doc = dora.document({R: reports}, now)
    assert doc["generated_at"] == now and doc["windows"] == list(dora.WINDOWS)
    assert [(e["repository"], e["environment"]) for e in doc["environments"]] == [(R, "production")]


def test_histogram_cells_count_each_value_in_its_bucket_and_sum_them() -> None:
    assert histogram_cells((1.0, 5.0), [0.5, 1.0, 3.0, 9.0]) == [2, 1, 1, 13.5]
    assert histogram_cells((1.0,), []) == [0, 0, 0.0]


def test_the_stored_history_restores_to_the_same_history_over_a_random_campaign() -> None:
    """Changes committed in memory and written with store_sql come back equal after a restart."""
    for seed in range(10):
        rng = random.Random(seed)
        conn = sqlite3.connect(":memory:")
        store_sql.create_tables(conn)
        live = History()
        for i in range(40):
            repo = rng.choice(["a/x", "b/y"])
            state = rng.choice(["pending", "in_progress", "success", "failure", "error"])
            commits = rng.choice([None, (("c1", 1.0), ("c2", 2.0))])
            d = Deployment(f"k{rng.randrange(6)}", "s", float(rng.randrange(100)), state, float(i), commits)
            inc = Incident(
                rng.randrange(3),
                float(i),
                rng.choice([None, float(i + 1)]),
                rng.choice(["production", "staging"]),
            )
            change = Change(
                deployments=[(repo, rng.choice(["production", "staging"]), d, "api")],
                pushes=[(repo, Push(f"p{i}", f"p{i - 1}", (("c", float(i)),)))],
                incidents=[(repo, inc)] if rng.random() < 0.5 else [],
                incidents_removed=[(repo, rng.randrange(3))] if rng.random() < 0.2 else [],
            )
            merged = live.merge(change)
            assert store_sql.write(conn, f"delivery-{i}", float(i), merged, change)
            live.commit(merged, change)
        assert not store_sql.write(conn, "delivery-0", 99.0, [], Change())  # a redelivery is recognised
        rows = store_sql.load(conn)
        restored = History()
        restored.restore(rows.deployments, rows.pushes, rows.incidents)
        assert restored.repos == live.repos, seed


def test_the_app_builds_one_engine_and_passes_it_to_both_sources_no_module_registry(tmp_path: Path) -> None:
    def engines(app: web.Application) -> list[DoraEngine]:
        return [
            s.engine for s, _ctx in app[RUNTIME].sources if isinstance(s, GitHubSource | DeploymentsSource)
        ]

    cfg = make_settings(
        tmp_path, github={"webhook_secret": "s", "change_failure": "both"}, deployments={"token": "ci-token"}
    )
    first, second = engines(build_app(cfg)), engines(build_app(cfg))
    assert len(first) == 2 and first[0] is first[1]  # shared within one app
    assert first[0] is not second[0]  # and only there, even with the same settings and state path
    assert first[0].change_failure == "both"  # the github source's definitions
