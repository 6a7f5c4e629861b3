"""The notifier thread: notifications wake the source, pausing stops them, a failed watch is counted once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from collector.sources.logs import source as logs_source
from collector.sources.logs.source import _Watcher


class _Errors:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, labels: tuple[str, ...]) -> None:
        self.counts[labels] = self.counts.get(labels, 0) + 1


def _source() -> Any:
    tailer = SimpleNamespace(file_errors=_Errors(), log_first=lambda *a, **k: None)
    return SimpleNamespace(
        settings=SimpleNamespace(read_window=0.05, poll_interval=1.0), wake=asyncio.Event(), tailer=tailer
    )


async def _until(pred: Any, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_write_wakes_the_source_and_a_paused_watcher_stays_quiet(tmp_path: Path) -> None:
    src = _source()
    w = _Watcher(src, ((str(tmp_path), False),))
    try:
        await asyncio.sleep(0.3)  # the watch is armed
        (tmp_path / "a.log").write_bytes(b"x\n")
        assert await _until(src.wake.is_set)
        w.pause()
        await asyncio.sleep(0.3)  # the thread saw `stop`
        src.wake.clear()
        (tmp_path / "a.log").write_bytes(b"y\n")
        await asyncio.sleep(0.5)
        assert not src.wake.is_set()
        w.resume()
        await asyncio.sleep(0.3)
        (tmp_path / "a.log").write_bytes(b"z\n")
        assert await _until(src.wake.is_set)
    finally:
        await w.close()


async def test_a_failed_watch_is_counted_once_however_often_it_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_watches(*_a: Any) -> Any:
        raise OSError(28, "inotify watch limit reached")  # what fs.inotify.max_user_watches gives

    monkeypatch.setattr(logs_source, "RustNotify", no_watches)
    src = _source()
    w = _Watcher(src, ((str(tmp_path), False),))
    try:
        assert await _until(lambda: src.tailer.file_errors.counts.get(("watch_failed",)) == 1)
        for _ in range(5):
            w.pause()
            w.resume()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert src.tailer.file_errors.counts == {("watch_failed",): 1}
    finally:
        await w.close()
