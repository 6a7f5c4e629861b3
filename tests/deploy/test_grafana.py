"""The shipped Grafana kit: generated dashboards are current, every query parses as PromQL and uses only
metric and label names that the collector (run as `collector demo`) really exposes."""

from __future__ import annotations

import json
import re

import promql_parser as pp
import pytest
import yaml

from tests.deploy.kit import (
    DASHBOARD_DIR,
    DEPLOY,
    EMPTY_IN_DEMO,
    TARGET_LABELS,
    Demo,
    alert_rules,
    dashboard_queries,
    dashboards_module,
    families,
    names_in,
    recorded_labels,
    recording_rules,
)
from tests.helpers import REPO

DASHBOARDS = {
    "HTTP RED",
    "DORA",
    "Auth & Security",
    "Stripe Payments & Revenue",
    "WebSocket",
    "Business & Content",
    "Collector health",
}


@pytest.mark.quick
def test_committed_dashboards_are_what_the_generator_writes() -> None:
    assert dashboards_module().write(DASHBOARD_DIR, check=True) == []


@pytest.mark.quick
def test_the_issues_dashboards_ship_with_unique_uids_and_the_provisioned_datasource() -> None:
    dashes = [json.loads(p.read_text()) for p in DASHBOARD_DIR.glob("*.json")]
    assert {d["title"] for d in dashes} == DASHBOARDS
    assert len({d["uid"] for d in dashes}) == len(dashes)
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert [(d["uid"], d["type"]) for d in ds] == [("prometheus", "prometheus")]
    for d in dashes:
        for panel in d["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert set(variables) == {"datasource", "service", "job", "instance", "runbook_base"}
        assert (
            variables["datasource"]["type"] == "datasource"
            and variables["datasource"]["query"] == "prometheus"
        )
        assert all(
            variables[v]["datasource"]["uid"] == "${datasource}" for v in ("service", "job", "instance")
        )
        assert "example.com" not in json.dumps(d)
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/collector.yml").read_text())[
        "providers"
    ][0]
    assert provider["type"] == "file" and provider["folder"] == "Collector"


@pytest.mark.quick
@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: f"{q.dashboard}/{q.panel}")
def test_every_panel_query_parses_as_promql(query: object) -> None:
    pp.parse(query.promql)  # type: ignore[attr-defined]


@pytest.mark.quick
def test_every_dashboard_annotates_deployments_from_the_dora_metrics() -> None:
    for path in DASHBOARD_DIR.glob("*.json"):
        notes = {a["name"]: a for a in json.loads(path.read_text())["annotations"]["list"]}
        assert set(notes) == {"Deployments", "Failed deployments"}
        assert "deployment_last_success_timestamp_seconds" in notes["Deployments"]["expr"]
        assert (
            'deployments_total{service=~"$service",status="failure"}' in notes["Failed deployments"]["expr"]
        )
        for note in notes.values():
            pp.parse(note["expr"].replace("$service", ".*"))
            assert note["datasource"]["uid"] == "${datasource}"


@pytest.mark.quick
def test_runbook_links_point_at_existing_sections_of_the_runbooks() -> None:
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    anchors = {h.lower() for h in re.findall(r"^## (\w+)$", runbooks, re.M)}
    links = []
    for path in DASHBOARD_DIR.glob("*.json"):
        d = json.loads(path.read_text())
        links += [lk["url"] for lk in d["links"] if lk["type"] == "link"]
        links += [lk["url"] for p in d["panels"] for lk in p["links"]]
    assert any("#" in u for u in links)
    for url in links:
        path, _, anchor = url.removeprefix("${runbook_base}").partition("#")
        assert url.startswith("${runbook_base}") and (REPO / path).is_file(), url
        assert not anchor or anchor in anchors, url
    # the base is configurable: the generator bakes a default into the variable
    d = dashboards_module().render(
        dashboards_module().DASHBOARDS[0], "https://git.internal/ops/collector/-/blob/main/"
    )
    (var,) = [v for v in d["templating"]["list"] if v["name"] == "runbook_base"]
    assert var["current"]["value"] == "https://git.internal/ops/collector/-/blob/main/"


@pytest.mark.quick
def test_dashboards_use_the_recording_rules_and_every_recording_rule_is_used() -> None:
    used = set().union(*(names_in(q.promql)[0] for q in dashboard_queries()))
    exprs = " ".join(r["expr"] for r in alert_rules())
    recorded = set(recording_rules())
    assert {m for m in used if ":" in m} <= recorded
    assert {"job_service_le:http_request_duration_seconds_bucket:rate5m"} <= used
    assert all(name in used or name in exprs for name in recorded), recorded - used


def _used() -> list[tuple[str, set[str], set[str]]]:
    """(expression, metric names, label names) of every dashboard query and alert expression."""
    out = []
    exprs = [(q.promql, q.legend) for q in dashboard_queries()] + [(r["expr"], "") for r in alert_rules()]
    for expr, legend in exprs:
        metrics, labels = names_in(expr)
        out.append((expr, metrics - {"up"}, labels | set(re.findall(r"{{\s*(\w+)\s*}}", legend))))
    return out


def test_dashboards_and_alerts_use_only_names_the_collector_exposes(demo: Demo) -> None:
    used = _used()
    names = {m for m in set().union(*(m for _e, m, _l in used)) if ":" not in m}  # not recorded
    exposed = families(demo.wait_for({m.removesuffix("_bucket") for m in names} - set(EMPTY_IN_DEMO)))
    code = "\n".join(p.read_text() for p in (REPO / "collector").rglob("*.py"))
    missing = sorted(m for m in names if (f'"{m}"' not in code if m in EMPTY_IN_DEMO else m not in exposed))
    assert missing == [], f"not exposed by collector demo: {missing}"
    bad_labels = []
    for expr, metrics, labels in used:
        # a by/on/matcher/legend label must exist on the series of at least one metric of the expression
        known = set().union(*(exposed.get(m, set()) for m in metrics)) | TARGET_LABELS | {"le"}
        known |= set().union(*(recorded_labels(m) for m in metrics if ":" in m))
        if not metrics & set(EMPTY_IN_DEMO):
            bad_labels += [f"{label} in {expr}" for label in labels - known]
    assert bad_labels == []
