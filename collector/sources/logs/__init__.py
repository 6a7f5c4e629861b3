"""Log tailing source: exactly-once counting of JSON log lines across rotation, restart and kill -9."""

from __future__ import annotations

from collector.sources.logs.source import LogsSource

__all__ = ["LogsSource"]
