"""Following identity, not names: unread bytes found under any name, pending files, counted losses."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
from pathlib import Path

from collector.settings import Settings
from tests.helpers import serve, value
from tests.sources.logtools import SOURCES, append, level_count, lines, logs_settings


async def _health(run: object) -> dict:  # type: ignore[type-arg]
    status, _h, body = await run.get("/health")  # type: ignore[attr-defined]
    assert status == 200
    return json.loads(body)


async def _counted_and_stopped(tmp_path: Path, log: Path | None = None) -> tuple[Path, Settings]:
    """`log` (default `app.log`) with 100 info lines, counted by a collector that has stopped since (its
    last checkpoint written): what each restart scenario below starts from."""
    log = log or tmp_path / "app.log"
    append(log, lines(100))
    settings = logs_settings(tmp_path, str(log))
    async with serve(settings, SOURCES) as run:
        await run.wait_for(lambda m: level_count(m) == 100)
    return log, settings


async def test_a_rename_while_down_is_drained_from_its_offset_with_the_live_file_only_configured(
    tmp_path: Path,
) -> None:
    log, settings = await _counted_and_stopped(tmp_path)
    append(log, lines(30, "warn"))  # written after the last checkpoint
    log.rename(tmp_path / "app.log.1")  # rotated while the collector is down
    append(log, lines(5, "error"))
    async with serve(settings, SOURCES) as run:
        m = await run.wait_for(lambda m: level_count(m, "warn") == 30 and level_count(m, "error") == 5)
        assert level_count(m) == 100
        assert value(m, "collector_log_losses_total", reason="deleted") == 0


async def test_several_rotations_while_down_compressed_or_dated_are_all_read_once(tmp_path: Path) -> None:
    log, settings = await _counted_and_stopped(tmp_path)
    append(log, lines(10, "warn"))
    # logrotate `compress` (no delaycompress): app.log -> app.log.1.gz, then a dateext rotation.
    with gzip.open(tmp_path / "app.log.1.gz", "wb") as f:
        f.write(log.read_bytes())
    log.unlink()
    append(log, lines(20, "error"))
    log.rename(tmp_path / "app.log-20261201")
    append(log, lines(3, "debug"))
    async with serve(settings, SOURCES) as run:
        m = await run.wait_for(
            lambda m: (
                level_count(m, "warn") == 10
                and level_count(m, "error") == 20
                and level_count(m, "debug") == 3
            )
        )
        assert level_count(m) == 100
        assert value(m, "collector_log_losses_total", reason="deleted") == 0
    async with serve(settings, SOURCES) as run:  # and not again after another restart
        m = await run.wait_for(lambda m: level_count(m, "debug") == 3)
        assert (level_count(m), level_count(m, "warn"), level_count(m, "error")) == (100, 10, 20)


async def test_copytruncate_while_down_reads_the_unread_tail_from_the_copy(tmp_path: Path) -> None:
    log, settings = await _counted_and_stopped(tmp_path)
    append(log, lines(30, "warn"))
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    append(log, lines(7, "error"))
    async with serve(settings, SOURCES) as run:
        m = await run.wait_for(lambda m: level_count(m, "warn") == 30 and level_count(m, "error") == 7)
        assert level_count(m) == 100


async def test_a_missing_directory_at_start_up_is_pending_then_resumes_at_its_offset(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log, settings = await _counted_and_stopped(tmp_path, logdir / "app.log")
    append(log, lines(10, "warn"))
    logdir.rename(tmp_path / "away")  # a volume not mounted yet
    async with serve(settings, SOURCES) as run:
        m = await run.wait_for(lambda m: value(m, "collector_log_pending_files", reason="missing") == 1)
        health = await _health(run)
        assert health["sources"]["logs"]["pending_files"] == [
            {"path": str(log), "reason": "missing", "offset": len(lines(100))}
        ]
        (tmp_path / "away").rename(logdir)
        m = await run.wait_for(lambda m: level_count(m, "warn") == 10)
        assert level_count(m) == 100  # never read again from byte 0
        m = await run.wait_for(lambda m: value(m, "collector_log_pending_files", reason="missing") == 0)
        assert (await _health(run))["sources"]["logs"]["pending_files"] == []


async def test_a_file_deleted_while_down_is_a_counted_loss_with_its_byte_range(
    tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    log, settings = await _counted_and_stopped(tmp_path)
    log.unlink()
    append(log, lines(4, "error"))
    async with serve(settings, SOURCES) as run:
        m = await run.wait_for(lambda m: level_count(m, "error") == 4)
        # The new file may get the deleted one's inode: then its inode holds other content ("truncated").
        losses = {r: value(m, "collector_log_losses_total", reason=r) for r in ("deleted", "truncated")}
        assert sum(losses.values()) == 1  # type: ignore[arg-type]
        assert level_count(m) == 100
    lost = [r for r in caplog.records if "exist in no file" in r.getMessage()]
    assert len(lost) == 1
    assert (lost[0].path, lost[0].from_byte) == (str(log), len(lines(100)))
    assert lost[0].reason in ("deleted", "truncated")


async def test_an_initially_empty_copy_is_not_read_as_a_new_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, lines(100))
    async with serve(logs_settings(tmp_path, str(tmp_path / "app.log*")), SOURCES) as run:
        await run.wait_for(lambda m: level_count(m) == 100)
        copy = tmp_path / "app.log.1"
        copy.touch()  # a slow copier: the copy exists empty first
        await run.wait_for(lambda m: value(m, "collector_log_files_watched") == 2)
        append(copy, log.read_bytes()[:500])
        await run.wait_for(lambda m: value(m, "collector_log_files_watched") == 2)
        append(copy, log.read_bytes()[500:])
        os.truncate(log, 0)
        append(log, lines(3, "error"))
        m = await run.wait_for(lambda m: level_count(m, "error") == 3)
        assert level_count(m) == 100
        m = await run.wait_for(lambda m: level_count(m) == 100)


async def test_an_inode_holding_other_content_after_a_restart_is_read_from_0_and_the_old_tail_counted_lost(
    tmp_path: Path,
) -> None:
    log, settings = await _counted_and_stopped(tmp_path)
    inode = log.stat().st_ino
    os.truncate(log, 0)  # the same inode with other content, as when a deleted file's inode is reused
    append(log, lines(300, "warn"))  # longer than the old offset: only the first bytes tell
    assert log.stat().st_ino == inode
    async with serve(settings, SOURCES) as run:
        m = await run.wait_for(lambda m: level_count(m, "warn") == 300)
        assert level_count(m) == 100
        assert value(m, "collector_log_losses_total", reason="truncated") == 1


async def test_a_copy_shorter_than_the_offset_is_read_from_the_offset_not_taken_for_a_truncation(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    append(log, lines(100))
    async with serve(logs_settings(tmp_path, str(log)), SOURCES) as run:
        await run.wait_for(lambda m: level_count(m) == 100)
        # copytruncate where the app wrote (and we read) past the moment of the copy: the copy holds
        # less than we read, so nothing is read from it, now or later.
        (tmp_path / "app.log.1").write_bytes(log.read_bytes()[: len(lines(60))])
        os.truncate(log, 0)
        append(log, lines(7, "error"))
        await run.wait_for(lambda m: level_count(m, "error") == 7)
        for _ in range(10):  # several scans: the copy is never read from its start
            m = await run.metrics()
            assert level_count(m) == 100
            await asyncio.sleep(0.1)
