"""The real `collector` process following real files: graceful restart and kill -9 mid-burst, exact counts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, free_port, parse, value
from tests.sources.logtools import append, level_count, lines


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
        "COLLECTOR_LOGS__PATHS": str(tmp_path / "logs" / "*.log"),
        "COLLECTOR_LOGS__START_AT": "beginning",
        "COLLECTOR_LOGS__POLL_INTERVAL": "0.1",
        **extra,
    }


def _wait(proc: CollectorProcess, predicate, timeout: float = 30.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        m = proc.scrape()
        if predicate(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met; info={level_count(m)}; stderr: {proc.stderr()[-2000:]}")
        time.sleep(0.05)


def _ready(proc: CollectorProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(proc.url + "/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready: {proc.stderr()[-2000:]}")


def _checkpointed_info_count(tmp_path: Path) -> float:
    """`app_log_lines_total{level="info"}` as the last committed checkpoint holds it."""
    with sqlite3.connect(tmp_path / "data" / "state.db") as conn:
        row = conn.execute(
            "SELECT value FROM series WHERE owner='logs' AND family='app_log_lines_total' AND key=?",
            (json.dumps(["info"]),),
        ).fetchone()
    return 0.0 if row is None else float(json.loads(row[0]))


def test_kill_9_mid_burst_then_restart_counts_every_line_exactly_once(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log = logdir / "app.log"
    append(log, lines(2000))
    env = _env(tmp_path, COLLECTOR_LOGS__CHECKPOINT_INTERVAL="0.5")
    first = CollectorProcess(env, tmp_path)
    try:
        first.wait_live()
        _wait(first, lambda m: level_count(m) == 2000)
        deadline = time.monotonic() + 30
        while _checkpointed_info_count(tmp_path) < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)  # a periodic checkpoint holds the first 2000 lines

        def burst() -> None:
            for k in range(40):
                append(log, lines(250, "info", 2000 + k * 250))
                time.sleep(0.01)

        writer = threading.Thread(target=burst)
        writer.start()
        seen = _wait(first, lambda m: level_count(m) > 4000)
        first.kill()  # SIGKILL while the burst is being written and read
        writer.join()
    finally:
        if first.proc.poll() is None:
            first.kill()
    assert level_count(seen) < 12_000, "the burst was already fully read: kill came too late to matter"
    checkpointed = _checkpointed_info_count(tmp_path)
    assert 2000 <= checkpointed <= level_count(seen)

    second = CollectorProcess(env, tmp_path)
    try:
        _ready(second)
        assert level_count(second.scrape()) >= checkpointed  # restored, not reset
        _wait(second, lambda m: level_count(m) >= 12_000)
        time.sleep(0.5)
        m = second.scrape()
        assert level_count(m) == 12_000
        assert value(m, "collector_log_lines_total", result="parsed") == 12_000
        assert value(m, "collector_log_read_lines_total", path=str(log)) == 12_000
        assert value(m, "collector_log_read_bytes_total", path=str(log)) == log.stat().st_size
        assert second.terminate() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()


def test_lines_after_the_last_checkpoint_are_reread_once_after_kill_9_and_kept_on_graceful_stop(
    tmp_path: Path,
) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log = logdir / "app.log"
    log.touch()
    # One checkpoint at start, then none for 5 minutes: everything read before the kill is re-read.
    # (Not scraped before the kill: a scrape makes what it serves durable first.)
    env = _env(tmp_path, COLLECTOR_LOGS__CHECKPOINT_INTERVAL="300")
    first = CollectorProcess(env, tmp_path)
    try:
        _ready(first)
        append(log, lines(1000))
        time.sleep(3.0)  # read within milliseconds; this machine may be loaded
        first.kill()
    finally:
        if first.proc.poll() is None:
            first.kill()
    assert _checkpointed_info_count(tmp_path) == 0  # the checkpoint predates all 1000 lines

    second = CollectorProcess(env, tmp_path)
    try:
        _ready(second)
        _wait(second, lambda m: level_count(m) >= 1000)
        time.sleep(0.5)
        assert level_count(second.scrape()) == 1000
        assert second.terminate() == 0  # SIGTERM: checkpoint at shutdown
    finally:
        if second.proc.poll() is None:
            second.kill()
    assert _checkpointed_info_count(tmp_path) == 1000

    append(log, lines(10, "info", 1000))
    third = CollectorProcess(env, tmp_path)
    try:
        _ready(third)
        _wait(third, lambda m: level_count(m) >= 1010)
        time.sleep(0.5)
        assert level_count(third.scrape()) == 1010
        assert third.terminate() == 0
    finally:
        if third.proc.poll() is None:
            third.kill()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to start the collector as an unprivileged user",
)
def test_a_file_the_collector_may_not_read_is_counted_and_logged_and_others_are_read(tmp_path: Path) -> None:
    # Root reads mode-0600 files anyway, so run the real collector as `nobody` against a root-only file.
    base = Path(tempfile.mkdtemp(prefix="collector-perm-"))  # pytest's tmp dir is private to root
    try:
        base.chmod(0o755)
        data = base / "data"
        data.mkdir()
        os.chown(data, 65534, 65534)
        (base / "secret.log").write_bytes(lines(3))
        (base / "secret.log").chmod(0o600)
        (base / "app.log").write_bytes(lines(4))
        (base / "app.log").chmod(0o644)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        env.update(
            COLLECTOR_LISTEN=f"127.0.0.1:{port}",
            COLLECTOR_DATA_DIR=str(data),
            COLLECTOR_LOGS__PATHS=str(base / "*.log"),
            COLLECTOR_LOGS__START_AT="beginning",
            COLLECTOR_LOGS__POLL_INTERVAL="0.1",
        )
        stderr = tmp_path / "stderr"
        with stderr.open("wb") as err:
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            proc = subprocess.Popen([*drop, sys.executable, "-m", "collector"], env=env, cwd=base, stderr=err)
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        with urllib.request.urlopen(url, timeout=2) as resp:
                            m = parse(resp.read().decode())
                        if level_count(m) == 4 and value(
                            m, "collector_log_file_errors_total", reason="permission_denied"
                        ):
                            break
                    except OSError:
                        pass
                    assert time.monotonic() < deadline, stderr.read_text()
                    time.sleep(0.05)
                assert value(m, "collector_log_file_errors_total", reason="permission_denied") == 1
                assert value(m, "collector_log_read_lines_total", path=str(base / "app.log")) == 4
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(15) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        logged = [json.loads(x) for x in stderr.read_text().splitlines() if x.startswith("{")]
        denied = [e for e in logged if e.get("msg") == "cannot follow log file"]
        assert [(e["path"], e["reason"]) for e in denied] == [(str(base / "secret.log"), "permission_denied")]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_after_kill_9_no_scrape_serves_a_count_below_one_served_before(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log = logdir / "app.log"
    # Checkpoints every 5 minutes: only the scrape itself can make what it serves durable.
    env = _env(tmp_path, COLLECTOR_LOGS__CHECKPOINT_INTERVAL="300")
    first = CollectorProcess(env, tmp_path)
    try:
        _ready(first)
        append(log, lines(1000))
        served = level_count(_wait(first, lambda m: level_count(m) >= 1000))
        append(log, lines(500, "info", 1000))
        time.sleep(1.0)  # read, never scraped: these may be re-read after the crash, that is fine
        first.kill()
    finally:
        if first.proc.poll() is None:
            first.kill()
    second = CollectorProcess(env, tmp_path)
    try:
        seen: list[float] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not seen or seen[-1] < 1500):
            try:
                m = second.scrape()
            except OSError:
                time.sleep(0.01)
                continue
            if "app_log_lines_total" in m:
                seen.append(level_count(m))
            else:
                # Before the restore the family is left out, never served as a lower value.
                assert "collector_log_lines_total" not in m
        assert seen and seen[0] >= served == 1000
        assert min(seen) >= served and seen[-1] == 1500
        assert second.terminate() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()
