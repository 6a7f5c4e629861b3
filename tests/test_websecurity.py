"""Endpoint security with real clients: TLS, mTLS and basic auth from an exporter-toolkit web config,
headers, reloads, the webhook listener, and the config file's validation (pure and via promtool)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from collector.settings import ConfigError, HttpSettings, load_settings
from collector.web.auth import DUMMY_HASH, BasicAuth, parse_basic_header
from collector.web.config import WebConfigError, parse_web_config
from tests.helpers import REPO, free_port, value
from tests.websecurity_support import (
    HASH,
    PASSWORD,
    basic,
    echo_settings,
    make_pki,
    serve_guarded,
    write_config,
)

AUTH = basic("prometheus", PASSWORD)


# -- the config file, pure ------------------------------------------------------------------------


@pytest.mark.quick
def test_full_config_parses_with_paths_relative_to_the_file() -> None:
    cfg = parse_web_config(
        f"""
tls_server_config:
  cert_file: server.crt
  key_file: /abs/server.key
  client_ca_file: ca.crt
  client_auth_type: RequireAndVerifyClientCert
  min_version: TLS13
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: {HASH}
""",
        Path("/etc/collector"),
    )
    assert cfg.tls is not None
    assert cfg.tls.cert_file == Path("/etc/collector/server.crt")
    assert cfg.tls.key_file == Path("/abs/server.key")
    assert cfg.tls.client_auth == ssl.CERT_REQUIRED
    assert cfg.tls.min_version == ssl.TLSVersion.TLSv1_3
    assert dict(cfg.headers) == {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}
    assert cfg.users == {"prometheus": HASH.encode()}


@pytest.mark.quick
def test_empty_file_and_empty_tls_block_mean_plain_http_without_auth() -> None:
    for text in ("", "tls_server_config: {}\n", "http_server_config:\n  headers: {}\n"):
        cfg = parse_web_config(text)
        assert cfg.tls is None and not cfg.users and not cfg.headers


@pytest.mark.quick
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: [\n", "not valid YAML"),
        ("- a\n", "expected a mapping"),
        ("tls_server_config:\n  cert_file: a.crt\n", "missing key_file"),
        ("tls_server_config:\n  key_file: a.key\n", "missing cert_file"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n", "unknown TLS version"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n",
            "invalid ClientAuth",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
            "not supported",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
            "without a client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
            "lower than min_version",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "not supported",
        ),
        ("tls_server_config:\n  certfile: a\n", "unknown field certfile"),
        ("http_server_config:\n  headers:\n    X-Powered-By: me\n", "can not be configured"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "invalid value"),
        ('http_server_config:\n  headers:\n    Content-Security-Policy: "a\\nb"\n', "single-line"),
        ("basic_auth_users:\n  alice: plaintext-password\n", "not a bcrypt hash"),
        ("basic_auth_users:\n  'a:b': x\n", "without ':'"),
        ("basic_auth: {}\n", "unknown field basic_auth"),
    ],
)
def test_each_invalid_config_is_rejected_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(WebConfigError, match=message) as info:
        parse_web_config(text)
    assert "plaintext-password" not in str(info.value)


@pytest.mark.quick
def test_config_errors_name_the_env_var_and_never_echo_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write_config(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {HASH[:-3]}\n")
    monkeypatch.setenv("COLLECTOR_WEB_CONFIG_FILE", str(bad))
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert info.value.lines[0].startswith("invalid setting COLLECTOR_WEB_CONFIG_FILE=")
    assert "not a bcrypt hash" in info.value.lines[0]
    assert HASH[:-3] not in str(info.value)
    missing = tmp_path / "certs-missing.yml"
    write_config(missing, "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
    monkeypatch.setenv("COLLECTOR_WEB_CONFIG_FILE", str(missing))
    with pytest.raises(ConfigError, match="cannot load cert_file"):
        load_settings(None)


@pytest.mark.quick
def test_http_limits_reject_nonsense_with_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_HTTP__MAX_BODY_BYTES", "10")
    monkeypatch.setenv("COLLECTOR_WEBHOOK_LISTEN", "nowhere")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    text = "\n".join(info.value.lines)
    assert "COLLECTOR_HTTP__MAX_BODY_BYTES='10'" in text or "COLLECTOR_HTTP__MAX_BODY_BYTES=10" in text
    assert "COLLECTOR_WEBHOOK_LISTEN='nowhere'" in text
    assert HttpSettings().max_body_bytes == 5 * 1024 * 1024


def test_example_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/run installs Debian's prometheus package)")
    example = REPO / "config" / "web-config.example.yml"
    # The example names certificate files relative to itself; promtool loads them, so make real ones.
    make_pki(tmp_path, "collector")
    shutil.copy(example, tmp_path / "web-config.yml")
    out = subprocess.run(
        [promtool, "check", "web-config", str(tmp_path / "web-config.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    parse_web_config(example.read_text(), tmp_path)  # and the collector accepts it too


# -- basic auth, pure ----------------------------------------------------------------------------


@pytest.mark.quick
def test_basic_header_parsing_rejects_every_malformed_shape() -> None:
    assert parse_basic_header(AUTH["Authorization"]) == ("prometheus", PASSWORD.encode())
    assert parse_basic_header("basic " + AUTH["Authorization"][6:]) == ("prometheus", PASSWORD.encode())
    for bad in (None, "", "Bearer x", "Basic", "Basic !!!", "Basic " + "bm9jb2xvbg==", "Basic /w=="):
        assert parse_basic_header(bad) is None


@pytest.mark.quick
def test_unknown_users_pay_a_dummy_bcrypt_check_and_results_are_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from collector.web import auth as auth_mod

    seen: list[bytes] = []
    real = auth_mod._checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        seen.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(auth_mod, "_checkpw", spy)
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.check_sync("prometheus", PASSWORD.encode()) is True
    assert auth.check_sync("prometheus", PASSWORD.encode()) is True  # cached: no second bcrypt
    assert auth.check_sync("prometheus", b"wrong") is False
    assert auth.check_sync("prometheus", b"wrong") is False  # failures are cached too (apart)
    assert auth.check_sync("mallory", PASSWORD.encode()) is False  # makes the dummy: a bcrypt hashpw
    assert auth.check_sync("mallory", b"other") is False  # checks against it
    assert auth.check_sync("prometheus", PASSWORD.encode() + b"\x00") is False
    dummy = auth._dummy
    assert dummy is not None and dummy.startswith(b"$2b$04$")  # the highest configured cost
    assert seen == [HASH.encode(), HASH.encode(), dummy, HASH.encode()]
    # The dummy hash itself must never authenticate anyone, whatever they send.
    assert BasicAuth({}).check_sync("", b"") is False


@pytest.mark.quick
def test_auth_cache_is_bounded_and_keyed_on_the_hash() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()}, cache_size=2)
    assert auth.check_sync("prometheus", PASSWORD.encode())
    assert len(auth._ok) == 1
    rotated = BasicAuth({"prometheus": DUMMY_HASH})  # same user, new hash: the old success means nothing
    assert rotated.check_sync("prometheus", PASSWORD.encode()) is False


# -- real listeners ------------------------------------------------------------------------------


async def test_tls_serves_metrics_to_a_client_that_trusts_the_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cfg = write_config(
        tmp_path / "web.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    )
    async with serve_guarded(echo_settings(tmp_path, web_config_file=cfg)) as srv:
        samples = await srv.metrics(ssl_ctx=pki.client_ctx())
        assert value(samples, "collector_web_config_last_reload_successful") == 1.0
        # A client that does not trust the CA refuses the connection.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await srv.request("GET", "/metrics", ssl_ctx=ssl.create_default_context())
        # Plain HTTP to the TLS port gets no HTTP answer.
        with pytest.raises(aiohttp.ClientError):
            await srv.request("GET", "/metrics")


async def test_tls_min_version_refuses_older_clients(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cfg = write_config(
        tmp_path / "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n",
    )
    async with serve_guarded(echo_settings(tmp_path, web_config_file=cfg)) as srv:
        old = pki.client_ctx(maximum_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(aiohttp.ClientConnectorError):
            await srv.request("GET", "/metrics", ssl_ctx=old)
        assert (await srv.request("GET", "/metrics", ssl_ctx=pki.client_ctx()))[0] == 200


async def test_mtls_requires_a_client_certificate_from_the_client_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cfg = write_config(
        tmp_path / "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: client-ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    async with serve_guarded(echo_settings(tmp_path, web_config_file=cfg)) as srv:
        assert (await srv.request("GET", "/metrics", ssl_ctx=pki.client_ctx(cert=True)))[0] == 200
        with pytest.raises(aiohttp.ClientError):
            await srv.request("GET", "/metrics", ssl_ctx=pki.client_ctx(cert=False))
        # A certificate from a CA the server does not trust is refused too.
        import trustme

        stranger = trustme.CA().issue_cert("intruder@example.test")
        ctx = pki.client_ctx()
        stranger.configure_cert(ctx)
        with pytest.raises(aiohttp.ClientError):
            await srv.request("GET", "/metrics", ssl_ctx=ctx)
        # The server kept serving through the failed handshakes.
        assert (await srv.request("GET", "/health/live", ssl_ctx=pki.client_ctx(cert=True)))[0] == 200


async def test_basic_auth_guards_everything_but_webhook_routes(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "web.yml",
        f"basic_auth_users:\n  prometheus: {HASH}\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n",
    )
    async with serve_guarded(echo_settings(tmp_path, web_config_file=cfg)) as srv:
        for path in ("/metrics", "/", "/health", "/health/ready", "/nope"):
            status, headers, body = await srv.request("GET", path)
            assert status == 401, path
            assert headers["WWW-Authenticate"] == 'Basic realm="collector"'
            assert headers["X-Frame-Options"] == "deny"  # configured headers go on refusals too
            assert body == b"401 Unauthorized\n"
        assert (await srv.request("GET", "/metrics", headers=basic("prometheus", "wrong")))[0] == 401
        assert (await srv.request("GET", "/metrics", headers=basic("mallory", PASSWORD)))[0] == 401
        # Dot segments and encodings cannot borrow the webhook exemption.
        for trick in ("/webhooks/../metrics", "/webhooks/%2e%2e/metrics", "/webhooks%2F..%2Fmetrics"):
            status, _h, _b = await srv.request("GET", trick)
            assert status == 401, trick  # auth is checked before routing answers 404
        status, headers, _ = await srv.request("GET", "/metrics", headers=AUTH)
        assert status == 200
        assert headers["X-Content-Type-Options"] == "nosniff"
        # Webhook routes check their own signatures: no basic auth.
        assert (await srv.request("POST", "/webhooks/test", data=b"{}"))[0] == 200
        assert (await srv.request("POST", "/deployments", data=b"{}"))[0] == 200
        samples = await srv.metrics(headers=AUTH)
        # 5 paths + wrong password + unknown user + 3 tricks.
        assert value(samples, "collector_http_rejected_total", listener="main", reason="unauthorized") == 10.0
        assert value(samples, "collector_http_requests_total", listener="main", code="401") == 10.0
        # /metrics and the two webhooks (a scrape is counted once it has been answered).
        assert value(samples, "collector_http_requests_total", listener="main", code="200") == 3.0


async def test_web_config_changes_are_applied_and_bad_edits_keep_the_old_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {HASH}\n")
    settings = echo_settings(tmp_path, web_config_file=cfg, http=HttpSettings(config_reload_interval=0.05))
    async with serve_guarded(settings) as srv:
        assert (await srv.request("GET", "/metrics"))[0] == 401
        # A broken edit (an editor's half-written save): counted, logged, the old users still work.
        cfg.write_text("basic_auth_users:\n  prometheus: [\n")
        samples = await _wait_metric(srv, "collector_web_config_reloads_total", 1.0, result="failure")
        assert value(samples, "collector_web_config_last_reload_successful") == 0.0
        assert (await srv.request("GET", "/metrics", headers=AUTH))[0] == 200
        # The fixed file (auth removed) applies: /metrics is open again.
        cfg.write_text("http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n")
        samples = await _wait_metric(
            srv, "collector_web_config_reloads_total", 1.0, result="success", auth=True
        )
        assert value(samples, "collector_web_config_last_reload_successful") == 1.0
        status, headers, _ = await srv.request("GET", "/metrics")
        assert status == 200 and headers["X-Frame-Options"] == "sameorigin"
        assert value(samples, "collector_web_config_reloads_total", result="failure") == 1.0  # reported once


async def _wait_metric(srv, name: str, want: float, auth: bool = False, **labels: str):  # type: ignore[no-untyped-def]
    for _ in range(400):
        for headers in ({}, AUTH) if auth else (AUTH, {}):
            status, _h, body = await srv.request("GET", "/metrics", headers=headers)
            if status == 200:
                from tests.helpers import parse

                samples = parse(body.decode())
                if value(samples, name, **labels) == want:
                    return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}{labels} never reached {want}")


async def test_certificate_rotation_and_tls_switch_keep_the_port(tmp_path: Path) -> None:
    first = make_pki(tmp_path / "a")
    second = make_pki(tmp_path / "b")
    for name in ("server.crt", "server.key"):
        shutil.copy(first.dir / name, tmp_path / name)
    cfg = write_config(
        tmp_path / "web.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    )
    async with serve_guarded(echo_settings(tmp_path, web_config_file=cfg)) as srv:
        port = srv.sites[0].address[1]
        # A client holding a keep-alive connection across the rotation.
        async with aiohttp.ClientSession() as session:
            url = srv.url(scheme="https") + "/health/live"
            old_client = first.client_ctx()  # the pool reuses a connection only for the same context
            async with session.get(url, ssl=old_client) as resp:
                assert resp.status == 200
            # cert-manager style: the files change in place, the YAML does not.
            for name in ("server.crt", "server.key"):
                shutil.copy(second.dir / name, tmp_path / name)
            assert await srv.guard.reload() is True
            async with session.get(url, ssl=old_client) as resp:  # the open connection lives on
                assert resp.status == 200
        assert srv.sites[0].address[1] == port
        assert (await srv.request("GET", "/metrics", ssl_ctx=second.client_ctx()))[0] == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await srv.request("GET", "/metrics", ssl_ctx=first.client_ctx())
        # Turning TLS off applies without a restart as well.
        cfg.write_text("")
        assert await srv.guard.reload() is True
        assert (await srv.request("GET", "/metrics"))[0] == 200
        assert await srv.guard.reload() is None  # unchanged: nothing to do


async def test_webhook_listener_serves_only_webhooks_without_auth(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {HASH}\n")
    settings = echo_settings(tmp_path, web_config_file=cfg, webhook_listen=f"127.0.0.1:{free_port()}")
    async with serve_guarded(settings) as srv:
        assert (await srv.request("POST", "/webhooks/test", "webhook", data=b"{}"))[0] == 200
        assert (await srv.request("POST", "/deployments", "webhook", data=b"{}"))[0] == 200
        for path in ("/metrics", "/", "/health", "/nope"):
            assert (await srv.request("GET", path, "webhook"))[0] == 404, path
            assert (await srv.request("GET", path, "webhook", headers=AUTH))[0] == 404, path
        # The internal listener still serves everything, behind auth.
        assert (await srv.request("POST", "/webhooks/test", data=b"{}"))[0] == 200
        samples = await srv.metrics(headers=AUTH)
        assert (
            value(samples, "collector_http_rejected_total", listener="webhook", reason="not_webhook") == 8.0
        )
        assert value(samples, "collector_http_requests_total", listener="webhook", code="200") == 2.0
        assert srv.source.hits == 3


async def test_webhook_listener_can_share_the_certificate_without_asking_for_client_certs(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    cfg = write_config(
        tmp_path / "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: client-ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    settings = echo_settings(
        tmp_path,
        web_config_file=cfg,
        webhook_listen=f"127.0.0.1:{free_port()}",
        http=HttpSettings(webhook_tls=True),
    )
    async with serve_guarded(settings) as srv:
        status, _h, _b = await srv.request(
            "POST", "/webhooks/test", "webhook", ssl_ctx=pki.client_ctx(), data=b"{}"
        )
        assert status == 200
        with pytest.raises(aiohttp.ClientError):
            await srv.request("GET", "/metrics", ssl_ctx=pki.client_ctx())
