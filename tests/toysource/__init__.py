"""A toy queue-depth source, written the way `docs/sources.md` says a source is added: this one
module, plus one `SourceSpec` line in the registry the app is built with (see tests/test_toy_source.py).
(Not named test_*: pytest collects nothing here.)"""

from __future__ import annotations

import sqlite3
from typing import ClassVar

from aiohttp import web

from collector.routes import Route
from collector.settings import SourceSettings
from collector.settings.model import Secret, setting
from collector.source import SourceBase, SourceContext
from collector.sources.storage import Migration, Tables

__all__ = ["QueueSettings", "QueueSource"]


class QueueSettings(SourceSettings):
    """Count jobs pushed to a queue and report its depth (`COLLECTOR_QUEUE__*`)."""

    config_fields: ClassVar[tuple[str, ...]] = ("token",)

    token: Secret | None = setting(default=None, description="Bearer token producers push with.")
    max_depth: int = setting(default=3, gt=0, description="Depth above which the source is degraded.")


class QueueSource(SourceBase):
    """POST /queue/jobs (token) adds a job, GET /queue/depth (public) tells the depth, GET
    /queue/jobs (basic auth) lists them; jobs are kept in the source's own table."""

    name = "queue"
    error_reasons = ("store",)
    storage: ClassVar[tuple[Migration, ...]] = (
        Tables("CREATE TABLE IF NOT EXISTS queue_jobs (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"),
    )

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.settings: QueueSettings = ctx.settings
        self.depth = ctx.metrics.gauge("queue_depth", "Jobs waiting in the queue.")
        self.pushed = ctx.metrics.counter("queue_jobs_pushed_total", "Jobs pushed.")

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/queue/jobs", self.push, auth="token", kind="ingest", token=self._token),
            Route("GET", "/queue/depth", self.show_depth, auth="public", kind="health"),
            Route("GET", "/queue/jobs", self.list_jobs, auth="basic"),
        ]

    def _token(self) -> str:
        assert self.settings.token is not None  # configured(): enabled only with a token
        return self.settings.token.get_secret_value()

    async def run(self) -> None:
        self.depth.set((), await self.ctx.store.call(_count))
        self.ctx.started()
        await self.ctx.stop.wait()

    async def push(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode("utf-8", "replace")[:200]
        depth = await self.ctx.store.call(_insert, body)
        self.depth.set((), depth)
        self.pushed.inc(())
        self.ctx.record("jobs", body=body, depth=depth)
        if depth > self.settings.max_depth:
            self.ctx.degraded("backlog", f"queue depth {depth} over {self.settings.max_depth}")
        return web.json_response({"depth": depth})

    async def show_depth(self, _request: web.Request) -> web.Response:
        return web.json_response({"depth": await self.ctx.store.call(_count)})

    async def list_jobs(self, _request: web.Request) -> web.Response:
        rows = await self.ctx.store.call(
            lambda c: c.execute("SELECT body FROM queue_jobs ORDER BY id").fetchall()
        )
        return web.json_response({"jobs": [r[0] for r in rows]})


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM queue_jobs").fetchone()[0])


def _insert(conn: sqlite3.Connection, body: str) -> int:
    conn.execute("INSERT INTO queue_jobs (body) VALUES (?)", (body,))
    return _count(conn)
