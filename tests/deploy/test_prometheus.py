"""The shipped Prometheus config and alert rules: promtool-clean, unit-tested, annotated, with runbooks."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.kit import DEPLOY, RULES_DIR, alert_rules, need
from tests.helpers import REPO

PROM = DEPLOY / "prometheus"
#: The issue's alert set: the app's alerts mapped onto our metrics, then the collector's own.
EXPECTED = {
    "HighErrorRate": ("critical", "5m"),
    "HighResponseTime": ("warning", "10m"),
    "HighAuthenticationFailures": ("warning", "5m"),
    "StripeWebhookProcessingErrors": ("critical", "10m"),
    "StripeWebhooksMissing": ("critical", "15m"),
    "WebhookSignatureFailures": ("info", "15m"),
    "GitHubWebhookProcessingErrors": ("warning", "15m"),
    "LowSubscriptionCount": ("warning", "1h"),
    "WebSocketConnectionDrop": ("warning", "5m"),
    "SecurityEventsDetected": ("critical", "2m"),
    "HighRateLimitHits": ("warning", "5m"),
    "ServiceDown": ("critical", "1m"),
    "HighMemoryUsage": ("warning", "5m"),
    "HighChangeFailureRate": ("warning", "1h"),
    "HighRecoveryTime": ("warning", "5m"),
    "CollectorDown": ("critical", "2m"),
    "CollectorGlobalAbsent": ("critical", "5m"),
    "CollectorSourceDown": ("warning", "5m"),
    "LogTailLagging": ("warning", "10m"),
    "LogParseErrors": ("warning", "10m"),
    "StripeEventsStale": ("warning", "15m"),
    "CardinalityLimitHit": ("warning", None),
    "StateStoreReset": ("warning", None),
}


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_config_is_clean() -> None:
    res = run(need("promtool"), "check", "config", str(PROM / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 4 rule files found" in res.stdout


def test_promtool_check_rules_is_clean() -> None:
    res = run(need("promtool"), "check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml"))))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == 4


def test_promtool_rule_unit_tests_pass() -> None:
    tests = sorted((PROM / "tests").glob("*.test.yml"))
    res = run(need("promtool"), "test", "rules", *map(str, tests))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(tests) == 3


@pytest.mark.quick
def test_the_issues_alert_set_ships_with_its_severities_and_durations() -> None:
    got = {r["alert"]: (r["labels"]["severity"], r.get("for")) for r in alert_rules()}
    assert got == EXPECTED


@pytest.mark.quick
def test_every_alert_has_summary_description_and_a_runbook_section() -> None:
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbooks, re.M)
    }
    for rule in alert_rules():
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        # relative to the repository root (Alertmanager's collector.runbook_base and the dashboards'
        # runbook_base variable make it absolute), and the section exists
        url = ann["runbook_url"]
        assert url == f"docs/runbooks.md#{rule['alert'].lower()}"
        assert (REPO / url.split("#")[0]).is_file()
        assert rule["alert"].lower() in anchors, f"docs/runbooks.md has no section {rule['alert']}"


def test_every_alert_has_a_firing_case_and_a_quiet_case_in_the_unit_tests() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (PROM / "tests").glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
                for alert in case.get("exp_alerts") or []:
                    # expected labels and all three annotations are asserted, not just "it fired"
                    assert {"summary", "description", "runbook_url"} <= set(alert["exp_annotations"])
                    assert "severity" in alert["exp_labels"]
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set()
    assert names - quiet == set()


def test_one_bad_signature_case_asserts_every_shipped_alert_stays_quiet() -> None:
    tests = yaml.safe_load((PROM / "tests" / "webhooks.test.yml").read_text())["tests"]
    (case,) = [t for t in tests if t["name"].startswith("one bad-signature request fires no critical alert")]
    rule_files = {
        (PROM / "tests" / f).resolve()
        for f in yaml.safe_load((PROM / "tests" / "webhooks.test.yml").read_text())["rule_files"]
    }
    assert rule_files == {p.resolve() for p in RULES_DIR.glob("*.yml")}
    checked = {c["alertname"] for c in case["alert_rule_test"] if c["exp_alerts"] == []}
    assert checked == {r["alert"] for r in alert_rules()}
    assert all(c["exp_alerts"] == [] for c in case["alert_rule_test"])
    bot = [s for s in case["input_series"] if 'status="signature_failed"' in s["series"]]
    assert [s["values"] for s in bot] == ["_x10 1x50"]  # exactly one request


@pytest.mark.quick
def test_memory_alert_compares_with_the_app_containers_limit_in_the_manifest() -> None:
    limits = yaml.safe_load((RULES_DIR / "limits.rules.yml").read_text())["groups"][0]["rules"]
    (rule,) = [r for r in limits if r["record"] == "app:memory_limit_bytes"]
    manifest = next(yaml.safe_load_all((DEPLOY / "kubernetes" / "app-with-collector.yaml").read_text()))
    (app,) = [c for c in manifest["spec"]["template"]["spec"]["containers"] if c["name"] == "app"]
    assert app["resources"]["limits"]["memory"] == "1Gi"
    assert rule["expr"] == f"vector({1024**3})"
