"""Shared pieces of the web security, limits and fault tests: guarded listeners, test certificates, a
source with webhook-like routes. (Not named test_*: pytest collects nothing here.)"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import trustme
from aiohttp import web
from prometheus_client.samples import Sample

from collector.app import RUNTIME, Runtime, build_app
from collector.routes import Route
from collector.settings import Settings
from collector.source import SourceBase, SourceContext
from collector.sources import Registry
from collector.web import WEB, WebSecurity, start_sites
from collector.web.guard import GuardedSite
from tests.helpers import make_settings, parse, registry_for

PASSWORD = "s3cret-pass-for-tests"
# Cost 4: the minimum, so tests do not spend 100 ms per check; the server accepts any cost 4-31.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class EchoSource(SourceBase):
    """A source with routes shaped like the real ones: a webhook, /deployments, a slow route, a crash."""

    name = "echo"  # its own settings section (`registry_for`), on by default

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.hits = 0
        self.release = asyncio.Event()
        self.entered = 0

    def routes(self) -> list[Route]:
        # Declared as the real webhook routes are: self-checked ingest routes (no basic auth, served
        # on the webhook listener), and two ordinary ones behind basic auth.
        return [
            Route("POST", "/webhooks/test", self.webhook, auth="signed", kind="ingest"),
            Route("POST", "/deployments", self.webhook, auth="signed", kind="ingest"),
            Route("GET", "/slow", self.slow, auth="basic"),
            Route("GET", "/boom", self.boom, auth="basic"),
        ]

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hits += 1
        return web.json_response({"bytes": len(body)})

    async def slow(self, _request: web.Request) -> web.Response:
        self.entered += 1
        await self.release.wait()
        return web.Response(text="done\n")

    async def boom(self, _request: web.Request) -> web.Response:
        raise RuntimeError("handler bug")

    async def run(self) -> None:
        self.ctx.started()
        await self.ctx.stop.wait()


ECHO = registry_for(echo=EchoSource)


def echo_settings(tmp_path: Path, **kw: Any) -> Settings:
    return make_settings(tmp_path, ECHO, **kw)


@dataclass
class Served:
    app: web.Application
    sites: list[GuardedSite]

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    @property
    def guard(self) -> WebSecurity:
        return self.app[WEB]

    @property
    def source(self) -> Any:
        return self.runtime.sources[0][0]

    def url(self, listener: str = "main", scheme: str = "http") -> str:
        site = next(s for s in self.sites if s.listener == listener)
        host, port = site.address
        return f"{scheme}://{host}:{port}"

    async def request(
        self,
        method: str,
        path: str,
        listener: str = "main",
        ssl_ctx: ssl.SSLContext | None = None,
        **kw: Any,
    ) -> tuple[int, Mapping[str, str], bytes]:
        scheme = "https" if ssl_ctx is not None else "http"
        kw["headers"] = {"Accept-Encoding": "identity", **kw.get("headers", {})}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, self.url(listener, scheme) + path, ssl=ssl_ctx if ssl_ctx is not None else True, **kw
            ) as resp,
        ):
            return resp.status, resp.headers, await resp.read()

    async def metrics(self, ssl_ctx: ssl.SSLContext | None = None, **kw: Any) -> dict[str, list[Sample]]:
        status, _h, body = await self.request("GET", "/metrics", ssl_ctx=ssl_ctx, **kw)
        assert status == 200, body
        return parse(body.decode())


@asynccontextmanager
async def serve_guarded(settings: Settings, sources: Registry | None = None) -> AsyncIterator[Served]:
    """The real app behind the real guarded listeners (what `collector` runs), on loopback ports."""
    app = build_app(settings, sources if sources is not None else ECHO)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        sites = await start_sites(runner, app)
        yield Served(app, sites)
    finally:
        await runner.cleanup()


@dataclass
class Pki:
    """A server CA and certificate for 127.0.0.1, and a separate client CA with one client certificate."""

    dir: Path
    ca: trustme.CA
    client_ca: trustme.CA
    client: trustme.LeafCert

    def client_ctx(self, cert: bool = False, ca: trustme.CA | None = None, **kw: Any) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        (ca or self.ca).configure_trust(ctx)
        if cert:
            self.client.configure_cert(ctx)
        for key, val in kw.items():
            setattr(ctx, key, val)
        return ctx


def make_pki(directory: Path, name: str = "server") -> Pki:
    """Write `<name>.crt`, `<name>.key`, `client-ca.crt` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(directory / f"{name}.key")
    (directory / f"{name}.crt").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    client_ca = trustme.CA()
    client_ca.cert_pem.write_to_path(directory / "client-ca.crt")
    client = client_ca.issue_cert("prometheus@example.test")
    return Pki(directory, ca, client_ca, client)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
