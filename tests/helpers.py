"""Test helpers: real servers on loopback, the real `collector` process, parsed /metrics."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from collector.app import RUNTIME, Runtime, build_app
from collector.settings import Settings, SourceSettings, settings_class
from collector.source import Source
from collector.sources import SOURCES, Registry, SourceSpec

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text: str) -> dict[str, list[Sample]]:
    """Samples by sample name (e.g. `x_bucket`, `x_total`), parsed by prometheus_client."""
    out: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    """The value of the one sample with exactly these labels, or None when absent."""
    for s in samples.get(name, []):
        if s.labels == labels:
            return s.value
    return None


class OwnSettings(SourceSettings):
    """The settings section of a test source: on unless told otherwise, nothing to configure."""

    def configured(self) -> bool:
        return True  # nothing to configure: on unless `enabled=False`


def registry_for(**classes: type[Source]) -> Registry:
    """A registry of test sources (name -> class), each with its own `OwnSettings` section:
    a test source never borrows a real source's settings."""
    return Registry(
        *(SourceSpec(name, lambda: OwnSettings, lambda c=cls: c) for name, cls in classes.items())
    )


def make_settings(tmp_path: Path, sources: Registry | None = None, **kw: Any) -> Settings:
    """Settings for a test app: of the root assembled from `sources` (default: the real registry)."""
    kw.setdefault("listen", "127.0.0.1:0")
    kw.setdefault("data_dir", tmp_path / "data")
    cls = Settings if sources is None else settings_class(sources)
    return cls(_env_file=None, **kw)  # type: ignore[call-arg]


class Running:
    """An in-process collector app served on a real loopback port."""

    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    async def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        # aiohttp's client asks for gzip by default; tests ask for it explicitly when they mean to.
        kw["headers"] = {"Accept-Encoding": "identity", **kw.get("headers", {})}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.get(self.url + path, **kw) as resp,
        ):
            return resp.status, dict(resp.headers), await resp.read()

    async def metrics(self) -> dict[str, list[Sample]]:
        status, headers, body = await self.get("/metrics")
        assert status == 200
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return parse(body.decode())

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, list[Sample]]:
        """Scrape until `predicate(samples)` holds; return those samples."""
        deadline = time.monotonic() + timeout
        while True:
            samples = await self.metrics()
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; last scrape: {samples}")
            await asyncio.sleep(0.05)


def registry_of(sources: Registry | Mapping[str, type[Source]] | None) -> Registry | None:
    """A registry from a test's `{name: class}`, where each class is a real source (or a subclass of
    it, e.g. one that crashes on purpose) and keeps that source's own settings section."""
    if sources is None or isinstance(sources, Registry):
        return sources
    specs = []
    for name, cls in sources.items():
        real = SOURCES[name].load()
        if not issubclass(cls, real):
            raise TypeError(f"{cls.__name__} is not a {name} source: give it its own spec (registry_for)")
        specs.append(SourceSpec(name, SOURCES[name].settings, lambda c=cls: c))
    return Registry(*specs)


@asynccontextmanager
async def serve(
    settings: Settings, sources: Registry | Mapping[str, type[Source]] | None = None
) -> AsyncIterator[Running]:
    app = build_app(settings, registry_of(sources))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Running(app, f"http://{host}:{port}")
    finally:
        await runner.cleanup()


class CollectorProcess:
    """The real `collector` command as a child process with its own env."""

    def __init__(
        self, env: Mapping[str, str], cwd: Path, args: tuple[str, ...] = (), module: str = "collector"
    ) -> None:
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        self.env = {**base, "COLLECTOR_LISTEN": f"127.0.0.1:{self.port}", **env}
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = cwd / f"collector-{self.port}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=self.env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )

    def wait_live(self, timeout: float = 15.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited {self.proc.returncode}: {self.stderr()}")
            try:
                with urllib.request.urlopen(self.url + "/health/live", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"collector not live after {timeout}s: {self.stderr()}")

    def scrape(self) -> dict[str, list[Sample]]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return parse(resp.read().decode())

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._stderr.close()

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")


def package_imports() -> list[tuple[str, int, str]]:
    """Every absolute import in `collector/`, at any level of nesting: (file, line, module name).

    For tests that keep a library out of the package (the image installs only the runtime lock)."""
    import ast

    package = Path(__file__).parent.parent / "collector"
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [(str(path.relative_to(package.parent)), node.lineno, n) for n in names]
    return found
