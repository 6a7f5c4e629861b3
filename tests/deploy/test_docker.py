"""Dockerfile (hadolint-clean, hardened) and docker-compose.yml (validated by docker-compose config).

Docker itself cannot run on our machines: these tests check the files with the tools that consume
them, they do not build or start containers."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.kit import need
from tests.helpers import REPO


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    res = subprocess.run(
        [need("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == ""


@pytest.mark.quick
def test_dockerfile_is_multi_stage_slim_non_root_exec_form_with_healthcheck_and_labels() -> None:
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2 and all("-slim" in f for f in froms)
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r'^ENTRYPOINT \["collector"\]', text, re.M)  # exec form: SIGTERM reaches Python
    assert re.search(r"^HEALTHCHECK .*\n.*/health/live", text, re.M)
    assert re.search(r"^EXPOSE 9464", text, re.M)
    for label in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's volumes as `docker-compose config` prints them."""
    out = {}
    for v in service["volumes"]:
        source, target, mode = v.rsplit(":", 2) if v.count(":") >= 2 else (*v.split(":"), "rw")
        out[target] = (source, mode.split(",")[0])
    return out


def compose_config() -> dict[str, Any]:
    """docker-compose.yml as `docker-compose config` resolves it (fails the test when it is invalid)."""
    res = subprocess.run(
        [need("docker-compose"), "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    loaded: dict[str, Any] = yaml.safe_load(res.stdout)
    return loaded


def test_docker_compose_config_validates_the_whole_stack() -> None:
    services = compose_config()["services"]
    assert set(services) == {"app", "collector", "prometheus", "alertmanager", "grafana", "node-exporter"}
    collector = services["collector"]
    assert collector["pid"] == "service:app"
    assert mounts(collector)["/var/log/app"] == ("app-logs", "ro")
    assert mounts(services["app"])["/var/log/app"] == ("app-logs", "rw")
    env = collector["environment"]
    assert env["COLLECTOR_LOGS__PATHS"] == "/var/log/app/*.log"
    assert all(s.get("read_only") and s.get("cap_drop") == ["ALL"] for s in services.values())
    grafana = set(mounts(services["grafana"]))
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards/collector"} <= grafana
    assert mounts(services["prometheus"])["/etc/prometheus"] == (str(REPO / "deploy" / "prometheus"), "ro")


def test_compose_publishes_only_on_loopback_reads_passwords_from_files_and_keeps_prometheus_safe() -> None:
    cfg = compose_config()
    published = [(name, p) for name, s in cfg["services"].items() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for _n, p in published), published
    grafana = cfg["services"]["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert [s if isinstance(s, str) else s["source"] for s in grafana["secrets"]] == [
        "grafana_admin_password"
    ]
    assert cfg["secrets"]["grafana_admin_password"]["file"].endswith(".secrets/grafana-admin-password")
    assert ".secrets/" in (REPO / ".gitignore").read_text().split()
    flags = cfg["services"]["prometheus"]["command"]
    assert not {"--web.enable-admin-api", "--web.enable-lifecycle"} & set(flags)
    (retention,) = [f.split("=")[1] for f in flags if f.startswith("--storage.tsdb.retention.time=")]
    assert retention.endswith("d") and int(retention[:-1]) >= 30  # the longest DORA window
