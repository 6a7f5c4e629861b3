"""DORA definitions end to end through signed GitHub webhooks: incidents attributed to the environment
they concern, the incident-based change failure rate (DORA's, the default), recovery time by cause."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from tests.helpers import make_settings, serve, value
from tests.sources.github_helpers import REPO, SECRET, H, fixture, iso, issue, post_event, status_payload

PROD = {"repository": REPO, "environment": "production"}
STAGING = {"repository": REPO, "environment": "staging"}


def settings(tmp_path: Path, **github: Any) -> Any:
    github = {
        "webhook_secret": SECRET,
        "incident_label": "incident",
        "production_environments": "^(production|staging)$",  # both tracked, to tell them apart
        **github,
    }
    return make_settings(tmp_path, github=github)


async def test_a_production_incident_during_a_staging_success_is_attributed_to_production(
    tmp_path: Path,
) -> None:
    now = float(int(time.time()))
    async with serve(settings(tmp_path)) as run:
        assert (await post_event(run, "deployment_status", status_payload(1, "p1", "success", now - 30 * H)))[
            0
        ] == 200
        # staging deploys 1 h before the production incident: the repository's latest success
        staging = status_payload(2, "s1", "success", now - 3 * H, env="staging")
        assert (await post_event(run, "deployment_status", staging))[0] == 200
        incident = issue(7, now - 2 * H, now - H, ["incident"], "closed")  # no environment label
        assert (await post_event(run, "issues", incident))[0] == 200
        labelled = issue(8, now - 2 * H, None, ["incident", "environment:staging"], "opened")
        m = await run.metrics()
        assert value(m, "deployment_change_failure_ratio", **PROD, window="1d") is None  # 30 h ago
        assert value(m, "deployment_change_failure_ratio", **PROD, window="7d") == 1.0
        assert value(m, "deployment_change_failure_ratio", **STAGING, window="7d") == 0.0
        assert value(m, "deployment_recovery_time_seconds_sum", **PROD, cause="incident") == H
        assert (value(m, "deployment_recovery_time_seconds_count", **STAGING, cause="incident") or 0) == 0
        # an incident labelled environment:staging is staging's
        assert (await post_event(run, "issues", labelled))[0] == 200
        m = await run.metrics()
        assert value(m, "deployment_change_failure_ratio", **STAGING, window="7d") == 1.0
        assert value(m, "deployment_change_failure_ratio", **PROD, window="7d") == 1.0
    # the environment survives a restart (stored with the incident)
    async with serve(settings(tmp_path)) as run:
        m = await run.wait_for(
            lambda m: value(m, "deployment_change_failure_ratio", **STAGING, window="7d") is not None
        )
        assert value(m, "deployment_change_failure_ratio", **STAGING, window="7d") == 1.0


async def test_with_the_incident_definition_a_failed_deploy_job_alone_does_not_raise_the_rate(
    tmp_path: Path,
) -> None:
    ok = fixture("workflow_run/completed.payload.json")  # workflow "test", conclusion success
    now = float(int(time.time()))
    ok["workflow_run"].update(created_at=iso(now - 3 * H), updated_at=iso(now - 3 * H))
    errored = copy.deepcopy(ok)
    errored["workflow_run"].update(
        id=2, conclusion="timed_out", created_at=iso(now - 2 * H), updated_at=iso(now - 2 * H)
    )
    repo = {"repository": "octo-org/octo-repo", "environment": "production"}
    rates = {}
    for definition in ("incidents", "deployments", "both"):
        cfg = settings(tmp_path / definition, deploy_workflows="test.yml", change_failure=definition)
        async with serve(cfg) as run:
            for payload in (ok, errored):
                assert (await post_event(run, "workflow_run", payload))[0] == 200
            m = await run.metrics()
            rates[definition] = value(m, "deployment_change_failure_ratio", **repo, window="1d")
            assert value(m, "deployments_total", **repo, status="error") == 1
    assert rates == {"incidents": 0.0, "deployments": 0.5, "both": 0.5}


async def test_without_an_incident_source_the_incident_rate_is_absent_not_zero(tmp_path: Path) -> None:
    now = float(int(time.time()))
    cfg = make_settings(tmp_path, github={"webhook_secret": SECRET})  # defaults: incidents, no label
    async with serve(cfg) as run:
        assert (await post_event(run, "deployment_status", status_payload(1, "a", "success", now - H)))[
            0
        ] == 200
        m = await run.metrics()
    assert value(m, "deployment_change_failure_ratio", **PROD, window="1d") is None
    assert value(m, "deployment_frequency_per_day", **PROD, window="1d") == 1.0
