"""Kubernetes manifests: valid offline (kubernetes-validate), native sidecar, restricted security, and the
PrometheusRule carrying exactly the shipped rules."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kit import DEPLOY, RULES_DIR, need

K8S = DEPLOY / "kubernetes"
MANIFESTS = ["namespace.yaml", "app-with-collector.yaml", "collector-global.yaml", "prometheusrule.yaml"]
#: An image pinned by digest (the shipped digests are placeholders of this form; see the manifests).
DIGEST = re.compile(r"^[\w./:-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


def docs(name: str) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all((K8S / name).read_text())}


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    cmd = [need("kubernetes-validate"), "-k", "1.30.0", "--strict", *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_kubernetes_validate_passes_every_builtin_resource() -> None:
    res = validate(*(K8S / m for m in MANIFESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    for resource in ("namespace/shop", "namespace/collector", "deployment/shop", "service/shop-collector",
                     "poddisruptionbudget/shop", "networkpolicy/shop-collector-metrics",
                     "deployment/collector-global", "persistentvolumeclaim/collector-global-state",
                     "service/collector-global", "service/collector-global-webhooks",
                     "ingress/collector-global-webhooks", "networkpolicy/collector-global",
                     "poddisruptionbudget/collector-global"):  # fmt: skip
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


@pytest.mark.quick
def test_app_pod_runs_the_collector_as_a_native_sidecar_that_cannot_block_or_unready_the_app() -> None:
    d = docs("app-with-collector.yaml")
    pod = d["Deployment/shop"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    # the kubelet starts the app once the sidecar has started (no startupProbe to wait for), and a
    # sidecar's readiness is part of the pod's: none here
    assert "startupProbe" not in sidecar and "readinessProbe" not in sidecar
    live = " ".join(sidecar["livenessProbe"]["exec"]["command"])
    assert "/health/live" in live and "/health/ready" not in live
    _restricted(sidecar)
    (app,) = pod["containers"]
    _restricted(app)
    assert app["livenessProbe"] and app["readinessProbe"]
    logs = {m["name"]: m for m in sidecar["volumeMounts"]}["app-logs"]
    assert logs["readOnly"] is True
    assert {v["name"]: v for v in pod["volumes"]}["app-logs"]["emptyDir"]["sizeLimit"] == "2Gi"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert "COLLECTOR_STRIPE__WEBHOOK_SECRETS" not in env and "COLLECTOR_GITHUB__WEBHOOK_SECRET" not in env
    monitor = d["ServiceMonitor/shop-collector"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert (
        monitor["selector"]["matchLabels"].items()
        <= d["Service/shop-collector"]["metadata"]["labels"].items()
    )
    assert d["PodDisruptionBudget/shop"]["spec"]["minAvailable"] == 1


def _supervisor(
    tmp_path: Path, fake_collector: str
) -> tuple[subprocess.Popen[bytes], Path, list[str], dict[str, str]]:
    """Run the sidecar's shell supervisor with a fake `collector` on PATH and /tmp moved to tmp_path."""
    (sidecar,) = docs("app-with-collector.yaml")["Deployment/shop"]["spec"]["template"]["spec"][
        "initContainers"
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "collector").write_text("#!/bin/sh\n" + fake_collector)
    (bin_dir / "collector").chmod(0o755)
    script = sidecar["args"][0].replace("/tmp/", f"{tmp_path}/")
    live = [c.replace("/tmp/", f"{tmp_path}/") for c in sidecar["livenessProbe"]["exec"]["command"]]
    # `python` as in the image (python:*-slim has it): this interpreter's directory first
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen([*sidecar["command"], script], env=env, stderr=subprocess.PIPE)
    return proc, tmp_path / "collector-exited", live, env


def test_a_collector_that_cannot_start_leaves_the_container_running_and_alive(tmp_path: Path) -> None:
    # a bad setting: `collector run` exits 2 at once; the container must stay up (not CrashLoopBackOff,
    # which would unready the app pod) and the liveness probe must not kill it
    proc, marker, live, env = _supervisor(tmp_path, 'echo "invalid setting" >&2; exit 2\n')
    try:
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None
        assert subprocess.run(live, capture_output=True, timeout=30, env=env).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert b"collector exited with 2" in proc.stderr.read()  # type: ignore[union-attr]


