"""Adding a source takes one module and one registry line: a toy queue-depth source, registered in a
registry handed to the app builder, gets its settings from `COLLECTOR_QUEUE__*`, its table from the
store, its routes' declared auth policies enforced by the guard, and its state on /health."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web

from collector.routes import Route
from collector.settings import ConfigError, load_settings, settings_class
from collector.source import SourceBase, SourceContext
from collector.sources import SOURCES, SourceSpec
from tests.helpers import make_settings, registry_for, value
from tests.toysource import QueueSettings, QueueSource
from tests.websecurity_support import HASH, PASSWORD, basic, serve_guarded

# The one line: the real sources plus the toy, handed to the app builder (no global is changed).
REGISTRY = SOURCES.plus(SourceSpec("queue", lambda: QueueSettings, lambda: QueueSource))


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str):
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  prometheus: {HASH}\n")
    for name in [n for n in os.environ if n.startswith("COLLECTOR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLLECTOR_LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("COLLECTOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLLECTOR_WEB_CONFIG_FILE", str(cfg))
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    return load_settings(env_file=None, cls=settings_class(REGISTRY))


def test_toy_settings_come_from_its_own_env_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings(tmp_path, monkeypatch, COLLECTOR_QUEUE__TOKEN="tok-123456", COLLECTOR_QUEUE__MAX_DEPTH="2")
    queue = s.section("queue", QueueSettings)
    assert (queue.is_enabled(), queue.token.get_secret_value(), queue.max_depth) == (True, "tok-123456", 2)
    # Off without its token, like every real source; a bad value names its variable.
    assert _settings(tmp_path, monkeypatch).section("queue", QueueSettings).is_enabled() is False
    with pytest.raises(ConfigError, match="COLLECTOR_QUEUE__MAX_DEPTH"):
        _settings(tmp_path, monkeypatch, COLLECTOR_QUEUE__TOKEN="t", COLLECTOR_QUEUE__MAX_DEPTH="0")
    # The default registry has no such section: the toy changed nothing global.
    assert "queue" not in SOURCES and "queue" not in type(load_settings(env_file=None)).model_fields


async def test_toy_routes_get_the_auth_policy_they_declare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(
        tmp_path, monkeypatch, COLLECTOR_QUEUE__TOKEN="tok-123456", COLLECTOR_QUEUE__MAX_DEPTH="1"
    )
    token = {"Authorization": "Bearer tok-123456"}
    async with serve_guarded(settings, REGISTRY) as srv:
        # token: the guard checks the declared bearer token; basic credentials are not enough.
        assert (await srv.request("POST", "/queue/jobs", data=b"a"))[0] == 401
        assert (
            await srv.request("POST", "/queue/jobs", data=b"a", headers={"Authorization": "Bearer nope"})
        )[0] == 401
        assert (await srv.request("POST", "/queue/jobs", data=b"a", headers=basic("prometheus", PASSWORD)))[
            0
        ] == 401
        status, _h, body = await srv.request("POST", "/queue/jobs", data=b"job-1", headers=token)
        assert (status, json.loads(body)) == (200, {"depth": 1})
        # public: no credentials needed.
        status, _h, body = await srv.request("GET", "/queue/depth")
        assert (status, json.loads(body)) == (200, {"depth": 1})
        # basic: refused without credentials (and with the token), served with them.
        assert (await srv.request("GET", "/queue/jobs"))[0] == 401
        assert (await srv.request("GET", "/queue/jobs", headers=token))[0] == 401
        status, _h, body = await srv.request("GET", "/queue/jobs", headers=basic("prometheus", PASSWORD))
        assert (status, json.loads(body)) == (200, {"jobs": ["job-1"]})
        # A crafted path cannot borrow the public route's policy: the router's match decides.
        for path in ("/queue/depth/../jobs", "/queue/depth/%2e%2e/jobs", "/queue//depth/../jobs"):
            assert (await srv.request("GET", path))[0] in (401, 404), path
        # Its state, reasons and recent events on /health (behind basic auth, as for every source).
        await srv.request("POST", "/queue/jobs", data=b"job-2", headers=token)
        status, _h, body = await srv.request("GET", "/health", headers=basic("prometheus", PASSWORD))
        queue = json.loads(body)["sources"]["queue"]
        assert (status, queue["state"], queue["reasons"]) == (200, "degraded", ["queue depth 2 over 1"])
        samples = await srv.metrics(headers=basic("prometheus", PASSWORD))
        assert value(samples, "queue_depth") == 2
        assert value(samples, "queue_jobs_pushed_total") == 2
        assert value(samples, "collector_source_errors_total", source="queue", reason="store") == 0
    # Its table was created by the store from the declaration (the source runs no DDL).
    with sqlite3.connect(settings.effective_state_path) as conn:
        assert [r[0] for r in conn.execute("SELECT body FROM queue_jobs ORDER BY id")] == ["job-1", "job-2"]


def test_a_registry_refuses_what_it_cannot_wire() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        REGISTRY.plus(SourceSpec("queue", lambda: QueueSettings, lambda: QueueSource))
    with pytest.raises(TypeError, match="named 'queue'"):
        SourceSpec("other", lambda: QueueSettings, lambda: QueueSource).load()


class _Lookalike(SourceBase):
    """Routes whose paths look like the old exemptions but whose declarations say otherwise."""

    name = "lookalike"

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        async def ok(_request: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        return [
            Route("GET", "/webhooks/looks-exempt", ok, auth="basic"),
            Route("GET", "/deployments", ok, auth="basic"),
            Route("GET", "/open/{anything}", ok, auth="public"),
        ]

    async def run(self) -> None:
        self.ctx.started()
        await self.ctx.stop.wait()


async def test_the_declaration_decides_never_the_path(tmp_path: Path) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  prometheus: {HASH}\n")
    registry = registry_for(lookalike=_Lookalike)
    async with serve_guarded(make_settings(tmp_path, registry, web_config_file=cfg), registry) as srv:
        # /webhooks/* and /deployments were exempt by path; declared basic, they ask for credentials.
        for path in ("/webhooks/looks-exempt", "/deployments"):
            assert (await srv.request("GET", path))[0] == 401, path
            assert (await srv.request("GET", path, headers=basic("prometheus", PASSWORD)))[0] == 200, path
        # A public route is public on any path, and lends nothing to what its path reaches.
        assert (await srv.request("GET", "/open/x"))[0] == 200
        assert (await srv.request("GET", "/open/x/../../metrics"))[0] == 401
