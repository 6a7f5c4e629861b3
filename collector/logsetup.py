"""The collector's own logs: one JSON object (or one text line) per record on stderr, and a log-the-first-few helper."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "LIBRARY_LOGGERS",
    "JsonFormatter",
    "LogFirst",
    "RedactingHandler",
    "TextFormatter",
    "setup_logging",
]

#: Third-party loggers held at `COLLECTOR_LOG_LEVEL_LIBRARIES` (WARNING by default): watchfiles logs
#: "1 change detected" per write to a watched log (and feeds itself when our own log is watched),
#: aiohttp.access one line per request, websockets one per connection.
LIBRARY_LOGGERS = ("watchfiles", "aiohttp", "websockets", "asyncio", "gidgethub", "stripe", "urllib3")

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


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger>: <msg> key=value ...` per record, for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = " ".join(
            f"{key}={_text_value(value)}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (
            f" {fields}" if fields else ""
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return json.dumps(text, ensure_ascii=False) if (not text or any(c in text for c in ' "=')) else text


class RedactingHandler(logging.StreamHandler[TextIO]):
    """A stream handler that passes each formatted record (message, extra fields, traceback) through
    `redact` before writing it: third-party loggers (websockets prints every request header at DEBUG)
    cannot print a secret, whatever the formatter."""

    def __init__(self, stream: TextIO, redact: Callable[[str], str]) -> None:
        super().__init__(stream)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(
    level: str = "INFO",
    redact: Callable[[str], str] | None = None,
    fmt: str = "json",
    libraries: str = "WARNING",
) -> None:
    """Send every record to stderr, one JSON object (`fmt="json"`) or one text line (`"text"`) each,
    secrets masked.

    Args:
        level: the collector's own level (`COLLECTOR_LOG_LEVEL`).
        redact: masks secrets in each formatted record (`collector.redact.Redactor`).
        fmt: `json` or `text` (`COLLECTOR_LOG_FORMAT`).
        libraries: level of the third-party loggers in `LIBRARY_LOGGERS` (`COLLECTOR_LOG_LEVEL_LIBRARIES`).
    """
    handler = RedactingHandler(sys.stderr, redact or (lambda text: text))
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(libraries)


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
