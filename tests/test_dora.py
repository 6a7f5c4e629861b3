"""DORA maths: pure functions over a deployment history with an explicit `now`."""

from __future__ import annotations

import pytest

from collector import dora
from collector.dora import (
    DAY,
    Deployment,
    Incident,
    Push,
    analyze_repo,
    band,
    brought_commits,
    merge_deployment,
)

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

H = 3600.0
NOW = 1_700_000_000.0


def dep(
    key: str, sha: str, state: str, at: float, commits: tuple[tuple[str, float], ...] | None = None
) -> Deployment:
    return Deployment(key, sha, at - 60, state, at, commits)


def test_parse_time_reads_github_iso_offsets_and_numbers() -> None:
    assert dora.parse_time("2019-05-15T15:20:53Z") == 1557933653.0
    assert dora.parse_time("2019-05-15T17:20:53+02:00") == 1557933653.0
    assert dora.parse_time(12.5) == 12.5
    assert dora.parse_time("yesterday") is None
    assert dora.parse_time(None) is None


def test_earliest_terminal_status_wins_whatever_the_order() -> None:
    created = Deployment("gh:1", "a", 100, "created", 100)
    success = Deployment("gh:1", "a", 100, "success", 200)
    inactive = Deployment("gh:1", "a", 100, "inactive", 900)
    late_failure = Deployment("gh:1", "a", 100, "failure", 500)
    for order in ([created, success, inactive, late_failure], [late_failure, inactive, success, created]):
        merged = None
        for d in order:
            merged = merge_deployment(merged, d)
        assert merged is not None
        assert (merged.state, merged.state_at) == ("success", 200)
    pending = merge_deployment(created, Deployment("gh:1", "", 0, "in_progress", 150))
    assert (pending.state, pending.sha, pending.created_at) == ("in_progress", "a", 100)


def test_brought_commits_walks_pushes_back_to_the_previous_deployment() -> None:
    p1 = Push("c2", "0" * 40, (("c1", 1.0), ("c2", 2.0)))
    p2 = Push("c4", "c2", (("c3", 3.0), ("c4", 4.0)))
    index = dora._commit_index([p1, p2])
    assert brought_commits("c4", "c2", index) == [("c4", 4.0), ("c3", 3.0)]
    # a previous deployment in the middle of a push: only the commits after it
    assert brought_commits("c4", "c1", index) == [("c4", 4.0), ("c3", 3.0), ("c2", 2.0)]
    # deploying a commit in the middle of a push brings only up to it
    assert brought_commits("c3", "c2", index) == [("c3", 3.0)]
    # no previous deployment: as far back as the pushes go
    assert [s for s, _ in brought_commits("c4", None, index)] == ["c4", "c3", "c2", "c1"]
    assert brought_commits("c4", "c4", index) == []
    assert brought_commits("unknown", None, index) == []


def test_four_keys_of_a_scripted_history() -> None:
    d = [
        dep("1", "a1", "success", NOW - 100 * H),
        dep("2", "a2", "failure", NOW - 80 * H),
        dep("3", "a3", "error", NOW - 79 * H),
        dep("4", "a4", "success", NOW - 76 * H),
        dep("5", "a5", "success", NOW - 10 * H),
        Deployment("6", "a6", NOW - H, "in_progress", NOW - H),
    ]
    pushes = [
        Push("a1", "0", (("a1", NOW - 101 * H),)),
        Push("a2", "a1", (("a2", NOW - 81 * H),)),
        Push("a3", "a2", (("a3", NOW - 79.5 * H),)),
        Push("a4", "a3", (("a4", NOW - 77 * H), ("x", NOW - 75 * H))),  # x: after the deploy time, dropped
    ]
    # a5's commits come from the API (compare): explicit, not from pushes
    d[4] = dep("5", "a5", "success", NOW - 10 * H, (("a5", NOW - 13 * H),))
    rep = analyze_repo({"production": d}, pushes, [], NOW, change_failure="deployments")["production"]
    assert rep.counts == {"success": 3, "failure": 1, "error": 1}
    # a1: 1h; a4 brought a4 (1h), a3 (3.5h), a2 (5h) since a1; a5: 3h
    assert sorted(rep.lead_times) == [H, H, 3 * H, 3.5 * H, 5 * H]
    # from the first failure of the streak (80h) to a4 (76h)
    assert rep.recovery_times == {"incident": [], "failed_deployment": [4 * H]}
    assert rep.last_success_at == NOW - 10 * H
    w1, w7 = rep.windows["1d"], rep.windows["7d"]
    assert (w1.deployments, w1.ended, w1.failed, w1.frequency_per_day) == (1, 1, 0, 1.0)
    assert w1.change_failure_ratio == 0.0
    assert w1.lead_time_median_seconds == 3 * H
    assert w1.recovery_time_median_seconds is None
    assert (w7.deployments, w7.ended, w7.failed) == (3, 5, 2)
    assert w7.frequency_per_day == 3 / 7
    assert w7.change_failure_ratio == 2 / 5
    assert w7.lead_time_median_seconds == 3 * H
    assert w7.recovery_time_median_seconds == 4 * H


