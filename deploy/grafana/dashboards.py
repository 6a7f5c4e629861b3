"""Grafana dashboards for the collector, generated as JSON: `python deploy/grafana/dashboards.py [--check]`.

Each dashboard is a list of panels (title, queries, unit, kind); this script lays them out on the
24-column grid and writes `deploy/grafana/dashboards/<uid>.json`, the files Grafana's provisioning
loads. `--check` exits 1 when a committed file differs from what the code generates (CI runs it).
Queries use `$service`, `$job` and `$instance` (the scrape target's labels), `$__rate_interval` and
`$__range`; every panel reads the `${datasource}` variable (any Prometheus-compatible datasource: Mimir,
Thanos). Deployments from the DORA metrics are annotations on every dashboard. Runbook links are
`${runbook_base}docs/runbooks.md#<alert>`: `runbook_base` is a dashboard variable (default set by
`--runbook-base`, e.g. https://github.com/<org>/<repo>/blob/main/; empty: a path in the repository).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a script beside its panels module
from panels import DASHBOARDS, Dashboard, Panel

__all__ = ["DASHBOARDS", "render", "write"]

OUT = Path(__file__).resolve().parent / "dashboards"
RULES = Path(__file__).resolve().parent.parent / "prometheus" / "rules"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RUNBOOKS = "${runbook_base}docs/runbooks.md"


def _alert_names() -> list[str]:
    """The shipped alert names (a panel description naming one links to its runbook)."""
    return sorted(
        set(re.findall(r"^\s*- alert: (\w+)", "".join(p.read_text() for p in RULES.glob("*.yml")), re.M))
    )


ALERTS = _alert_names()


def _runbook_links(description: str) -> list[dict[str, Any]]:
    named = [a for a in ALERTS if re.search(rf"\b{a}\b", description)]
    return [{"title": f"Runbook: {a}", "url": f"{RUNBOOKS}#{a.lower()}", "targetBlank": True} for a in named]


def _query_var(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
    }


# Deployments (DORA): a success moves deployment_last_success_timestamp_seconds, a failure counts in
# deployments_total{status="failure"}. One annotation per scrape step in which either changed.
ANNOTATIONS = [
    {
        "name": "Deployments",
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "green",
        "expr": 'changes(deployment_last_success_timestamp_seconds{service=~"$service"}[2m]) > 0',
        "step": "60s",
        "titleFormat": "Deployed {{repository}} to {{environment}}",
        "textFormat": "successful deployment",
        "tagKeys": "repository,environment",
        "useValueForTime": False,
    },
    {
        "name": "Failed deployments",
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "red",
        "expr": 'increase(deployments_total{service=~"$service",status="failure"}[2m]) > 0',
        "step": "60s",
        "titleFormat": "Failed deployment of {{repository}} to {{environment}}",
        "textFormat": "change failure",
        "tagKeys": "repository,environment",
        "useValueForTime": False,
    },
]


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    height = 5 if p.kind == "stat" else 8
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "links": _runbook_links(p.description),
        "gridPos": {"h": height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if p.kind == "timeseries"
        else {},
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + i),
                "instant": p.kind in ("stat", "table", "bargauge"),
                "range": p.kind == "timeseries",
            }
            for i, (expr, legend) in enumerate(p.queries)
        ],
    }


def render(d: Dashboard, runbook_base: str = "") -> dict[str, Any]:
    """The Grafana dashboard JSON model of `d` (schemaVersion 39).

    Args:
        d: the dashboard.
        runbook_base: default of the `runbook_base` variable (where the repository is published).
    """
    panels, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(d.panels, start=1):
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(_panel(p, i, x, y))
        x += p.width
        row_h = max(row_h, panels[-1]["gridPos"]["h"])
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": d.tags,
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "graphTooltip": 1,
        "links": [
            {"title": "Runbooks", "type": "link", "url": RUNBOOKS, "targetBlank": True, "icon": "doc"},
            {
                "title": "Collector dashboards",
                "type": "dashboards",
                "tags": ["collector"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            },
        ],
        "annotations": {"list": ANNOTATIONS},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": True, "text": "Prometheus", "value": "prometheus"},
                    "refresh": 1,
                },
                _query_var("service", 'label_values(up{job=~".*collector.*"}, service)'),
                _query_var("job", 'label_values(up{job=~".*collector.*", service=~"$service"}, job)'),
                _query_var("instance", 'label_values(up{service=~"$service", job=~"$job"}, instance)'),
                {
                    "name": "runbook_base",
                    "label": "runbook base URL",
                    "type": "textbox",
                    "query": runbook_base,
                    "current": {"text": runbook_base, "value": runbook_base},
                    "hide": 2,
                },
            ]
        },
        "panels": panels,
    }


def write(out: Path = OUT, check: bool = False, runbook_base: str = "") -> list[str]:
    """Write every dashboard (or, with `check`, list the files that differ from the code)."""
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for d in DASHBOARDS:
        path = out / f"{d.uid}.json"
        text = json.dumps(render(d, runbook_base), indent=2, ensure_ascii=False) + "\n"
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, "utf-8")
    return stale


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is stale")
    parser.add_argument("--runbook-base", default="", help="default of the runbook_base variable")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    args = parser.parse_args()
    stale = write(args.out, check=args.check, runbook_base=args.runbook_base)
    for path in stale:
        print(f"stale: {path} (run python deploy/grafana/dashboards.py)", file=sys.stderr)
    sys.exit(1 if stale else 0)
