"""Secrets never leave: a full run of the real collector with every secret configured, poked with wrong
signatures, wrong tokens and wrong passwords, then every byte it wrote (logs, HTTP bodies and headers,
check-config, start-up errors) is scanned for the secret values."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import CollectorProcess, free_port
from tests.websecurity_support import HASH, PASSWORD, write_config

SECRETS = {
    "COLLECTOR_GITHUB__WEBHOOK_SECRET": "gh-hook-secret-7f3a9c",
    "COLLECTOR_GITHUB__TOKEN": "ghp_tokenvalue_91c2d4e5",
    "COLLECTOR_DEPLOYMENTS__TOKEN": "deploy-token-55aa66bb",
    "COLLECTOR_STRIPE__WEBHOOK_SECRETS": "whsec_secretvalue_0c0ffee",
    "COLLECTOR_STRIPE__API_KEY": "sk_test_apikeyvalue_1234",
    "COLLECTOR_WEBSOCKET__TOKEN": "ws-bearer-token-abcdef",
}


def _call(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.status).encode() + bytes(str(resp.headers), "latin-1") + resp.read()
    except urllib.error.HTTPError as exc:
        return str(exc.code).encode() + bytes(str(exc.headers), "latin-1") + exc.read()


def test_no_secret_appears_in_any_output_of_a_full_run(tmp_path: Path) -> None:
    dead = free_port()  # APIs that refuse connections: their errors get logged, with URLs but no keys
    web = write_config(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {HASH}\n")
    env = {
        **SECRETS,
        "COLLECTOR_GITHUB__REPOSITORIES": "octo/shop",
        "COLLECTOR_GITHUB__API_URL": f"http://127.0.0.1:{dead}",
        "COLLECTOR_STRIPE__API_BASE": f"http://127.0.0.1:{dead}",
        "COLLECTOR_STRIPE__POLL_INTERVAL": "0.2",
        "COLLECTOR_WEBSOCKET__TARGETS": f"ws://127.0.0.1:{dead}/ws",
        "COLLECTOR_WEBSOCKET__INTERVAL": "0.2",
        "COLLECTOR_WEB_CONFIG_FILE": str(web),
        "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
        "COLLECTOR_LOG_LEVEL": "DEBUG",
    }
    outputs: list[bytes] = []
    proc = CollectorProcess(env, tmp_path)
    try:
        proc.wait_live()
        good = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
        wrong = {
            "Authorization": "Basic "
            + base64.b64encode(b"prometheus:" + SECRETS["COLLECTOR_GITHUB__TOKEN"].encode()).decode()
        }
        for path in ("/", "/health", "/health/ready", "/metrics", "/dora"):
            outputs.append(_call(proc.url + path, headers=good))
            outputs.append(_call(proc.url + path, headers=wrong))
        body = b'{"zen": "x"}'
        outputs.append(
            _call(
                proc.url + "/webhooks/github",
                body,
                {
                    "X-GitHub-Event": "ping",
                    "X-GitHub-Delivery": "d1",
                    "X-Hub-Signature-256": "sha256=" + "0" * 64,
                },
            )
        )
        outputs.append(_call(proc.url + "/webhooks/stripe", body, {"Stripe-Signature": "t=1,v1=" + "0" * 64}))
        outputs.append(_call(proc.url + "/deployments", body, {"Authorization": "Bearer wrong-token"}))
        outputs.append(_call(proc.url + "/probe?target=ws://127.0.0.1:1/x", headers=good))
        time.sleep(1.5)  # let the pollers and probes fail a few times (and log it)
        outputs.append(_call(proc.url + "/health", headers=good))
        outputs.append(_call(proc.url + "/metrics", headers=good))
    finally:
        proc.terminate()
    outputs.append(proc.stderr().encode())
    outputs.append(proc.proc.stdout.read() if proc.proc.stdout else b"")
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("COLLECTOR_")}
    check = subprocess.run(
        [sys.executable, "-m", "collector", "check-config"],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
    )
    assert check.returncode == 0, check.stderr
    outputs += [check.stdout, check.stderr]
    broken = subprocess.run(
        [sys.executable, "-m", "collector", "check-config"],
        env={**base, **env, "COLLECTOR_LISTEN": "nope", "COLLECTOR_GITHUB__REPOSITORIES": ""},
        cwd=tmp_path,
        capture_output=True,
    )
    assert broken.returncode == 2
    outputs += [broken.stdout, broken.stderr]
    everything = b"\n".join(outputs)
    # The scan sees real output: the failures were logged and check-config printed the secret fields.
    assert b"stripe events poll failed" in everything and b"webhook_secret" in everything
    for name, secret in {**SECRETS, "basic auth password": PASSWORD, "bcrypt hash": HASH}.items():
        assert secret.encode() not in everything, f"{name} leaked"
        assert base64.b64encode(secret.encode()) not in everything, f"{name} leaked (base64)"
