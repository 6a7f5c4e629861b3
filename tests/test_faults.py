"""Faults against the real collector: a full disk under the state store, a corrupt state file, a log
directory it may not read, the app process vanishing. Each: it keeps serving, says so in metrics and
/health, recovers by itself when the fault clears, and loses no counted data (checked after a restart)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, free_port, parse, value
from tests.sources.stripe_helpers import SECRET, body_of, event, sign


def _until(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.1)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post_stripe(url: str, ev: dict) -> int:  # type: ignore[type-arg]
    body = body_of(ev)
    req = urllib.request.Request(
        url + "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign(body, SECRET), "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _lines(path: Path, start: int, n: int) -> None:
    with path.open("a") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"level": "info", "message": "fault", "i": i}) + "\n")


def _counted(proc: CollectorProcess) -> float:
    return sum(s.value for s in proc.scrape().get("app_log_lines_total", []))


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A real small filesystem (tmpfs) at `path`: writes fail with ENOSPC once it is full."""
    path.mkdir(parents=True)
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if out.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {out.stderr.decode().strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_keeps_serving_reports_and_loses_nothing(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    with tiny_disk(tmp_path / "disk") as disk:
        env = {
            "COLLECTOR_DATA_DIR": str(disk / "data"),
            "COLLECTOR_LOGS__PATHS": str(logs / "*.log"),
            "COLLECTOR_LOGS__START_AT": "beginning",
            "COLLECTOR_LOGS__CHECKPOINT_INTERVAL": "0.2",
            "COLLECTOR_STRIPE__WEBHOOK_SECRETS": SECRET,
        }
        proc = CollectorProcess(env, tmp_path)
        accepted, pending = 0, []
        try:
            proc.wait_live()
            _until(lambda: _get(proc.url + "/health/ready")[0] == 200, what="ready")
            _lines(log, 0, 100)
            for _ in range(3):
                assert _post_stripe(proc.url, event("payment_intent.succeeded", amount_received=100)) == 200
                accepted += 1
            _until(lambda: _counted(proc) == 100, what="first lines")
            time.sleep(0.5)  # let one checkpoint land before the disk fills
            filler = _fill(disk)
            _lines(log, 100, 100)
            for _ in range(3):
                ev = event("payment_intent.succeeded", amount_received=100)
                status = _post_stripe(proc.url, ev)
                if status == 200:
                    accepted += 1
                else:
                    assert status in (500, 503)  # "not recorded, redeliver" - never a false 200
                    pending.append(ev)
            # Still serving, counting in memory, and saying what is wrong.
            _until(lambda: _counted(proc) == 200, what="lines counted while the disk is full")
            samples = _until(
                lambda: (
                    (s := proc.scrape())
                    and (value(s, "collector_state_store_errors_total", operation="logs_checkpoint") or 0) > 0
                    and s
                ),
                what="checkpoint failures counted",
            )
            assert value(samples, "collector_source_errors_total", source="logs", reason="checkpoint_failed")
            health = json.loads(_get(proc.url + "/health")[1])
            assert "checkpoint_failed" in (health["sources"]["logs"]["last_error"] or "")
            assert _get(proc.url + "/health/live")[0] == 200
            # The fault clears: Stripe redelivers what was refused, checkpoints resume by themselves.
            filler.unlink()
            for ev in pending:
                assert _until(lambda ev=ev: _post_stripe(proc.url, ev) == 200, what="redelivery")
                accepted += 1
            failures = value(proc.scrape(), "collector_state_store_errors_total", operation="logs_checkpoint")
            time.sleep(1.0)
            assert (
                value(proc.scrape(), "collector_state_store_errors_total", operation="logs_checkpoint")
                == failures
            )
            assert proc.terminate() == 0
        finally:
            if proc.proc.poll() is None:
                proc.kill()
        # Nothing lost, nothing counted twice: a fresh process restores exactly what was counted.
        again = CollectorProcess(env, tmp_path)
        try:
            again.wait_live()
            samples = _until(
                lambda: (
                    (s := again.scrape())
                    and sum(x.value for x in s.get("app_log_lines_total", [])) == 200
                    and s
                ),
                what="restored lines",
            )
            assert value(samples, "stripe_payments_total", currency="usd") == accepted == 6
            assert value(samples, "collector_state_store_resets_total") == 0.0
        finally:
            again.terminate()


def test_corrupt_state_file_is_moved_aside_and_the_collector_serves(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.db").write_bytes(b"this is not a database" * 100)
    logs = tmp_path / "logs"
    logs.mkdir()
    _lines(logs / "app.log", 0, 10)
    env = {
        "COLLECTOR_DATA_DIR": str(data),
        "COLLECTOR_LOGS__PATHS": str(logs / "*.log"),
        "COLLECTOR_LOGS__START_AT": "beginning",
    }
    proc = CollectorProcess(env, tmp_path)
    try:
        proc.wait_live()
        samples = _until(
            lambda: (
                (s := proc.scrape()) and sum(x.value for x in s.get("app_log_lines_total", [])) == 10 and s
            )
        )
        assert value(samples, "collector_state_store_resets_total") == 1.0
        health = json.loads(_get(proc.url + "/health")[1])
        assert health["state_store"]["resets"] == 1 and health["state_store"]["open"] is True
        assert [p.name for p in data.iterdir() if p.name.startswith("state.db.corrupt-")]
    finally:
        assert proc.terminate() == 0


def _as_nobody(env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "collector"]
    return subprocess.Popen(
        cmd,
        env={
            **base,
            **env,
            "COLLECTOR_LISTEN": f"127.0.0.1:{port}",
            "PYTHONPATH": str(Path(__file__).parent.parent),
        },
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=(cwd / "stderr.log").open("wb"),
    )


def test_log_directory_permission_loss_is_reported_and_recovered_as_non_root() -> None:
    # Root reads any file whatever its mode, so the collector runs as nobody here (setpriv).
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the collector as an unprivileged user")
    work = Path(tempfile.mkdtemp(prefix="collector-perm-"))
    try:
        work.chmod(0o777)
        logs, data = work / "logs", work / "data"
        logs.mkdir(mode=0o755)
        data.mkdir()
        os.chown(data, 65534, 65534)
        log = logs / "app.log"
        _lines(log, 0, 50)
        log.chmod(0o644)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            "COLLECTOR_DATA_DIR": str(data),
            "COLLECTOR_LOGS__PATHS": str(logs / "*.log"),
            "COLLECTOR_LOGS__START_AT": "beginning",
            "COLLECTOR_LOGS__POLL_INTERVAL": "0.2",
        }
        proc = _as_nobody(env, work, port)
        try:
            scrape = lambda: parse(_get(url + "/metrics")[1].decode())  # noqa: E731
            _until(
                lambda: _safe(lambda: sum(s.value for s in scrape().get("app_log_lines_total", [])) == 50),
                what="start",
            )
            # The directory turns unreadable: the open file keeps being followed (the fd stays valid).
            logs.chmod(0o000)
            _lines(log, 50, 25)  # root still writes
            _until(
                lambda: _safe(lambda: sum(s.value for s in scrape().get("app_log_lines_total", [])) == 75),
                what="open fd",
            )
            # ... and the directory it can no longer list is reported (glob alone would be silent).
            _until(
                lambda: _safe(
                    lambda: (
                        value(scrape(), "collector_log_file_errors_total", reason="permission_denied") == 1
                    )
                ),
                what="directory permission error counted",
            )
            logs.chmod(0o755)
            # Rotation to a file the collector may not read (logrotate `create 0600 root root`).
            log.rename(logs / "app.log.1")
            fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
            _lines(log, 75, 25)
            samples = _until(
                lambda: _safe(
                    lambda: (
                        (s := scrape())
                        and value(s, "collector_log_file_errors_total", reason="permission_denied") == 2
                        and s
                    )
                ),
                what="permission error counted",
            )
            # the directory once and the file once, not once per poll
            assert value(samples, "collector_log_file_errors_total", reason="permission_denied") == 2.0
            assert _get(url + "/health/live")[0] == 200
            log.chmod(0o644)  # the fault clears
            _until(
                lambda: _safe(lambda: sum(s.value for s in scrape().get("app_log_lines_total", [])) == 100),
                what="recovery",
            )
            time.sleep(1.0)
            assert sum(s.value for s in scrape().get("app_log_lines_total", [])) == 100  # each line once
        finally:
            proc.terminate()
            assert proc.wait(15) == 0, (work / "stderr.log").read_text()
    finally:
        with contextlib.suppress(OSError):
            (work / "logs").chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)


def _safe(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except OSError:
        return False


def test_app_process_vanishing_and_returning_is_followed(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    app = subprocess.Popen(["sleep", "600"])
    pid_file.write_text(str(app.pid))
    proc = CollectorProcess(
        {
            "COLLECTOR_PROCESS__PID_FILE": str(pid_file),
            "COLLECTOR_PROCESS__INTERVAL": "0.2",
            "COLLECTOR_DATA_DIR": str(tmp_path / "d"),
        },
        tmp_path,
    )
    second = None
    try:
        proc.wait_live()
        _until(lambda: value(proc.scrape(), "app_process_up") == 1.0, what="app up")
        app.kill()
        app.wait()
        _until(lambda: value(proc.scrape(), "app_process_up") == 0.0, what="app gone")
        assert _get(proc.url + "/health/live")[0] == 200
        second = subprocess.Popen(["sleep", "600"])
        pid_file.write_text(str(second.pid))
        _until(lambda: value(proc.scrape(), "app_process_up") == 1.0, what="app back")
        assert _get(proc.url + "/health/ready")[0] == 200
    finally:
        if second is not None:
            second.kill()
        assert proc.terminate() == 0
