"""The file watcher, both backends (inotify read by the loop, watchfiles' notifier thread):
notifications wake the source, pausing stops them, a failed watch is counted once, a directory
removed and made again is watched again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import watchfiles._rust_notify

from collector.sources.logs import notify
from collector.sources.logs.source import _Watcher

BACKENDS = [
    pytest.param(True, id="inotify", marks=pytest.mark.skipif(not notify.available(), reason="no inotify")),
    pytest.param(False, id="thread"),
]


@pytest.fixture(params=BACKENDS)
def native(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(_Watcher, "native", request.param)
    return bool(request.param)


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


async def test_a_write_wakes_the_source_and_a_paused_watcher_stays_quiet(
    tmp_path: Path, native: bool
) -> None:
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    def no_watches(*_a: Any) -> Any:
        raise OSError(28, "inotify watch limit reached")  # what fs.inotify.max_user_watches gives

    # the thread backend imports RustNotify where it starts watching, so it is patched at its source
    monkeypatch.setattr(watchfiles._rust_notify, "RustNotify", no_watches)
    monkeypatch.setattr(notify, "Inotify", no_watches)
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


@pytest.mark.skipif(not notify.available(), reason="no inotify")
async def test_inotify_needs_no_thread_and_watches_a_directory_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Watcher, "native", True)
    logs = tmp_path / "logs"
    logs.mkdir()
    src = _source()
    w = _Watcher(src, ((str(logs), False),))
    try:
        assert w.thread is None and w.inotify is not None  # nothing runs until a change
        (logs / "a.log").write_bytes(b"x\n")
        assert await _until(src.wake.is_set)
        src.wake.clear()
        w.listen()  # what the source does when it clears `wake`
        (logs / "a.log").unlink()
        logs.rmdir()  # its watch goes: the watcher wakes the source and waits for the scan's roots
        assert await _until(lambda: w.inotify is None)
        assert src.wake.is_set()
        logs.mkdir()
        w.follow(((str(logs), False),))  # what the source does after the scan that wake-up started
        src.wake.clear()
        (logs / "b.log").write_bytes(b"y\n")
        assert await _until(src.wake.is_set)
    finally:
        await w.close()
    assert w.inotify is None


@pytest.mark.skipif(not notify.available(), reason="no inotify")
async def test_inotify_reads_once_per_wake_up_and_loses_no_change_made_before_the_source_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Watcher, "native", True)
    src = _source()
    w = _Watcher(src, ((str(tmp_path), False),))
    reads: list[int] = []
    drain = notify.Inotify.drain

    def counted(self: notify.Inotify) -> bool:
        reads.append(1)
        return drain(self)

    monkeypatch.setattr(notify.Inotify, "drain", counted)
    try:
        (tmp_path / "a.log").write_bytes(b"x\n")
        assert await _until(src.wake.is_set)
        src.wake.clear()  # the source cleared it, but has not listened yet (its scan is before that)
        with (tmp_path / "busy.log").open("ab", buffering=0) as busy:
            for _ in range(50):  # a busy file beside ours: one wake-up at most, not one per write
                busy.write(b"y\n")
                await asyncio.sleep(0.005)
        assert not src.wake.is_set() and reads == [1]
        w.listen()
        assert await _until(src.wake.is_set)  # the writes made meanwhile were kept for it
        assert reads == [1, 1]
    finally:
        await w.close()
