"""The registry of sources: settings field name -> source class. Adding a source is one line here."""

from __future__ import annotations

from collector.sources.process import ProcessSource

__all__ = ["SOURCES"]

SOURCES: dict[str, type] = {
    "process": ProcessSource,
}
