"""GitHub webhooks and CI reports into DORA metrics, against the running collector on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.utils import floatToGoString

from collector.settings import ConfigError, load_settings
from tests.helpers import CollectorProcess, Running, make_settings, serve, value
from tests.sources.github_helpers import (
    FIXTURES,
    REPO,
    SECRET,
    H,
    fixture,
    iso,
    issue,
    post_ci,
    post_event,
    sign,
    status_payload,
)

PROD = {"repository": REPO, "environment": "production"}


def push_payload(before: str, commits: list[tuple[str, float]]) -> dict[str, Any]:
    p = fixture("push/with-new-branch.payload.json")
    template = p["commits"][0]
    p["before"], p["after"], p["created"] = before, commits[-1][0], False
    p["commits"] = [{**template, "id": sha, "timestamp": iso(t)} for sha, t in commits]
    p["head_commit"] = p["commits"][-1]
    return p


def deployment_payload(dep_id: int, sha: str, created: float, env: str = "production") -> dict[str, Any]:
    p = fixture("deployment/payload.json")
    p["deployment"].update(
        id=dep_id, sha=sha, environment=env, created_at=iso(created), updated_at=iso(created)
    )
    return p


def settings(tmp_path: Path, **github: Any) -> Any:
    # These histories count failed deployment runs as change failures (the default is incidents, DORA's).
    github.setdefault("change_failure", "deployments")
    return make_settings(tmp_path, github={"webhook_secret": SECRET, **github})


# -- the scripted history: 10 deployments over 7 days, 2 failures, known commit times ---------------
# (hours before now, sha, outcome, commits pushed for it as (sha, hours before its deployment))
HISTORY = [
    (160, "a1", "success", [("a1", 1)]),
    (140, "a2", "success", [("a2", 3)]),
    (120, "a3", "failure", [("a3", 2)]),
    (118, "a4", "success", [("a4", 1)]),
    (96, "a5", "success", [("a5x", 6), ("a5", 5)]),
    (72, "a6", "success", [("a6", 0.5)]),
    (50, "a7", "error", [("a7", 1)]),
    (49, "a8", "success", [("a8", 0.5)]),
    (30, "a9", "success", [("a9b", -1), ("a9", 2)]),  # a9b: a skewed clock, after the deploy: dropped
    (10, "a10", "success", [("a10", 8)]),
]


async def post_history(run: Running, now: float) -> float:
    """Post pushes, deployments and statuses of HISTORY; returns the last success time."""
    before = "0" * 40
    for i, (ago, sha, outcome, commits) in enumerate(HISTORY):
        at = now - ago * H
        status, _ = await post_event(run, "push", push_payload(before, [(c, at - h * H) for c, h in commits]))
        assert status == 200
        before = sha
        assert (await post_event(run, "deployment", deployment_payload(1000 + i, sha, at - 300)))[0] == 200
        assert (
            await post_event(run, "deployment_status", status_payload(1000 + i, sha, "in_progress", at - 200))
        )[0] == 200
        assert (await post_event(run, "deployment_status", status_payload(1000 + i, sha, outcome, at)))[
            0
        ] == 200
    # GitHub marks a replaced deployment inactive: it stays a successful deployment
    assert (
        await post_event(run, "deployment_status", status_payload(1000, "a1", "inactive", now - 139 * H))
    )[0] == 200
    return now - 10 * H


# Worked by hand from HISTORY. Lead times (h): a1 1, a2 3, a4 1 and a3 (failed, so still undeployed) 4,
# a5 6 and 5, a6 0.5, a8 0.5 and a7 2, a9 2 (a9b dropped), a10 8 -> 11 values, sum 33 h, median 2 h.
# Recovery: a3 failed at 120 h, a4 fixed it at 118 h (2 h); a7 at 50 h, a8 at 49 h (1 h).
LEAD = [0.5, 0.5, 1, 1, 2, 2, 3, 4, 5, 6, 8]
BUCKET_H = {1 / 60: 0, 1: 4, 4: 8, 12: 11, 24: 11, 720: 11}


def assert_history_metrics(m: dict[str, Any], last_success: float) -> None:
    assert value(m, "deployments_total", **PROD, status="success") == 8
    assert value(m, "deployments_total", **PROD, status="failure") == 1
    assert value(m, "deployments_total", **PROD, status="error") == 1
    assert value(m, "deployment_lead_time_seconds_count", **PROD) == 11
    assert value(m, "deployment_lead_time_seconds_sum", **PROD) == 33 * H
    for hours, count in BUCKET_H.items():
        assert value(m, "deployment_lead_time_seconds_bucket", **PROD, le=floatToGoString(hours * H)) == count
    assert value(m, "deployment_recovery_time_seconds_count", **PROD, cause="failed_deployment") == 2
    assert value(m, "deployment_recovery_time_seconds_sum", **PROD, cause="failed_deployment") == 3 * H
    assert value(m, "deployment_frequency_per_day", **PROD, window="1d") == 1.0
    assert value(m, "deployment_frequency_per_day", **PROD, window="7d") == pytest.approx(8 / 7, rel=1e-12)
    assert value(m, "deployment_frequency_per_day", **PROD, window="30d") == pytest.approx(8 / 30, rel=1e-12)
    assert value(m, "deployment_change_failure_ratio", **PROD, window="1d") == 0.0
    assert value(m, "deployment_change_failure_ratio", **PROD, window="7d") == 0.2
    assert value(m, "deployment_change_failure_ratio", **PROD, window="30d") == 0.2
    assert value(m, "deployment_last_success_timestamp_seconds", **PROD) == last_success


def assert_history_dora(doc: dict[str, Any], last_success: float) -> None:
    (entry,) = doc["environments"]
    assert (entry["repository"], entry["environment"], entry["last_success_at"]) == (
        REPO,
        "production",
        last_success,
    )
    w1, w7, w30 = (entry["windows"][w] for w in ("1d", "7d", "30d"))
    assert w7["deployments"] == 8 and w7["deployments_ended"] == 10 and w7["failed_deployments"] == 2
    assert w7["deployment_frequency_per_day"] == pytest.approx(8 / 7, rel=1e-12)
    assert w7["change_failure_rate"] == 0.2
    assert w7["lead_time_for_changes_median_seconds"] == 2 * H
    assert w7["failed_deployment_recovery_time_median_seconds"] == 1.5 * H
    assert w7["bands"] == {
        "deployment_frequency": "elite",  # more than once a day
        "change_failure_rate": "low",  # 20% > 15%
        "lead_time_for_changes": "elite",  # under a day
        "failed_deployment_recovery_time": "high",  # under a day, over an hour
    }
    assert w30["deployment_frequency_per_day"] == pytest.approx(8 / 30, rel=1e-12)
    assert w30["bands"]["deployment_frequency"] == "high"  # every 3.75 days
    assert (w1["deployments"], w1["change_failure_rate"], w1["lead_time_for_changes_median_seconds"]) == (
        1,
        0.0,
        8 * H,
    )
    assert w1["failed_deployment_recovery_time_median_seconds"] is None
    assert w1["bands"]["failed_deployment_recovery_time"] is None


async def get_dora(run: Running) -> dict[str, Any]:
    status, _h, body = await run.get("/dora")
    assert status == 200
    return json.loads(body)


async def test_scripted_history_matches_hand_computed_keys_and_survives_restart(tmp_path: Path) -> None:
    now = float(int(time.time()))
    async with serve(settings(tmp_path)) as run:
        last_success = await post_history(run, now)
        assert_history_metrics(await run.metrics(), last_success)
        assert_history_dora(await get_dora(run), last_success)
        m = await run.metrics()
        assert value(m, "github_webhooks_total", event="deployment_status", status="accepted") == 21
        assert value(m, "github_webhooks_total", event="push", status="accepted") == 10
    async with serve(settings(tmp_path)) as run:  # restart: the history comes back from the state store
        await run.wait_for(lambda m: value(m, "deployments_total", **PROD, status="success") == 8)
        assert_history_metrics(await run.metrics(), last_success)
        assert_history_dora(await get_dora(run), last_success)


async def test_redelivery_is_recorded_once(tmp_path: Path) -> None:
    now = time.time()
    async with serve(settings(tmp_path)) as run:
        payload = status_payload(1, "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "success", now - H)
        assert await post_event(run, "deployment_status", payload, delivery="d-1") == (
            200,
            {"status": "accepted"},
        )
        assert await post_event(run, "deployment_status", payload, delivery="d-1") == (
            200,
            {"status": "duplicate"},
        )
        # a different delivery of the same status is merged, not counted twice
        assert (await post_event(run, "deployment_status", payload, delivery="d-2"))[0] == 200
        m = await run.metrics()
        assert value(m, "deployments_total", **PROD, status="success") == 1
        assert value(m, "github_webhooks_total", event="deployment_status", status="duplicate") == 1
        assert value(m, "github_webhooks_total", event="deployment_status", status="accepted") == 2
    async with serve(settings(tmp_path)) as run:  # the delivery id is remembered across restarts
        assert await post_event(run, "deployment_status", payload, delivery="d-1") == (
            200,
            {"status": "duplicate"},
        )


async def test_real_fixture_payloads_are_accepted_as_github_sends_them(tmp_path: Path) -> None:
    async with serve(settings(tmp_path)) as run:
        for event, path in [
            ("deployment", "deployment/payload.json"),
            ("deployment_status", "deployment_status/payload.json"),
            ("push", "push/with-new-branch.payload.json"),
        ]:
            body = (FIXTURES / path).read_bytes()  # the bytes as stored, signed as GitHub signs them
            assert (await post_event(run, event, body))[0] == 200
        status, answer = await post_event(
            run, "deployment_status", (FIXTURES / "deployment_status/gh-pages.payload.json").read_bytes()
        )
        assert (status, answer["status"]) == (202, "ignored")  # github-pages is not a production environment
        status, answer = await post_event(run, "push", (FIXTURES / "push/payload.json").read_bytes())
        assert (status, answer["status"]) == (202, "ignored")  # a tag deletion brings no commits
        m = await run.metrics()
        # deployment 145988746 of f95f852b succeeded at 2019-05-15T15:20:55Z
        assert value(m, "deployments_total", **PROD, status="success") == 1
        assert value(m, "deployment_last_success_timestamp_seconds", **PROD) == 1557933655.0
        assert value(m, "github_webhooks_total", event="deployment_status", status="ignored") == 1
        assert value(m, "github_webhooks_total", event="push", status="ignored") == 1


async def test_bad_and_missing_signatures_are_rejected_and_counted(tmp_path: Path) -> None:
    body = (FIXTURES / "deployment_status/payload.json").read_bytes()
    async with serve(settings(tmp_path)) as run:
        assert (await post_event(run, "deployment_status", body, signature=None))[0] == 401
        assert (await post_event(run, "deployment_status", body, signature=sign(body, "wrong")))[0] == 401
        assert (await post_event(run, "deployment_status", body, signature="sha256=zz"))[0] == 401
        assert (await post_event(run, "deployment_status", body + b" ", signature=sign(body)))[0] == 401
        assert (await post_event(run, "nonsense-event", body, signature=None))[0] == 401
        m = await run.metrics()
        assert value(m, "github_webhooks_total", event="deployment_status", status="missing_signature") == 1
        assert value(m, "github_webhooks_total", event="deployment_status", status="invalid_signature") == 3
        assert value(m, "github_webhooks_total", event="other", status="missing_signature") == 1
        assert value(m, "collector_source_errors_total", source="github", reason="invalid_signature") == 3
        assert value(m, "deployments_total", **PROD, status="success") is None


async def test_ping_unknown_events_and_bad_payloads(tmp_path: Path) -> None:
    async with serve(settings(tmp_path)) as run:
        assert await post_event(run, "ping", {"zen": "Keep it logically awesome.", "hook_id": 1}) == (
            200,
            {"status": "pong"},
        )
        status, answer = await post_event(run, "star", {"action": "created"})
        assert (status, answer["status"]) == (202, "unsupported")
        assert (await post_event(run, "deployment_status", b"{not json"))[0] == 400
        broken = status_payload(5, "abc", "success", time.time())
        broken["deployment_status"]["created_at"] = "last tuesday"
        assert (await post_event(run, "deployment_status", broken))[0] == 400
        del broken["deployment"]
        assert (await post_event(run, "deployment_status", broken))[0] == 400
        m = await run.metrics()
        assert value(m, "github_webhooks_total", event="ping", status="accepted") == 1
        assert value(m, "github_webhooks_total", event="other", status="unsupported") == 1
        assert value(m, "github_webhooks_total", event="deployment_status", status="bad_payload") == 3
        assert value(m, "collector_source_errors_total", source="github", reason="bad_payload") == 3
        status, _h, _b = await run.get("/health/live")
        assert status == 200


async def test_workflow_runs_count_as_deployments_when_named(tmp_path: Path) -> None:
    run_payload = fixture("workflow_run/completed.payload.json")  # workflow "test", conclusion success
    failed = copy.deepcopy(run_payload)
    failed["workflow_run"].update(id=2, conclusion="failure", updated_at="2020-10-05T16:30:00Z")
    async with serve(settings(tmp_path, deploy_workflows="test.yml")) as run:
        assert (await post_event(run, "workflow_run", failed))[0] == 200
        assert (await post_event(run, "workflow_run", run_payload))[0] == 200
        queued = fixture("workflow_run/completed.payload.json")
        queued["workflow_run"].update(id=3, status="queued", conclusion=None)
        assert (await post_event(run, "workflow_run", queued))[0] == 202
        m = await run.metrics()
        repo = {"repository": "octo-org/octo-repo", "environment": "production"}
        assert value(m, "deployments_total", **repo, status="success") == 1
        assert value(m, "deployments_total", **repo, status="failure") == 1
        # 16:30:00 failed -> 16:33:49 succeeded
        assert value(m, "deployment_recovery_time_seconds_sum", **repo, cause="failed_deployment") == 229.0


async def test_incidents_add_change_failures_and_recovery(tmp_path: Path) -> None:
    now = float(int(time.time()))
    async with serve(settings(tmp_path, incident_label="incident", change_failure="incidents")) as run:
        for i, ago in enumerate((40, 20)):
            assert (
                await post_event(
                    run, "deployment_status", status_payload(i, f"s{i}", "success", now - ago * H)
                )
            )[0] == 200
        # opened 10 h ago after the deployment of 20 h ago, closed 7 h ago
        assert (await post_event(run, "issues", issue(5, now - 10 * H, None, ["incident"], "opened")))[
            0
        ] == 200
        assert (await post_event(run, "issues", issue(6, now - 9 * H, None, ["bug"], "opened")))[0] == 202
        m = await run.metrics()
        assert value(m, "deployment_change_failure_ratio", **PROD, window="7d") == 0.5
        assert (await post_event(run, "issues", issue(5, now - 10 * H, now - 7 * H, ["incident"], "closed")))[
            0
        ] == 200
        m = await run.metrics()
        assert value(m, "deployment_recovery_time_seconds_sum", **PROD, cause="incident") == 3 * H
        assert (await post_event(run, "issues", issue(5, now - 10 * H, now - 7 * H, [], "unlabeled")))[
            0
        ] == 200
        m = await run.metrics()
        assert value(m, "deployment_change_failure_ratio", **PROD, window="7d") == 0.0
        assert value(m, "deployment_recovery_time_seconds_count", **PROD, cause="incident") == 0


async def test_repositories_filter_ignores_other_repositories(tmp_path: Path) -> None:
    async with serve(settings(tmp_path, repositories="octo-org/shop")) as run:
        status, answer = await post_event(run, "deployment_status", fixture("deployment_status/payload.json"))
        assert (status, answer["reason"]) == (202, "repository")


async def test_ci_endpoint_records_deployments_with_commits(tmp_path: Path) -> None:
    now = float(int(time.time()))
    cfg = make_settings(tmp_path, deployments={"token": "ci-token", "change_failure": "deployments"})
    repo = {"repository": "acme/shop", "environment": "production"}
    first = {
        "repository": "acme/shop",
        "environment": "production",
        "sha": "c1",
        "status": "success",
        "id": "pipe-1",
        "finished_at": iso(now - 5 * H),
    }
    second = {
        "repository": "acme/shop",
        "environment": "production",
        "sha": "c2",
        "status": "failure",
        "id": "pipe-2",
        "finished_at": now - 3 * H,
    }
    third = {
        "repository": "acme/shop",
        "environment": "production",
        "sha": "c3",
        "status": "success",
        "id": "pipe-3",
        "started_at": now - 2.5 * H,
        "finished_at": now - 2 * H,
        "commits": [{"sha": "c2", "timestamp": iso(now - 4 * H)}, {"sha": "c3", "timestamp": now - 3 * H}],
    }
    async with serve(cfg) as run:
        assert (await post_ci(run, first)) == (201, {"status": "accepted", "id": "ci:pipe-1"})
        assert (await post_ci(run, second))[0] == 201
        assert (await post_ci(run, third))[0] == 201
        assert (await post_ci(run, third))[0] == 200  # a CI retry: merged, not counted twice
        assert (await post_ci(run, first, token="nope"))[0] == 401
        assert (await post_ci(run, first, token=None))[0] == 401
        assert (await post_ci(run, {**first, "status": "done"}))[0] == 400
        assert (await post_ci(run, {**first, "extra": 1}))[0] == 400
        assert (await post_ci(run, b"[1,2"))[0] == 400
        deep = json.dumps({**first, "commits": "X"}).replace('"X"', "[" * 5000 + "]" * 5000).encode()
        assert (await post_ci(run, deep))[0] == 400
        assert (await post_ci(run, {**first, "finished_at": 1e308}))[0] == 400
        m = await run.metrics()
        assert value(m, "deployments_total", **repo, status="success") == 2
        assert value(m, "deployments_total", **repo, status="failure") == 1
        assert value(m, "deployment_lead_time_seconds_sum", **repo) == 3 * H  # 2 h + 1 h
        assert value(m, "deployment_recovery_time_seconds_sum", **repo, cause="failed_deployment") == 1 * H
        assert value(m, "deployment_change_failure_ratio", **repo, window="1d") == pytest.approx(
            1 / 3, rel=1e-12
        )
        assert value(m, "deployments_reports_total", status="accepted") == 3
        assert value(m, "deployments_reports_total", status="updated") == 1
        assert value(m, "deployments_reports_total", status="unauthorized") == 2
        assert value(m, "deployments_reports_total", status="bad_request") == 5
        doc = await get_dora(run)  # served by the deployments source when github is off
        assert doc["environments"][0]["windows"]["1d"]["deployments"] == 2
        status, _h, _b = await run.get("/webhooks/github")
        assert status == 404


async def test_both_sources_share_one_history(tmp_path: Path) -> None:
    cfg = make_settings(tmp_path, github={"webhook_secret": SECRET}, deployments={"token": "ci-token"})
    async with serve(cfg) as run:
        assert (await post_event(run, "deployment_status", fixture("deployment_status/payload.json")))[
            0
        ] == 200
        ci = {"repository": REPO, "environment": "production", "sha": "b2", "status": "success", "id": "x"}
        assert (await post_ci(run, ci))[0] == 201
        m = await run.metrics()
        assert value(m, "deployments_total", **PROD, status="success") == 2
        assert len((await get_dora(run))["environments"]) == 1


# -- settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"COLLECTOR_GITHUB__TOKEN": "t"}, "COLLECTOR_GITHUB__REPOSITORIES is empty"),
        (
            {"COLLECTOR_GITHUB__TOKEN": "t", "COLLECTOR_GITHUB__REPOSITORIES": "nope"},
            "COLLECTOR_GITHUB__REPOSITORIES='nope'",
        ),
        (
            {"COLLECTOR_GITHUB__WEBHOOK_SECRET": "s", "COLLECTOR_GITHUB__PRODUCTION_ENVIRONMENTS": "(prod"},
            "COLLECTOR_GITHUB__PRODUCTION_ENVIRONMENTS",
        ),
        (
            {"COLLECTOR_GITHUB__WEBHOOK_SECRET": "s", "COLLECTOR_GITHUB__API_URL": "ftp://x"},
            "COLLECTOR_GITHUB__API_URL",
        ),
        (
            {"COLLECTOR_GITHUB__WEBHOOK_SECRET": "s", "COLLECTOR_GITHUB__POLL_INTERVAL": "0"},
            "COLLECTOR_GITHUB__POLL_INTERVAL",
        ),
        ({"COLLECTOR_DEPLOYMENTS__ENABLED": "true"}, "COLLECTOR_DEPLOYMENTS__TOKEN"),
    ],
)
def test_rejected_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings(env_file=None)
    assert fragment in str(err.value)


def test_secrets_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    monkeypatch.setenv("COLLECTOR_GITHUB__WEBHOOK_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("COLLECTOR_DEPLOYMENTS__TOKEN_FILE", str(tmp_path / "secret"))
    s = load_settings(env_file=None)
    assert s.github.webhook_secret is not None and s.github.webhook_secret.get_secret_value() == "from-file"
    assert s.github.is_enabled() and s.deployments.is_enabled()


# -- the real `collector` process, configured through the environment ------------------------------
def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_collector_process_keeps_history_across_sigterm(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    env = {
        "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
        "COLLECTOR_GITHUB__WEBHOOK_SECRET_FILE": str(tmp_path / "secret"),
        "COLLECTOR_DEPLOYMENTS__TOKEN": "ci-token",
    }
    body = (FIXTURES / "deployment_status/payload.json").read_bytes()
    hook = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "deployment_status",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": sign(body),
    }
    ci = json.dumps(
        {"repository": REPO, "environment": "production", "sha": "b2", "status": "failure", "id": "p9"}
    )
    for attempt in range(2):
        proc = CollectorProcess(env, tmp_path)
        try:
            proc.wait_live()
            # the process answers /health/live before the store is open; the webhook waits for the history
            assert _post(proc.url + "/webhooks/github", body, hook) == 200
            if attempt == 0:
                ci_headers = {"Authorization": "Bearer ci-token", "Content-Type": "application/json"}
                assert _post(proc.url + "/deployments", ci.encode(), ci_headers) == 201
            m = proc.scrape()
            assert value(m, "deployments_total", **PROD, status="success") == 1
            assert value(m, "deployments_total", **PROD, status="failure") == 1
            status = "accepted" if attempt == 0 else "duplicate"
            assert value(m, "github_webhooks_total", event="deployment_status", status=status) == 1
            assert SECRET not in proc.stderr()
        finally:
            assert proc.terminate() == 0
