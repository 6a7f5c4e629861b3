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


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    assert dashboards_module().write(DASHBOARD_DIR, check=True) == []


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
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            assert panel["targets"], panel["title"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/collector.yml").read_text())[
        "providers"
    ][0]
    assert provider["type"] == "file" and provider["folder"] == "Collector"


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: f"{q.dashboard}/{q.panel}")
def test_every_panel_query_parses_as_promql(query: object) -> None:
    pp.parse(query.promql)  # type: ignore[attr-defined]


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
    names = set().union(*(m for _e, m, _l in used))
    exposed = families(demo.wait_for({m.removesuffix("_bucket") for m in names} - set(EMPTY_IN_DEMO)))
    code = "\n".join(p.read_text() for p in (REPO / "collector").rglob("*.py"))
    missing = sorted(m for m in names if (f'"{m}"' not in code if m in EMPTY_IN_DEMO else m not in exposed))
    assert missing == [], f"not exposed by collector demo: {missing}"
    bad_labels = []
    for expr, metrics, labels in used:
        # a by/on/matcher/legend label must exist on the series of at least one metric of the expression
        known = set().union(*(exposed.get(m, set()) for m in metrics)) | TARGET_LABELS | {"le"}
        if not metrics & set(EMPTY_IN_DEMO):
            bad_labels += [f"{label} in {expr}" for label in labels - known]
    assert bad_labels == []
