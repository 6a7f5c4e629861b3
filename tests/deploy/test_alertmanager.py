"""The shipped Alertmanager config: amtool-clean, and each severity lands in the right Slack receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.deploy.kit import DEPLOY, alert_rules, need
from tests.helpers import free_port

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
RECEIVER = {
    "critical": "slack-critical",
    "warning": "slack-warning",
    "info": "slack-general",
    "": "slack-general",
}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("amtool"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_amtool_check_config_is_clean() -> None:
    res = amtool("check-config", str(CONFIG))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and "3 receivers" in res.stdout and "3 inhibit rules" in res.stdout


@pytest.mark.parametrize("severity", sorted(RECEIVER))
def test_each_severity_routes_to_its_receiver(severity: str) -> None:
    labels = ["alertname=HighErrorRate", "service=app"] + ([f"severity={severity}"] if severity else [])
    res = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={RECEIVER[severity]}",
        *labels,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == RECEIVER[severity]


def test_every_shipped_alert_lands_in_the_receiver_of_its_severity() -> None:
    for rule in alert_rules():
        sev = rule["labels"]["severity"]
        res = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={CONFIG}",
            f"alertname={rule['alert']}",
            f"severity={sev}",
        )
        assert res.stdout.strip() == RECEIVER[sev], rule["alert"]


def test_slack_url_comes_from_a_file_and_grouping_inhibition_and_repeat_match_the_runbooks() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    text = CONFIG.read_text()
    assert cfg["global"]["slack_api_url_file"].startswith("/etc/alertmanager/secrets/")
    assert "hooks.slack.com" not in text and "api_url:" not in text  # the URL is never committed
    assert {r["name"] for r in cfg["receivers"]} == {"slack-critical", "slack-warning", "slack-general"}
    channels = {r["name"]: r["slack_configs"][0]["channel"] for r in cfg["receivers"]}
    assert channels == {
        "slack-critical": "#alerts-critical",
        "slack-warning": "#alerts-warning",
        "slack-general": "#alerts",
    }
    assert cfg["route"]["group_by"] == ["alertname", "service"]
    assert cfg["route"]["repeat_interval"] == "12h"
    inhibits = {r["source_matchers"][0]: r for r in cfg["inhibit_rules"]}
    assert set(inhibits) == {
        'alertname="ServiceDown"',
        'alertname="CollectorDown"',
        'alertname="CollectorGlobalAbsent"',
    }
    names = {r["alert"] for r in alert_rules()}
    for rule in cfg["inhibit_rules"]:
        (target,) = rule["target_matchers"]
        muted = set(target.removeprefix('alertname=~"').removesuffix('"').split("|"))
        assert muted <= names, muted - names  # no typo silently mutes nothing
        assert "cluster" in rule["equal"]  # never across clusters sharing one Alertmanager
    # a down app mutes its symptoms, per service
    assert "WebSocketConnectionDrop" in inhibits['alertname="ServiceDown"']["target_matchers"][0]
    assert inhibits['alertname="ServiceDown"']["equal"] == ["cluster", "service"]


def _dead_app_alerts() -> list[dict[str, Any]]:
    """The alerts promtool says the shipped rules fire when the app dies (deploy/prometheus/tests)."""
    tests = yaml.safe_load((DEPLOY / "prometheus" / "tests" / "app.test.yml").read_text())["tests"]
    (case,) = [t for t in tests if t["name"].startswith("when the app dies")]
    out = []
    for check in case["alert_rule_test"]:
        for exp in check["exp_alerts"]:
            labels = {"alertname": check["alertname"], **exp["exp_labels"]}
            out.append({"labels": labels, "annotations": exp["exp_annotations"]})
    assert {a["labels"]["alertname"] for a in out} == {"ServiceDown", "WebSocketConnectionDrop"}
    return out


class _FakeSlack(BaseHTTPRequestHandler):
    """Records what Alertmanager posts to the Slack incoming-webhook URL."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def test_real_alertmanager_pages_once_for_a_dead_app_and_routes_each_severity(
    tmp_path: Path,
) -> None:
    slack = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSlack)
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    url_file = tmp_path / "slack-webhook-url"
    url_file.write_text(f"http://127.0.0.1:{slack.server_port}/services/T000/B000/XXXX\n")
    cfg = yaml.safe_load(CONFIG.read_text())
    # the shipped config, with the secret file in the temp dir and short waits so the test is quick
    cfg["global"]["slack_api_url_file"] = str(url_file)
    cfg["templates"] = [str(DEPLOY / "alertmanager" / "templates" / "*.tmpl")]
    cfg["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    (tmp_path / "am.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("prometheus-alertmanager") or need("alertmanager"),  # Debian names it so
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "am.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}/api/v2"
    # the dead app's two alerts exactly as promtool computes them, a symptom of another service (not
    # muted: inhibition is per service) and a ticket
    alerts = [
        *_dead_app_alerts(),
        {"labels": {"alertname": "WebSocketConnectionDrop", "service": "calm", "severity": "warning"}},
        {"labels": {"alertname": "WebhookSignatureFailures", "service": "app", "severity": "info"}},
    ]
    for a in alerts:
        a.setdefault(
            "annotations",
            {"summary": f"{a['labels']['alertname']} summary", "runbook_url": "docs/runbooks.md#x"},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                req = urllib.request.Request(
                    base + "/alerts", json.dumps(alerts).encode(), {"Content-Type": "application/json"}
                )
                urllib.request.urlopen(req, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "am.log").read_text()
                time.sleep(0.2)
        while len({m["channel"] for m in _FakeSlack.received}) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        with urllib.request.urlopen(base + "/alerts", timeout=5) as resp:
            state = {
                (a["labels"]["alertname"], a["labels"]["severity"], a["labels"]["service"]): a["status"]
                for a in json.loads(resp.read())
            }
    finally:
        proc.terminate()
        proc.wait(20)
        slack.shutdown()
    by_channel: dict[str, set[str]] = {}
    texts = []
    for msg in _FakeSlack.received:
        by_channel.setdefault(msg["channel"], set()).add(msg["attachments"][0]["title"])
        texts.append(msg["attachments"][0]["text"])
    # one page for the dead app; the other service's symptom and the ticket go to their channels
    assert by_channel == {
        "#alerts-critical": {"[FIRING] ServiceDown (app)"},
        "#alerts-warning": {"[FIRING] WebSocketConnectionDrop (calm)"},
        "#alerts": {"WebhookSignatureFailures (app)"},
    }
    assert any("Runbook: docs/runbooks.md#servicedown" in t for t in texts), texts
    dead = state[("WebSocketConnectionDrop", "warning", "app")]
    assert dead["state"] == "suppressed" and dead["inhibitedBy"]
    assert state[("WebSocketConnectionDrop", "warning", "calm")]["state"] == "active"
    assert state[("ServiceDown", "critical", "app")]["state"] == "active"
