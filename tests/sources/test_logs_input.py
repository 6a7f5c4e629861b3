"""Bad and unusual input while the in-process collector runs: it is counted and logged, other files go on."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.helpers import serve, value
from tests.sources.logtools import SOURCES, append, level_count, line, lines, logs_settings, result_count


async def test_a_5_mib_line_is_skipped_and_counted_and_the_rest_of_the_file_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "app.log"
    append(log, lines(5))
    async with serve(logs_settings(tmp_path, str(tmp_path / "*.log")), SOURCES) as run:
        await run.wait_for(lambda m: level_count(m) == 5)
        huge = b'{"level":"error","msg":"' + b"x" * (5 * 1024 * 1024) + b'"}\n'
        append(log, huge[: 3 * 1024 * 1024])  # the app is still writing it
        append(tmp_path / "other.log", line("debug"))
        await run.wait_for(lambda m: level_count(m, "debug") == 1)
        append(log, huge[3 * 1024 * 1024 :] + lines(7, "warn"))
        m = await run.wait_for(lambda m: level_count(m, "warn") == 7)
        assert result_count(m, "too_long") == 1
        assert level_count(m, "error") == 0
        assert result_count(m, "parsed") == 13
        assert value(m, "collector_log_read_lines_total", path=str(log)) == 13
        assert value(m, "collector_log_read_bytes_total", path=str(log)) == log.stat().st_size
    assert any(
        r.getMessage().startswith("log line longer") and r.path == str(log)  # type: ignore[attr-defined]
        for r in caplog.records
    )


async def test_invalid_json_and_invalid_utf8_are_counted_by_reason_and_logged_with_file_and_offset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "app.log"
    good = line("info")
    bad_json = b'{"level": "info", oops\n'
    bad_utf8 = b'{"level":"info","msg":"caf\xe9"}\n'
    data = good + bad_json + good + bad_utf8 + b"\n" + b"[1,2]\n" + good
    append(log, data)
    async with serve(logs_settings(tmp_path, str(tmp_path / "*.log")), SOURCES) as run:
        m = await run.wait_for(lambda m: result_count(m, "parsed") == 3)
        assert result_count(m, "invalid_json") == 3  # the broken object, the blank line, the array
        assert result_count(m, "invalid_utf8") == 1
        assert level_count(m) == 3
    bad = [r for r in caplog.records if r.getMessage() == "bad log line skipped"]
    offsets = {(r.reason, r.offset) for r in bad}  # type: ignore[attr-defined]
    assert ("invalid_json", len(good)) in offsets
    assert ("invalid_utf8", 2 * len(good) + len(bad_json)) in offsets
    assert all(r.path == str(log) for r in bad)  # type: ignore[attr-defined]


async def test_lines_without_a_level_are_unmatched_and_pino_numeric_levels_are_mapped(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, line(30) + line(40) + line(60) + line("WARNING") + line("notalevel") + b'{"msg":"x"}\n')
    async with serve(logs_settings(tmp_path, str(tmp_path / "*.log")), SOURCES) as run:
        m = await run.wait_for(lambda m: result_count(m, "unmatched") == 1)
        assert level_count(m, "info") == 1
        assert level_count(m, "warn") == 2
        assert level_count(m, "fatal") == 1
        assert level_count(m, "other") == 1
        assert result_count(m, "parsed") == 5


async def test_empty_file_and_a_directory_that_appears_later_are_followed(tmp_path: Path) -> None:
    (tmp_path / "empty.log").touch()
    later = tmp_path / "later" / "app"
    settings = logs_settings(tmp_path, str(tmp_path / "*.log"), str(later / "*.log"))
    async with serve(settings, SOURCES) as run:
        m = await run.wait_for(lambda m: value(m, "collector_log_files_watched") == 1)
        assert value(m, "collector_log_behind_bytes", path=str(tmp_path / "empty.log")) == 0
        later.mkdir(parents=True)
        append(later / "app.log", lines(12, "error"))
        m = await run.wait_for(lambda m: level_count(m, "error") == 12)
        assert value(m, "collector_log_files_watched") == 2
        append(tmp_path / "empty.log", lines(2))
        m = await run.wait_for(lambda m: level_count(m) == 2)
        assert value(m, "collector_log_read_lines_total", path=str(later / "app.log")) == 12


async def test_unreadable_files_are_counted_and_logged_once_and_other_files_are_unaffected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locked = tmp_path / "locked.log"
    append(locked, lines(3))
    locked.chmod(0)
    os.mkfifo(tmp_path / "pipe.log")  # matches the pattern, cannot be tailed
    append(tmp_path / "app.log", lines(4))
    root = os.geteuid() == 0  # root reads mode-000 files anyway: then only the FIFO is unreadable
    async with serve(logs_settings(tmp_path, str(tmp_path / "*.log")), SOURCES) as run:
        m = await run.wait_for(lambda m: level_count(m) == (7 if root else 4))
        append(tmp_path / "app.log", lines(5))
        m = await run.wait_for(lambda m: level_count(m) == (12 if root else 9))
        assert value(m, "collector_log_file_errors_total", reason="not_regular") == 1
        assert value(m, "collector_source_errors_total", source="logs", reason="not_regular") == 1
        assert value(m, "collector_log_file_errors_total", reason="permission_denied") == (
            None if root else 1
        )
    warned = [r for r in caplog.records if r.getMessage() == "cannot follow log file"]
    assert {r.path for r in warned} == (  # type: ignore[attr-defined]
        {str(tmp_path / "pipe.log")} if root else {str(tmp_path / "pipe.log"), str(locked)}
    )
    assert all(r.levelno == logging.WARNING for r in warned)


async def test_a_mixed_pino_and_winston_sample_is_counted_exactly(tmp_path: Path) -> None:
    fixture = Path(__file__).parent.parent / "fixtures" / "logs" / "mixed.log"
    (tmp_path / "app.log").write_bytes(fixture.read_bytes())
    async with serve(logs_settings(tmp_path, str(tmp_path / "*.log")), SOURCES) as run:
        m = await run.wait_for(lambda m: result_count(m, "invalid_utf8") == 1)
        assert {lvl: level_count(m, lvl) for lvl in ("debug", "info", "warn", "error")} == {
            "debug": 1,
            "info": 2,
            "warn": 2,
            "error": 2,
        }
        assert result_count(m, "parsed") == 7
        assert result_count(m, "unmatched") == 1
        assert result_count(m, "invalid_json") == 2


async def test_compressed_rotations_matched_by_a_wide_pattern_are_ignored(tmp_path: Path) -> None:
    import gzip

    append(tmp_path / "app.log", lines(3))
    async with serve(logs_settings(tmp_path, str(tmp_path / "app.log*")), SOURCES) as run:
        await run.wait_for(lambda m: level_count(m) == 3)
        (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(lines(100)))
        append(tmp_path / "app.log", lines(1, "warn"))
        m = await run.wait_for(lambda m: level_count(m, "warn") == 1)
        assert value(m, "collector_log_files_watched") == 1
        assert result_count(m, "invalid_utf8") == result_count(m, "invalid_json") == 0
