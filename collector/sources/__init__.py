"""The registry of sources: settings field name -> source class. Adding a source is one line here."""

from __future__ import annotations

from collector.sources.github import DeploymentsSource, GitHubSource
from collector.sources.logs import LogsSource
from collector.sources.process import ProcessSource
from collector.sources.stripe import StripeSource
from collector.sources.websocket import WebSocketSource

__all__ = ["SOURCES"]

SOURCES: dict[str, type] = {
    "process": ProcessSource,
    "stripe": StripeSource,
    "logs": LogsSource,
    "github": GitHubSource,
    "deployments": DeploymentsSource,
    "websocket": WebSocketSource,
}
