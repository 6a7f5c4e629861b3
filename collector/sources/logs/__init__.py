"""Log tailing source: exactly-once counting of JSON log lines across rotation, restart and kill -9.

`LogsSource` is imported on first use, not with the package: the pure parts (`lines`, `identity`)
are imported by `collector replay` too, which must not pay for the tailer, asyncio and the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.sources.logs.source import LogsSource

__all__ = ["LogsSource"]


def __getattr__(name: str) -> object:
    if name == "LogsSource":
        from collector.sources.logs.source import LogsSource

        return LogsSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
