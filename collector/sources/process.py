"""App process metrics: find the app by PID, PID file or name/cmdline regex and sample it with psutil.

Names mirror prometheus_client's process collector with an `app_` prefix. Sampling runs in a worker
thread (psutil reads /proc synchronously). A vanished app gives `app_process_up 0` and the other series
disappear; the next sample looks for it again, so a restart under a new PID is picked up.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from collector.logsetup import LogFirst
from collector.settings import ProcessSettings
from collector.source import SourceBase, SourceContext

__all__ = ["ProcessSource", "Sample", "find_process"]


@dataclass
class Sample:
    pid: int
    values: dict[str, float]  # family name -> value; fields we may not read are absent


def find_process(settings: ProcessSettings, own_pid: int | None = None) -> tuple[psutil.Process | None, str]:
    """Locate the app process.

    Returns:
        The process (or None) and a short reason when it was not found.
    """
    if settings.pid_file is not None:
        try:
            text = Path(settings.pid_file).read_text().strip()
            pid = int(text.split()[0])
        except (OSError, ValueError, IndexError) as exc:
            return None, f"pid file {settings.pid_file} unreadable: {exc}"
        return _process(pid)
    if settings.pid is not None:
        return _process(settings.pid)
    assert settings.match is not None
    own = own_pid if own_pid is not None else os.getpid()
    best: psutil.Process | None = None
    best_created = float("inf")
    for proc in psutil.process_iter(["name", "cmdline", "create_time", "status"]):
        info = proc.info
        if proc.pid == own or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = f"{info['name'] or ''} {' '.join(info['cmdline'] or ())}"
        # The oldest match is the app's main process (cluster workers and children start later).
        if settings.match.search(text) and (info["create_time"] or 0) < best_created:
            best, best_created = proc, info["create_time"] or 0
    if best is None:
        return None, f"no process matches {settings.match.pattern!r}"
    return best, ""


def _process(pid: int) -> tuple[psutil.Process | None, str]:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None, f"process {pid} is a zombie"
        return proc, ""
    except psutil.NoSuchProcess:
        return None, f"pid {pid}"
    except psutil.AccessDenied:
        return psutil.Process(pid), ""


class ProcessSource(SourceBase):
    """Samples the app process every `COLLECTOR_PROCESS__INTERVAL` seconds."""

    name = "process"
    #: `collector_source_errors_total{reason}` values, at 0 from start-up.
    error_reasons = ("process_not_found",)

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.settings: ProcessSettings = ctx.settings
        m = ctx.metrics
        self.up = m.gauge(
            "app_process_up", "1 when the app process is found and readable, 0 when it is gone."
        )
        self.families = {
            f.name: f
            for f in (
                m.counter(
                    "app_process_cpu_seconds_total", "App process user and system CPU time in seconds."
                ),
                m.gauge("app_process_resident_memory_bytes", "App process resident memory size in bytes."),
                m.gauge("app_process_virtual_memory_bytes", "App process virtual memory size in bytes."),
                m.gauge("app_process_open_fds", "Number of open file descriptors of the app process."),
                m.gauge("app_process_max_fds", "Soft limit on open file descriptors of the app process."),
                m.gauge(
                    "app_process_start_time_seconds",
                    "Start time of the app process since the epoch in seconds.",
                ),
                m.gauge("app_process_threads", "Number of OS threads of the app process."),
            )
        }
        self.proc: psutil.Process | None = None
        self._missing_reason = ""
        self._log_first = LogFirst(ctx.log)

    async def run(self) -> None:
        self.ctx.started()
        while True:
            sample, reason = await asyncio.to_thread(self.sample)
            self._apply(sample, reason)
            if await self.ctx.sleep(self.settings.interval):
                return

    def sample(self) -> tuple[Sample | None, str]:
        """Find (or re-find) the app process and read it; runs in a worker thread."""
        proc = self.proc
        if self.settings.pid_file is not None or proc is None or not _alive(proc):
            proc, reason = find_process(self.settings)
            if proc is None:
                return None, reason
        values: dict[str, float] = {}
        try:
            with proc.oneshot():
                for name, read in _READERS.items():
                    try:
                        values[name] = float(read(proc))
                    except psutil.AccessDenied:
                        self._log_first(name, "cannot read app process field", pid=proc.pid, field=name)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None, f"process {proc.pid} exited"
        self.proc = proc
        return Sample(proc.pid, values), ""

    def _apply(self, sample: Sample | None, reason: str) -> None:
        if sample is None:
            if self.proc is not None or reason != self._missing_reason:
                self.ctx.error("process_not_found", reason)  # logged by degraded() when it begins
            self.proc = None
            self._missing_reason = reason
            self.up.set((), 0)
            for fam in self.families.values():
                fam.clear()
            self.ctx.degraded("process", f"app process not found ({reason})")
            return
        if not self._missing_reason and not self.up.series:  # a recovery is logged by recovered()
            self.ctx.log.info("app process found", extra={"pid": sample.pid})
        self._missing_reason = ""
        self.ctx.recovered("process")
        self.up.set((), 1)
        for name, fam in self.families.items():
            value = sample.values.get(name)
            if value is None:
                fam.clear()
            else:
                fam.set((), value)


def _alive(proc: psutil.Process) -> bool:
    # is_running() also catches PID reuse (it compares the create time); zombies count as gone.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


_READERS: dict[str, Callable[[psutil.Process], float]] = {
    "app_process_cpu_seconds_total": _cpu,
    "app_process_resident_memory_bytes": lambda p: p.memory_info().rss,
    "app_process_virtual_memory_bytes": lambda p: p.memory_info().vms,
    "app_process_open_fds": lambda p: p.num_fds(),
    "app_process_max_fds": lambda p: p.rlimit(psutil.RLIMIT_NOFILE)[0],
    "app_process_start_time_seconds": lambda p: p.create_time(),
    "app_process_threads": lambda p: p.num_threads(),
}
