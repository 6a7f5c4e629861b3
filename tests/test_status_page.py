"""The status page as an operator's browser shows it: headless Chromium (Debian's `chromium`) renders `/`
for a known state; the test asserts on the rendered DOM and keeps a screenshot in tests/artifacts/."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import REPO, make_settings, serve, value
from tests.sources.stripe_helpers import SECRET, deliver, event, post
from tests.sources.websocket_helpers import echo, ws_server
from tests.status_helpers import health, missing_pid, until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "tests" / "artifacts"  # gitignored; CI keeps it as a test artifact
GITHUB_SECRET = "github-status-page-secret"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium)")


class Tables(HTMLParser):
    """Every `<table id=...>` of a document as rows of cell texts; every link and form."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "form":
            self.forms.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> list[dict[str, str]]:
        """Rows of a table as dicts keyed by its header cells."""
        head, *body = self.tables[table]
        return [dict(zip(head, row, strict=False)) for row in body]


async def chromium(*args: str) -> bytes:
    """Run headless Chromium as root in a container can: no sandbox, no GPU, no network chatter."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        return out


async def github_ping(url: str) -> int:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    headers = {
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "d-ping-1",
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/webhooks/github", data=body, headers=headers) as r,
    ):
        return r.status


async def ci_deployment(url: str, token: str) -> int:
    body = {
        "repository": "octo/shop",
        "environment": "production",
        "sha": "abc123",
        "status": "success",
        "id": "ci-1",
    }
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, s.post(url + "/deployments", json=body, headers=headers) as r:
        return r.status


async def test_status_page_in_chromium_shows_sources_files_deliveries_and_probes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app_log = logs / "app.log"
    lines = [
        {
            "level": "info",
            "message": "http_request",
            "method": "GET",
            "route": "/",
            "status": 200,
            "duration_ms": 3,
        }
    ] * 5
    app_log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    # A line still being written (no newline yet) is not read: that file lags by its bytes.
    partial = b'{"level": "info", "message": "http_req'
    (logs / "worker.log").write_bytes(partial)
    pid = missing_pid()
    async with ws_server(echo) as ws_port:
        settings = make_settings(
            tmp_path,
            process={"pid": pid, "interval": 0.2},
            logs={"paths": [str(logs / "*.log")], "preset": ["winston"], "start_at": "beginning"},
            stripe={"webhook_secrets": [SECRET]},
            github={"webhook_secret": GITHUB_SECRET},
            deployments={"token": "ci-token"},
            websocket={
                "targets": [{"url": f"ws://127.0.0.1:{ws_port}/ws", "name": "app-ws"}],
                "interval": 0.3,
            },
        )
        async with serve(settings) as run:
            await until(
                run,
                lambda h: (
                    h["sources"]["process"]["state"] == "degraded"
                    and all(
                        h["sources"][n]["state"] == "running"
                        for n in ("logs", "stripe", "github", "websocket")
                    )
                ),
            )
            await run.wait_for(
                lambda s: (
                    value(s, "collector_log_lines_total", result="parsed") == 5
                    and value(s, "probe_websocket_success", target="app-ws") == 1
                )
            )
            with app_log.open("a") as fh:  # a line no rule uses, in a batch of its own
                fh.write(json.dumps({"level": "info", "message": "cache_warmed", "keys": 12}) + "\n")
            await run.wait_for(lambda s: value(s, "collector_log_lines_total", result="unmatched") == 1)
            assert (await deliver(run.url, event("payment_intent.succeeded")))[0] == 200
            assert (await deliver(run.url, event("charge.refunded")))[0] == 200
            assert (await post(run.url, b'{"id": "evt_forged"}', "t=1,v1=00"))[0] == 400
            assert await github_ping(run.url) == 200
            assert await ci_deployment(run.url, "ci-token") == 201
            assert await ci_deployment(run.url, "wrong") == 401

            dom = (await chromium("--dump-dom", "--virtual-time-budget=2000", run.url + "/")).decode()
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "status-page.png"
            shot.unlink(missing_ok=True)
            await chromium(
                f"--screenshot={shot}", "--window-size=1280,2200", "--hide-scrollbars", run.url + "/"
            )
            h = await health(run)

    assert shot.stat().st_size > 10_000  # a rendered page, kept for people to look at
    (ARTIFACTS / "status-page.html").write_text(dom)
    page = Tables()
    page.feed(dom)

    sources = {r["source"]: r for r in page.rows("sources")}
    assert set(sources) == {"process", "logs", "stripe", "github", "deployments", "websocket"}
    assert sources["process"]["state"] == "degraded"
    assert sources["process"]["reasons"].startswith(f"app process not found (pid {pid}) (since ")
    assert all(
        sources[n]["state"] == "running" for n in ("logs", "stripe", "github", "deployments", "websocket")
    )

    [unmatched] = page.rows("logs-unmatched-lines")
    assert unmatched["line"] == '{"level": "info", "message": "cache_warmed", "keys": 12}'
    followed, lagging = page.rows("logs-followed-files")
    assert lagging["path"] == str(logs / "worker.log")
    assert (lagging["offset"], lagging["size"], lagging["lag bytes"]) == (
        "0",
        str(len(partial)),
        str(len(partial)),
    )
    assert float(lagging["lag seconds"]) > 0
    assert followed["path"] == str(app_log)
    size = app_log.stat().st_size
    assert (followed["offset"], followed["size"], followed["lag bytes"], followed["lag seconds"]) == (
        str(size),
        str(size),
        "0",
        "0",
    )
    assert followed["rotations"] == "0" and followed["last error"] == ""
    rules = {r["metric"]: r for r in page.rows("logs-rules")}
    assert rules["http_requests_total"]["matches"] == "5"

    deliveries = page.rows("recent-deliveries")
    seen = [(d["source"], d["type"], d["status"], d["code"]) for d in deliveries]
    assert seen == [
        ("deployments", "deployment", "rejected", "401"),
        ("deployments", "deployment", "accepted", "201"),
        ("github", "ping", "accepted", "200"),
        ("stripe", "unknown", "signature_failed", "400"),
        ("stripe", "charge.refunded", "processed", "200"),
        ("stripe", "payment_intent.succeeded", "processed", "200"),
    ]
    assert deliveries[0]["reason"] == "missing or wrong bearer token"
    assert deliveries[1]["id"] == "ci:ci-1"
    assert deliveries[3]["reason"].startswith("signature_")

    probes = page.rows("recent-probes")
    assert probes and all(p["target"] == "app-ws" and p["result"] == "success" for p in probes)
    assert float(probes[0]["connect ms"]) >= 0 and probes[0]["status code"] == "101"

    families = page.rows("families")
    assert families and all(int(f["series"]) <= int(f["limit"]) for f in families)
    assert {"metrics", "dora", "health", "status.json"} <= set(page.links)
    assert any(f.get("action") == "probe" for f in page.forms)
    assert "readiness" in page.ids
    # The page reloads itself without JavaScript, and says what /health says.
    assert '<meta http-equiv="refresh" content="10">' in dom and "<script" not in dom
    assert h["sources"]["process"]["reasons"] == [f"app process not found (pid {pid})"]


def test_reasons_are_escaped_and_carry_their_start_time() -> None:
    # The same data drives both: /status.json is status_data(), the page is render_html(status_data()).
    from collector.status import render_html

    data: dict[str, Any] = {
        "version": "1",
        "python": "3",
        "time": 100.0,
        "started_at": 0.0,
        "uptime_seconds": 100.0,
        "ready": True,
        "ready_reasons": [],
        "state_store": {"path": "x", "open": True, "last_error": None},
        "sources": {
            "logs": {
                "state": "degraded",
                "reasons": ["pattern /x/*.log matches no file"],
                "problems": {
                    "p": {"message": "pattern /x/*.log matches no file <b>", "since": 40.0, "count": 1}
                },
                "restarts": 0,
                "last_error": None,
                "last_error_at": None,
                "tables": [],
            }
        },
        "recent": {},
        "families": [],
        "links": ["/metrics"],
        "probe": False,
    }
    page = render_html(data)
    assert (
        "pattern /x/*.log matches no file &lt;b&gt; <span class=note>(since 00:00:40, 60s ago)</span>" in page
    )
    assert "matches no file <b>" not in page  # reasons are text, never markup