def test_incident_blames_the_latest_success_and_counts_its_recovery() -> None:
    deps = {
        "production": [dep("1", "a", "success", NOW - 50 * H), dep("2", "b", "success", NOW - 20 * H)],
        "prod-eu": [dep("3", "c", "success", NOW - 30 * H)],
    }
    incidents = [
        Incident(7, NOW - 19 * H, NOW - 17 * H),
        Incident(8, NOW - 60 * H, None),
        Incident(9, NOW - 2 * H),
    ]
    reps = analyze_repo(deps, [], incidents, NOW)
    prod, eu = reps["production"], reps["prod-eu"]
    # incident 7 and 9 follow deployment 2 (the latest success before them); 8 precedes every deployment
    assert prod.windows["7d"].failed == 1
    assert prod.windows["7d"].change_failure_ratio == 0.5
    assert prod.recovery_times == {"incident": [2 * H], "failed_deployment": []}
    # incidents name no environment: production's; prod-eu has none
    assert eu.windows["7d"].change_failure_ratio == 0.0
    assert eu.recovery_times == {"incident": [], "failed_deployment": []}


def test_a_production_incident_during_a_staging_success_is_attributed_to_production() -> None:
    deps = {
        "production": [dep("p1", "a", "success", NOW - 30 * H)],
        "staging": [dep("s1", "b", "success", NOW - 3 * H)],  # the latest success of the repository
    }
    incidents = [Incident(1, NOW - 2 * H, NOW - H, "production"), Incident(2, NOW - 2 * H, None, "staging")]
    reps = analyze_repo(deps, [], incidents[:1], NOW)
    assert reps["production"].windows["7d"].change_failure_ratio == 1.0
    assert reps["production"].recovery_times["incident"] == [H]
    assert reps["staging"].windows["7d"].change_failure_ratio == 0.0
    assert reps["staging"].recovery_times["incident"] == []
    # an incident labelled staging is staging's
    reps = analyze_repo(deps, [], incidents[1:], NOW)
    assert reps["staging"].windows["7d"].change_failure_ratio == 1.0
    assert reps["production"].windows["7d"].change_failure_ratio == 0.0


def test_with_the_incident_definition_a_failed_deploy_job_alone_does_not_raise_the_rate() -> None:
    deps = {"production": [dep("1", "a", "success", NOW - 5 * H), dep("2", "b", "error", NOW - 4 * H)]}
    rates = {
        cf: analyze_repo(deps, [], [], NOW, change_failure=cf)["production"].windows["1d"]
        for cf in ("incidents", "deployments", "both")
    }
    assert (rates["incidents"].change_failure_ratio, rates["incidents"].considered) == (0.0, 1)
    assert rates["deployments"].change_failure_ratio == 0.5
    assert rates["both"].change_failure_ratio == 0.5
    # incidents not tracked at all: the incident-based rate is unknown, not 0
    untracked = analyze_repo(deps, [], [], NOW, incidents_tracked=False)["production"].windows["1d"]
    assert untracked.change_failure_ratio is None


def test_each_definition_counts_its_own_failures_and_recovery() -> None:
    deps = {
        "production": [
            dep("1", "a", "success", NOW - 10 * H),
            dep("2", "b", "failure", NOW - 9 * H),
            dep("3", "c", "success", NOW - 8 * H),  # recovers the failed run in 1 h
            dep("4", "d", "success", NOW - 6 * H),  # causes incident 1 (3 h to close)
        ]
    }
    incidents = [Incident(1, NOW - 5 * H, NOW - 2 * H)]
    got = {}
    for cf in ("incidents", "deployments", "both"):
        w = analyze_repo(deps, [], incidents, NOW, change_failure=cf)["production"].windows["1d"]
        got[cf] = (w.failed, w.considered, w.change_failure_ratio, w.recovery_time_median_seconds)
        assert w.recovery_by_cause == {"incident": 3 * H, "failed_deployment": H}
    assert got == {
        "incidents": (1, 3, 1 / 3, 3 * H),  # Four Keys / DevLake: deployments with an incident / deployments
        "deployments": (1, 4, 1 / 4, H),
        "both": (2, 4, 2 / 4, 2 * H),
    }


def test_empty_window_has_no_ratio_and_zero_frequency() -> None:
    rep = analyze_repo({"production": [dep("1", "a", "success", NOW - 10 * DAY)]}, [], [], NOW)["production"]
    w = rep.windows["7d"]
    assert (w.frequency_per_day, w.change_failure_ratio, w.lead_time_median_seconds) == (0.0, None, None)
    assert rep.windows["30d"].deployments == 1


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("deployment_frequency", 3.0, "elite"),
        ("deployment_frequency", 1.0, "elite"),
        ("deployment_frequency", 1 / 3, "high"),
        ("deployment_frequency", 1 / 14, "medium"),
        ("deployment_frequency", 1 / 60, "low"),
        ("deployment_frequency", 0.0, "low"),
        ("lead_time_for_changes", 3 * H, "elite"),
        ("lead_time_for_changes", 3 * DAY, "high"),
        ("lead_time_for_changes", 20 * DAY, "medium"),
        ("lead_time_for_changes", 90 * DAY, "low"),
        ("change_failure_rate", 0.05, "elite"),
        ("change_failure_rate", 0.08, "high"),
        ("change_failure_rate", 0.15, "medium"),
        ("change_failure_rate", 0.2, "low"),
        ("failed_deployment_recovery_time", 600, "elite"),
        ("failed_deployment_recovery_time", 5 * H, "high"),
        ("failed_deployment_recovery_time", 3 * DAY, "medium"),
        ("failed_deployment_recovery_time", 30 * DAY, "low"),
        ("change_failure_rate", None, None),
    ],
)
def test_bands_follow_the_2023_dora_report(key: str, value: float | None, expected: str | None) -> None:
    assert band(key, value) == expected
