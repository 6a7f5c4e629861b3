"""End to end: a real Prometheus with the shipped rules scrapes `collector demo`; every alert expression and
every dashboard query evaluates through its HTTP API without error, and returns data unless listed below."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml

from tests.deploy.kit import (
    DEPLOY,
    EMPTY_IN_DEMO,
    RULES_DIR,
    Demo,
    alert_rules,
    dashboard_queries,
    names_in,
    need,
    recording_rules,
    signals,
)
from tests.helpers import free_port

#: Queries that are legitimately empty in a healthy demo of a minute, with the reason.
EMPTY_DASHBOARD = {
    ("Source errors by reason", 0): "no source fails in the demo",
    ("Source restarts", 0): "no source fails in the demo",
    ("Series folded at the limit", 0): "no family reaches its series limit",
    ("Series folded at the limit", 1): "no log-rule metric reaches its series limit",
    ("State store resets and errors", 1): "the state store has no failed operation",
    ("TLS certificate expires in", 0): "the demo probes ws:// (no TLS certificate)",
}
_OK = 'status=~"processed|duplicate|ignored"'
EMPTY_SIGNAL = {
    "avg_over_time(service:websocket_connections_active:sum[30m] offset 10m)": "needs 10 minutes of history",
    "0.5 * avg_over_time(service:websocket_connections_active:sum[30m] offset 10m)": "needs 10 minutes of history",
    "sum by (service, instance, metric) (collector_series_overflow_total)": "no family reaches its series limit",
    "sum by (service, instance, metric) (collector_log_series_overflow_total)": "no log-rule metric reaches its limit",
    'sum by (service) (rate(stripe_webhooks_total{status="error"}[10m])) / sum by (service) '
    '(rate(stripe_webhooks_total{status=~"processed|duplicate|ignored|error"}[10m]))': "no delivery fails",
    f"sum by (service) (increase(stripe_webhooks_total{{{_OK}}}[1h] offset 1d))": "needs a day of history",
    f"sum by (service) (increase(stripe_webhooks_total{{{_OK}}}[1h] offset 1d)) * 0": "needs a day of history",
    'sum by (service) (rate(stripe_webhooks_total{event_type="unknown",status=~"signature_failed|invalid"}[15m]) '
    'or rate(github_webhooks_total{status=~"missing_signature|invalid_signature|bad_request"}[15m])) * 60': "every demo request is signed",
    'sum by (service) (increase(github_webhooks_total{status=~"error|bad_payload"}[30m]))': "every delivery is recorded",
    'absent(up{collector="global"})': "the global collector is scraped",
}
# the parser's own spelling, which is what signals() returns
EMPTY_SIGNAL = {str(pp.parse(k)): v for k, v in EMPTY_SIGNAL.items()}


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # Prometheus answers 400/422 with a JSON error body
        return json.loads(exc.read())


def _config(tmp: Path, demo: Demo) -> Path:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # the shipped config with loopback targets and a 1 s cadence; no node-exporter or Alertmanager here
    cfg["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    # the shipped rules, every group at that cadence too (the recording group's 30 s would leave the
    # dashboards that read it empty for most of a one-minute run)
    (tmp / "rules").mkdir()
    for path in RULES_DIR.glob("*.yml"):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            group.pop("interval", None)
        (tmp / "rules" / path.name).write_text(yaml.safe_dump(rules))
    cfg["rule_files"] = [str(tmp / "rules" / "*.yml")]
    cfg.pop("alerting")
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "collector"]
    job["scrape_interval"] = "1s"
    job["static_configs"][0]["targets"] = [demo.url.removeprefix("http://")]
    cfg["scrape_configs"] = [job]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.timeout(240)
def test_prometheus_evaluates_every_alert_and_dashboard_query_against_the_demo(
    demo: Demo, tmp_path: Path
) -> None:
    queries = [
        (f"{q.dashboard} / {q.panel} [{i}]", q.promql, EMPTY_DASHBOARD.get((q.panel, i)))
        for q, i in _indexed()
    ]
    for rule in alert_rules():
        queries.append((f"alert {rule['alert']}", rule["expr"], "it fires only when something is wrong"))
        queries += [
            (f"alert {rule['alert']} signal", sig, EMPTY_SIGNAL.get(sig)) for sig in signals(rule["expr"])
        ]
    wanted = set().union(*(names_in(q)[0] for _n, q, _e in queries)) - {"up"}
    demo.wait_for({n.removesuffix("_bucket") for n in wanted} - set(EMPTY_IN_DEMO))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            need("prometheus"),
            f"--config.file={_config(tmp_path, demo)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        results: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                results = [
                    _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
                    for _n, q, _e in queries
                ]
            except OSError:
                continue  # not listening yet
            scrapes = _get(f"{base}/api/v1/query?query=count_over_time(up[1m])")["data"]["result"]
            if (
                scrapes
                and float(scrapes[0]["value"][1]) >= 5
                and all(
                    r["status"] == "success" and (r["data"]["result"] or e)
                    for (_n, _q, e), r in zip(queries, results, strict=True)
                )
            ):
                break
        assert results, (tmp_path / "prometheus.log").read_text()
        assert scrapes and float(scrapes[0]["value"][1]) >= 5, "fewer than 5 scrapes of the demo"
        errors = {
            n: r.get("error")
            for (n, _q, _e), r in zip(queries, results, strict=True)
            if r["status"] != "success"
        }
        assert errors == {}, errors
        empty = [
            f"{n}: {q}"
            for (n, q, e), r in zip(queries, results, strict=True)
            if not e and not r["data"]["result"]
        ]
        assert empty == [], "\n".join(empty)
        rules = _get(f"{base}/api/v1/rules")["data"]["groups"]
        health = {r["name"]: (r["health"], r.get("lastError", "")) for g in rules for r in g["rules"]}
        assert len(health) == len(alert_rules()) + len(recording_rules())
        assert {n: h for n, h in health.items() if h != ("ok", "")} == {}
        up = _get(f"{base}/api/v1/query?query=up")["data"]["result"]
        assert [s["value"][1] for s in up] == ["1"]
        # the healthy demo is quiet: no alert pending or firing (its 10% change failure rate is below
        # HighChangeFailureRate's 15%, its jumpy WebSocket gauge is averaged)
        active = _get(f"{base}/api/v1/alerts")["data"]["alerts"]
        assert [(a["labels"]["alertname"], a["state"]) for a in active] == []
    finally:
        proc.terminate()
        proc.wait(20)


def _indexed() -> list[tuple[Any, int]]:
    # (query, its index within the panel), so a legitimately empty query is named by panel and position
    out, seen = [], {}
    for q in dashboard_queries():
        key = (q.dashboard, q.panel)
        seen[key] = seen.get(key, -1) + 1
        out.append((q, seen[key]))
    return out
