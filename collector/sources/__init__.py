"""The registry of sources: settings field name -> source class. Adding a source is one line here.

Entries name their module instead of importing it: a source's libraries (stripe, websockets,
gidgethub, psutil, ...) are imported only when that source is enabled, so a collector that only
tails logs does not carry them in memory or pay for them at start-up.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["SOURCES", "SourceRef"]


@dataclass(frozen=True)
class SourceRef:
    """Where a source class lives; `load()` imports it."""

    module: str
    attr: str

    def load(self) -> type:
        cls: type = getattr(importlib.import_module(self.module), self.attr)
        return cls


SOURCES: dict[str, SourceRef] = {
    "process": SourceRef("collector.sources.process", "ProcessSource"),
    "stripe": SourceRef("collector.sources.stripe", "StripeSource"),
    "logs": SourceRef("collector.sources.logs", "LogsSource"),
    "github": SourceRef("collector.sources.github", "GitHubSource"),
    "deployments": SourceRef("collector.sources.github", "DeploymentsSource"),
    "websocket": SourceRef("collector.sources.websocket", "WebSocketSource"),
}
