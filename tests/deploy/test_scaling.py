"""docs/scaling.md, tested: the remote_write example is a config promtool accepts, and two "cluster"
Prometheus servers built from it ship the collector's series and the shipped recording rules' results,
each with its `cluster` label, into one central store (a real Prometheus with its remote-write receiver
standing in for Mimir or Thanos Receive, which take the same protocol)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kit import DEPLOY, RULES_DIR, Demo, need
from tests.helpers import REPO, free_port

EXAMPLE = DEPLOY / "prometheus" / "remote-write.example.yml"


def test_promtool_accepts_the_remote_write_example_with_a_cluster_label() -> None:
    res = subprocess.run(
        [need("promtool"), "check", "config", str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load(EXAMPLE.read_text())
    assert cfg["global"]["external_labels"]["cluster"]
    assert cfg["remote_write"][0]["url"].endswith("/api/v1/push")  # Mimir's push API
    assert cfg["rule_files"] == ["rules/*.yml"]  # alerts and recording rules stay local to the cluster


def test_scaling_doc_covers_what_the_issue_asks() -> None:
    text = (REPO / "docs" / "scaling.md").read_text()
    for topic in (
        "## Many pods",
        "## Many clusters",
        "## Retention",
        "## Recording rules",
        "## The global replica",
    ):
        assert topic in text, topic
    assert "remote-write.example.yml" in text and "test_outage_backfill.py" in text


def _query(base: str, q: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]["result"]
    except OSError:
        return []


def _prometheus(
    tmp: Path, name: str, config: dict[str, Any] | None, *flags: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg_path = tmp / f"{name}.yml"
    cfg_path.write_text(yaml.safe_dump(config or {"global": {"scrape_interval": "15s"}}))
    proc = subprocess.Popen(
        [
            need("prometheus"),
            f"--config.file={cfg_path}",
            f"--storage.tsdb.path={tmp / name}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / f"{name}.log").open("wb"),
    )
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.timeout(240)
def test_two_clusters_remote_write_into_one_store_apart_by_their_cluster_label(
    demo: Demo, tmp_path: Path
) -> None:
    demo.wait_for({"collector_build_info", "http_request_duration_seconds"})
    procs = []
    try:
        central, central_url = _prometheus(tmp_path, "central", None, "--web.enable-remote-write-receiver")
        procs.append(central)
        # the shipped rules at a 1 s cadence (a test of a minute cannot wait for 30 s groups)
        (tmp_path / "rules").mkdir()
        for path in RULES_DIR.glob("*.yml"):
            rules = yaml.safe_load(path.read_text())
            for group in rules["groups"]:
                group.pop("interval", None)
            (tmp_path / "rules" / path.name).write_text(yaml.safe_dump(rules))
        for cluster in ("eu-1", "us-1"):
            cfg = yaml.safe_load(EXAMPLE.read_text())
            cfg["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
            cfg["global"]["external_labels"]["cluster"] = cluster
            cfg["rule_files"] = [str(tmp_path / "rules" / "*.yml")]
            cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [demo.url.removeprefix("http://")]
            # Prometheus's own receiver path instead of Mimir's /api/v1/push; same protocol
            (rw,) = [r for r in cfg["remote_write"]]
            rw["url"] = f"{central_url}/api/v1/write"
            rw["queue_config"]["batch_send_deadline"] = "1s"
            proc, _ = _prometheus(tmp_path, cluster, cfg, "--storage.remote.flush-deadline=5s")
            procs.append(proc)
        deadline = time.monotonic() + 120
        clusters: set[str] = set()
        recorded: set[str] = set()
        while time.monotonic() < deadline and (len(clusters) < 2 or len(recorded) < 2):
            time.sleep(2)
            clusters = {r["metric"].get("cluster", "") for r in _query(central_url, "collector_build_info")}
            recorded = {
                r["metric"].get("cluster", "")
                for r in _query(central_url, "job_service_le:http_request_duration_seconds_bucket:rate5m")
            }
        logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
        assert clusters == {"eu-1", "us-1"}, logs
        # recording rules run in each cluster; their results arrive labelled too
        assert recorded == {"eu-1", "us-1"}, logs
        # a central query that spans clusters, the way a global dashboard reads them
        per_cluster = _query(central_url, "count by (cluster) (up{job='collector'})")
        assert {r["metric"]["cluster"]: r["value"][1] for r in per_cluster} == {"eu-1": "1", "us-1": "1"}
    finally:
        for proc in reversed(procs):  # the edges first: they flush their queues to the central store
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
