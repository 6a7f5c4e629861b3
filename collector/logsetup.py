"""The collector's own logs: one JSON object per line on stderr, plus a log-the-first-few helper."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["JsonFormatter", "LogFirst", "RedactingHandler", "setup_logging"]

# LogRecord attributes that are not user-supplied `extra=` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., <extra fields>}` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that passes each formatted record (message, extra fields, traceback) through
    `redact` before writing it: third-party loggers (websockets prints every request header at DEBUG)
    cannot print a secret, whatever the formatter."""

    def __init__(self, stream: Any, redact: Callable[[str], str]) -> None:
        super().__init__(stream)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(level: str = "INFO", redact: Callable[[str], str] | None = None) -> None:
    """Send every `collector.*` record (and aiohttp's) as JSON lines to stderr, secrets masked."""
    handler = RedactingHandler(sys.stderr, redact or (lambda text: text))
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp logs every request at INFO; operators want the collector's own events.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class LogFirst:
    """Log only the first `limit` occurrences per key (e.g. per reason), so bad input cannot flood logs.

    Args:
        logger: where to log.
        limit: how many records per key; later ones are only counted by the caller's metric.
    """

    def __init__(self, logger: logging.Logger, limit: int = 5) -> None:
        self.logger = logger
        self.limit = limit
        self.seen: dict[str, int] = {}

    def __call__(self, key: str, msg: str, *args: Any, level: int = logging.WARNING, **extra: Any) -> None:
        n = self.seen.get(key, 0)
        if n >= self.limit:
            return
        self.seen[key] = n + 1
        if n + 1 == self.limit:
            extra["note"] = f"further {key!r} messages are suppressed; see the metrics"
        self.logger.log(level, msg, *args, extra=extra)
