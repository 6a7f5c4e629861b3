"""Kubernetes manifests: valid offline (kubernetes-validate), native sidecar, restricted security, and the
PrometheusRule carrying exactly the shipped rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.kit import DEPLOY, RULES_DIR, need

K8S = DEPLOY / "kubernetes"
MANIFESTS = ["app-with-collector.yaml", "collector-global.yaml", "prometheusrule.yaml"]


def docs(name: str) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all((K8S / name).read_text())}


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    cmd = [need("kubernetes-validate"), "-k", "1.30.0", "--strict", *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_kubernetes_validate_passes_every_builtin_resource() -> None:
    res = validate(*(K8S / m for m in MANIFESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    for resource in ("deployment/shop", "service/shop-collector", "deployment/collector-global",
                     "persistentvolumeclaim/collector-global-state", "service/collector-global"):  # fmt: skip
        assert f"passed for resource {resource}" in out
    # kubernetes-validate has no schemas for the Prometheus Operator's CRDs; they are checked below
    assert "ERROR" not in out


def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path) -> None:
    # proves the validator really checks: a misspelt field fails strict validation
    broken = (
        (K8S / "app-with-collector.yaml")
        .read_text()
        .replace("shareProcessNamespace", "shareProcessNamespaces")
    )
    (tmp_path / "broken.yaml").write_text(broken)
    assert validate(tmp_path / "broken.yaml").returncode != 0


def _restricted(container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_app_pod_runs_the_collector_as_a_native_sidecar_sharing_logs_and_processes() -> None:
    d = docs("app-with-collector.yaml")
    pod = d["Deployment/shop"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    for probe, path in (
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
        ("startupProbe", "/health/live"),
    ):
        assert sidecar[probe]["httpGet"]["path"] == path
    _restricted(sidecar)
    _restricted(pod["containers"][0])
    logs = {m["name"]: m for m in sidecar["volumeMounts"]}["app-logs"]
    assert logs["readOnly"] is True
    assert {v["name"]: v for v in pod["volumes"]}["app-logs"]["emptyDir"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert "COLLECTOR_STRIPE__WEBHOOK_SECRETS" not in env and "COLLECTOR_GITHUB__WEBHOOK_SECRET" not in env
    monitor = d["ServiceMonitor/shop-collector"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert (
        monitor["selector"]["matchLabels"].items()
        <= d["Service/shop-collector"]["metadata"]["labels"].items()
    )


def test_global_sources_run_in_exactly_one_replica_that_never_overlaps() -> None:
    d = docs("collector-global.yaml")
    dep = d["Deployment/collector-global"]["spec"]
    assert dep["replicas"] == 1 and dep["strategy"]["type"] == "Recreate"
    (c,) = dep["template"]["spec"]["containers"]
    _restricted(c)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["COLLECTOR_STRIPE__WEBHOOK_SECRETS_FILE"].startswith("/etc/collector/secrets/")
    assert d["ServiceMonitor/collector-global"]["spec"]["endpoints"][0]["port"] == "http"


def test_prometheusrule_carries_exactly_the_shipped_rules_and_promtool_accepts_them(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(K8S / "prometheusrule.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    (rule,) = docs("prometheusrule.yaml").values()
    shipped = [g for p in sorted(RULES_DIR.glob("*.yml")) for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["spec"]["groups"] == shipped
    (tmp_path / "spec.yml").write_text(yaml.safe_dump(rule["spec"]))
    check = subprocess.run(
        [need("promtool"), "check", "rules", str(tmp_path / "spec.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