def test_the_supervisor_forwards_sigterm_so_the_collector_flushes_its_state(tmp_path: Path) -> None:
    flushed = tmp_path / "flushed"
    fake = f"trap 'echo ok > {flushed}; exit 0' TERM\nwhile :; do sleep 0.1; done\n"
    proc, marker, live, env = _supervisor(tmp_path, fake)
    time.sleep(1)
    assert proc.poll() is None and not marker.exists()
    # a running collector that does not answer /health/live (nothing listens here): liveness fails
    res = subprocess.run(live, capture_output=True, timeout=30, env=env, text=True)
    assert res.returncode == 1 and "Connection refused" in res.stderr, res.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert flushed.read_text() == "ok\n"


@pytest.mark.quick
def test_global_sources_run_in_exactly_one_replica_that_never_overlaps() -> None:
    d = docs("collector-global.yaml")
    dep = d["Deployment/collector-global"]["spec"]
    assert dep["replicas"] == 1 and dep["strategy"]["type"] == "Recreate"
    (c,) = dep["template"]["spec"]["containers"]
    _restricted(c)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["COLLECTOR_STRIPE__WEBHOOK_SECRETS_FILE"].startswith("/etc/collector/secrets/")
    # the pollers that backfill an outage are wired
    assert env["COLLECTOR_GITHUB__TOKEN_FILE"].startswith("/etc/collector/secrets/")
    assert env["COLLECTOR_GITHUB__REPOSITORIES"]
    assert env["COLLECTOR_STRIPE__API_KEY_FILE"].startswith("/etc/collector/secrets/")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["COLLECTOR_WEBHOOK_LISTEN"].endswith(f":{ports['webhooks']}")
    assert env["COLLECTOR_LISTEN"].endswith(f":{ports['metrics']}") and ports["webhooks"] != ports["metrics"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    monitor = d["ServiceMonitor/collector-global"]["spec"]["endpoints"][0]
    assert monitor["port"] == "metrics"
    assert {"targetLabel": "collector", "replacement": "global"} in monitor["relabelings"]
    # the Ingress reaches only the webhook Service, which carries only the webhook port
    ingress = d["Ingress/collector-global-webhooks"]["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"]["service"] for p in ingress] == [
        {"name": "collector-global-webhooks", "port": {"name": "webhooks"}}
    ]
    assert [p["targetPort"] for p in d["Service/collector-global-webhooks"]["spec"]["ports"]] == ["webhooks"]
    policy = d["NetworkPolicy/collector-global"]["spec"]
    assert sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"]) == [8080, 9464]
    assert d["PodDisruptionBudget/collector-global"]["spec"]["maxUnavailable"] == 1


@pytest.mark.quick
def test_every_image_is_pinned_by_digest_and_every_resource_has_a_namespace_and_cpu_limits() -> None:
    for name in ("app-with-collector.yaml", "collector-global.yaml"):
        for key, doc in docs(name).items():
            assert doc["metadata"]["namespace"] in {"shop", "collector"}, key
            if doc["kind"] != "Deployment":
                continue
            spec = doc["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                assert DIGEST.match(c["image"]), c["image"]
                assert c["imagePullPolicy"] == "Always"
                assert c["resources"]["limits"]["cpu"] and c["resources"]["requests"]["cpu"]
                assert c["livenessProbe"]


def test_checkov_finds_nothing_in_the_kubernetes_manifests() -> None:
    checkov = shutil.which("checkov") or os.environ.get("CHECKOV")
    if not checkov or not os.access(checkov, os.X_OK):
        import pytest

        pytest.skip(
            "checkov is not installed (.ci/run installs it in a venv of its own; not in the test extras)"
        )
    res = subprocess.run(
        [checkov, "-d", str(K8S), "--framework", "kubernetes", "--compact", "--quiet", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-5000:]
    assert "Failed checks: 0" in res.stdout


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
