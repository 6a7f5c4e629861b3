"""Grafana dashboards for the collector, generated as JSON: `python deploy/grafana/dashboards.py [--check]`.

Each dashboard is a list of panels (title, queries, unit, kind); this script lays them out on the
24-column grid and writes `deploy/grafana/dashboards/<uid>.json`, the files Grafana's provisioning
loads. `--check` exits 1 when a committed file differs from what the code generates (CI runs it).
Queries use `$service` (the scrape target's `service` label), `$__rate_interval` and `$__range`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a script beside its panels module
from panels import DASHBOARDS, Dashboard, Panel

__all__ = ["DASHBOARDS", "render", "write"]

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    height = 5 if p.kind == "stat" else 8
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
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


def render(d: Dashboard) -> dict[str, Any]:
    """The Grafana dashboard JSON model of `d` (schemaVersion 39)."""
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
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "service",
                    "label": "service",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": 'label_values(up{job=~".*collector.*"}, service)', "refId": "service"},
                    "definition": 'label_values(up{job=~".*collector.*"}, service)',
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "refresh": 2,
                    "sort": 1,
                }
            ]
        },
        "panels": panels,
    }


def write(out: Path = OUT, check: bool = False) -> list[str]:
    """Write every dashboard (or, with `check`, list the files that differ from the code)."""
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for d in DASHBOARDS:
        path = out / f"{d.uid}.json"
        text = json.dumps(render(d), indent=2, ensure_ascii=False) + "\n"
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, "utf-8")
    return stale


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is stale")
    args = parser.parse_args()
    stale = write(check=args.check)
    for path in stale:
        print(f"stale: {path} (run python deploy/grafana/dashboards.py)", file=sys.stderr)
    sys.exit(1 if stale else 0)
