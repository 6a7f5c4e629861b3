"""Helpers for the log tailing tests: JSON log lines and an in-process collector following a directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from collector.settings import Settings
from collector.sources.logs import LogsSource
from tests.helpers import make_settings, value

SOURCES = {"logs": LogsSource}


def line(level: Any = "info", i: int = 0, **fields: Any) -> bytes:
    return json.dumps({"level": level, "msg": "request done", "i": i, **fields}).encode() + b"\n"


def lines(n: int, level: Any = "info", start: int = 0) -> bytes:
    return b"".join(line(level, start + i) for i in range(n))


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def logs_settings(tmp_path: Path, *patterns: str, **logs: Any) -> Settings:
    cfg: dict[str, Any] = {
        "paths": list(patterns),
        "start_at": "beginning",
        "poll_interval": 0.1,
        "checkpoint_interval": 0.2,
    }
    cfg.update(logs)
    return make_settings(tmp_path, logs=cfg)


def level_count(samples: Any, level: str = "info") -> float:
    return value(samples, "app_log_lines_total", level=level) or 0.0


def result_count(samples: Any, result: str) -> float:
    return value(samples, "collector_log_lines_total", result=result) or 0.0
