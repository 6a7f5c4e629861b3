"""Process source against real child processes: by PID, PID file and regex; gone and back."""

from __future__ import annotations

import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from collector.settings import ProcessSettings
from collector.sources.process import find_process
from tests.helpers import make_settings, serve, value


@pytest.fixture
def spawn() -> Iterator:
    children: list[subprocess.Popen] = []

    def start(marker: str) -> subprocess.Popen:
        code = f"import time; print('ready', flush=True); time.sleep(300)  # {marker}"
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        children.append(child)
        assert (
            child.stdout is not None and child.stdout.readline() == b"ready\n"
        )  # start-up done, fds settled
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def _up(expected: float):
    return lambda s: value(s, "app_process_up") == expected


async def test_metrics_of_a_real_process_by_pid(tmp_path: Path, spawn) -> None:
    child = spawn("by-pid")
    settings = make_settings(tmp_path, process={"pid": child.pid, "interval": 0.1})
    async with serve(settings) as c:
        proc = psutil.Process(child.pid)
        s = await c.wait_for(lambda s: value(s, "app_process_open_fds") == proc.num_fds())
        assert value(s, "app_process_up") == 1
        assert value(s, "app_process_start_time_seconds") == proc.create_time()
        assert value(s, "app_process_threads") == 1
        assert value(s, "app_process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert value(s, "app_process_resident_memory_bytes") > 1_000_000
        assert value(s, "app_process_virtual_memory_bytes") >= value(s, "app_process_resident_memory_bytes")
        assert value(s, "app_process_cpu_seconds_total") >= 0
        assert value(s, "collector_source_up", source="process") == 1

        child.kill()
        child.wait()
        s = await c.wait_for(_up(0))
        # a fixed PID cannot be followed: the other series disappear rather than go stale
        assert value(s, "app_process_resident_memory_bytes") is None
        assert value(s, "app_process_start_time_seconds") is None
        assert value(s, "collector_source_errors_total", source="process", reason="process_not_found") == 1
        assert value(s, "collector_source_up", source="process") == 1


async def test_pid_file_follows_a_restart(tmp_path: Path, spawn) -> None:
    pid_file = tmp_path / "app.pid"
    first = spawn("pid-file")
    pid_file.write_text(f"{first.pid}\n")
    settings = make_settings(tmp_path, process={"pid_file": pid_file, "interval": 0.1})
    async with serve(settings) as c:
        s = await c.wait_for(_up(1))
        assert value(s, "app_process_start_time_seconds") == psutil.Process(first.pid).create_time()
        first.kill()
        first.wait()
        await c.wait_for(_up(0))
        second = spawn("pid-file")
        pid_file.write_text(f"{second.pid}\n")
        s = await c.wait_for(_up(1))
        assert value(s, "app_process_start_time_seconds") == psutil.Process(second.pid).create_time()


async def test_regex_match_rediscovers_a_new_pid(tmp_path: Path, spawn) -> None:
    marker = f"app-{uuid.uuid4().hex}"
    first = spawn(marker)
    settings = make_settings(tmp_path, process={"match": marker, "interval": 0.1})
    async with serve(settings) as c:
        s = await c.wait_for(_up(1))
        assert value(s, "app_process_start_time_seconds") == psutil.Process(first.pid).create_time()
        first.kill()
        first.wait()
        s = await c.wait_for(_up(0))
        second = spawn(marker)
        s = await c.wait_for(_up(1))
        assert value(s, "app_process_start_time_seconds") == psutil.Process(second.pid).create_time()


async def test_unreadable_pid_file_reports_down_and_keeps_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    pid_file.write_text("not-a-pid\n")
    settings = make_settings(tmp_path, process={"pid_file": pid_file, "interval": 0.1})
    async with serve(settings) as c:
        s = await c.wait_for(_up(0))
        assert value(s, "collector_source_up", source="process") == 1
        assert value(s, "collector_source_errors_total", source="process", reason="process_not_found") == 1


def test_oldest_match_wins_and_the_collector_never_matches_itself(spawn) -> None:
    marker = f"app-{uuid.uuid4().hex}"
    parent = spawn(marker)
    spawn(marker)
    proc, reason = find_process(ProcessSettings(match=marker))
    assert reason == "" and proc is not None and proc.pid == parent.pid
    me = psutil.Process()
    own = ProcessSettings(match=" ".join(me.cmdline()).replace("[", r"\[")[:40] or "python")
    found, _ = find_process(own)
    assert found is None or found.pid != me.pid
