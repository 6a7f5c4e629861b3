"""Helpers for the deploy-kit tests: the shipped rules and dashboards, PromQL inspection, the demo process."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml

from tests.helpers import REPO, free_port, parse

DEPLOY = REPO / "deploy"
RULES_DIR = DEPLOY / "prometheus" / "rules"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
#: Labels Prometheus adds to every scraped series (the scrape config's target labels).
TARGET_LABELS = {"job", "instance", "service", "collector"}
#: Grafana's variables, replaced by concrete values before PromQL sees a query.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$service": ".*",
    "$job": ".*",
    "$instance": ".*",
}
#: Families the demo declares but has no sample of (nothing goes wrong in a healthy demo); the name
#: check for them is that the collector's code still defines them.
EMPTY_IN_DEMO = {
    "collector_log_series_overflow_total": "no log-rule metric reaches its series limit",
    "collector_series_overflow_total": "no family reaches its series limit",
    "collector_source_errors_total": "no source fails",
    "collector_source_restarts_total": "no source fails",
    "collector_state_store_errors_total": "the store works",
    "probe_ssl_earliest_cert_expiry": "the demo probes ws:// (no TLS certificate)",
}
COMPARISONS = {">", "<", "==", "!=", ">=", "<="}
SET_OPS = {"and", "or", "unless"}


def need(tool: str) -> str:
    """The path of a command-line tool, or skip (CI installs it; see .ci/run)."""
    path = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed: .ci/run must install it")
        pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    return path


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of every shipped rules file."""
    out = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(r for r in group["rules"] if "alert" in r)
    return out


def recording_rules() -> dict[str, dict[str, Any]]:
    """Every recording rule of the shipped rules files, by the name it records."""
    out = {}
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.update({r["record"]: r for r in group["rules"] if "record" in r})
    return out


def recorded_labels(name: str) -> set[str]:
    """The labels a recording rule's series carry: its outermost aggregation's `by` list."""
    node = pp.parse(recording_rules()[name]["expr"])
    while isinstance(node, pp.BinaryExpr | pp.ParenExpr):
        node = node.lhs if isinstance(node, pp.BinaryExpr) else node.expr
    if isinstance(node, pp.AggregateExpr) and node.modifier is not None:
        return set(node.modifier.labels)
    return set()


def dashboards_module() -> Any:
    """deploy/grafana/dashboards.py, imported by path (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("deploy_dashboards", DEPLOY / "grafana" / "dashboards.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str
    legend: str

    @property
    def promql(self) -> str:
        text = self.expr
        for var, value in GRAFANA_VARS.items():
            text = text.replace(var, value)
        return text


def dashboard_queries() -> list[Query]:
    """Every target of every shipped dashboard JSON file."""
    out = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                out.append(
                    Query(dash["title"], panel["title"], target["expr"], target.get("legendFormat", ""))
                )
    return out


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression refers to."""
    metrics: set[str] = set()
    labels: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            if node.name:
                metrics.add(node.name)
            labels.update(m.name for m in node.matchers.matchers if m.name != "__name__")
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif (
            isinstance(node, pp.BinaryExpr)
            and node.modifier is not None
            and node.modifier.matching is not None
        ):
            labels.update(node.modifier.matching.labels)

    pp.walk(pp.parse(expr), visit)
    return metrics, labels


def signals(expr: str) -> list[str]:
    """The sub-expressions an alert compares with its thresholds: `A > 1 or B < 2` -> [A, B].

    A firing condition is empty when it does not hold; its signals must still return data, or the
    alert is blind (a wrong metric or label name).
    """
    out: list[str] = []

    def walk(node: Any) -> None:
        while isinstance(node, pp.ParenExpr):
            node = node.expr
        if isinstance(node, pp.BinaryExpr):
            op = str(node.op).strip()
            if op in SET_OPS:
                walk(node.lhs)
                walk(node.rhs)
                return
            if op in COMPARISONS and (node.modifier is None or not node.modifier.return_bool):
                for side in (node.lhs, node.rhs):
                    if not isinstance(side, pp.NumberLiteral):
                        walk(side)
                return
        out.append(str(node))

    walk(pp.parse(expr))
    return out


class Demo:
    """`collector demo` as a child process on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        self.log = (workdir / "demo.stderr").open("wb")
        self.log_path = workdir / "demo.stderr"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collector",
                "demo",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--dir",
                str(workdir),
            ],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return resp.read().decode()

    def wait_for(self, names: set[str], timeout: float = 60.0) -> str:
        """Scrape until every name in `names` has samples (or `timeout`); return the last scrape."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"demo exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            try:
                text = self.text()
            except OSError:
                time.sleep(0.2)
                continue
            if names <= {s.rsplit("_bucket", 1)[0] for s in parse(text)} | set(parse(text)):
                return text
            time.sleep(0.5)
        return text

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()


def families(text: str) -> dict[str, set[str]]:
    """Metric family or sample name -> label names seen, from samples and from `# HELP` lines."""
    out: dict[str, set[str]] = {}
    for name, samples in parse(text).items():
        for s in samples:
            out.setdefault(name, set()).update(s.labels)
    for line in text.splitlines():
        if line.startswith("# HELP "):
            out.setdefault(line.split()[2], set())
    return out


def demo_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    demo = Demo(tmp_path_factory.mktemp("demo"))
    try:
        yield demo
    finally:
        demo.stop()
