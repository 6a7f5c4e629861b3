"""Chaos campaign for exactly-once log counting: seeded rotations, crashes and faults against the real collector.

Each cycle starts the real `collector` as a subprocess on a fresh directory, appends numbered JSON lines
(winston's shape) at about 2,000 lines/s from a writer thread (partial writes and bursts included), and
plays one scenario: renames, real `logrotate` runs (create, copytruncate, dateext, compress with and
without delaycompress), delete and re-create, `kill -9` and SIGTERM at random points (also right after
a rotation), several rotations while the collector is down, an unreadable file or a missing directory
across a restart, a slow copy, inode reuse, and a locked or unwritable state store at start-up.

Ground truth comes from the files on disk at the end (every file in the log directory, compressed ones
decompressed), never from the collector. Lines carry a block number (`blk` = line // 100) and a rule
counts lines per block, so a loss and a double count cannot cancel out in one total:

    written     lines the writer wrote
    expected    complete lines on disk at the end: each must be counted exactly once
    counted     what the collector's counter says
    lost        expected lines not counted (must be 0)
    doubled     lines counted more often than they exist (must be 0)
    vanished    written lines in no file at the end (deleted while down, a copytruncate window); they
                may or may not have been read before they vanished
    gone_uncounted   vanished lines that were not counted; `loss_events` is what the collector's
                `collector_log_losses_total` says about them
    decreased   scrapes where the counter was below a value served before (a restart must never do that)

    python -m bench.chaos --cycles 200 --config live --seed 1
    python -m bench.chaos --cycles 200 --config glob --seed 1
    python -m bench.chaos --cycles 3 --scenario rename_down     # one scenario, to replay a failure

Prints one line per cycle and a table per scenario; exits 1 when anything was lost, doubled or decreased.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import gzip
import json
import lzma
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
BLOCK = 100
RULES = """\
rules:
  - metric: chaos_lines_total
    type: counter
    help: Chaos campaign lines by block of 100 line numbers.
    match: {message: request}
    labels:
      blk: blk
    max_series: 1000000
"""
# Root reads a chmod 000 file anyway: as root, the collector runs without the capabilities that
# bypass file permissions (as it would run in a container), so "unreadable" means unreadable.
_DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


# -- the app: a writer appending numbered lines --------------------------------------------------------
class Writer(threading.Thread):
    """Appends numbered lines to `app.log` (O_APPEND, like winston), reopening it on request."""

    def __init__(self, logdir: Path, rng: random.Random, rate: float = 2000.0) -> None:
        super().__init__(daemon=True)
        self.logdir = logdir
        self.rng = rng
        self.rate = rate
        self.n = 0  # lines started (a partial line counts once its rest is written)
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.paused = threading.Event()
        self.fd = self._open()
        self.partial: bytes = b""  # the rest of a line whose first part was written
        self.reopen_req = logdir.parent / "reopen.req"

    def _open(self) -> int:
        return os.open(self.logdir / "app.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def line(self, i: int) -> bytes:
        # winston's JSON format: level, message, then the app's fields, then timestamp
        doc = {"level": "info", "message": "request", "blk": str(i // BLOCK), "i": i, "ts": time.time()}
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    def reopen(self) -> None:
        with self.lock:
            self._finish_partial()
            os.close(self.fd)
            self.fd = self._open()

    def _finish_partial(self) -> None:
        if self.partial:
            os.write(self.fd, self.partial)
            self.partial = b""

    def write_lines(self, count: int) -> None:
        with self.lock:
            self._finish_partial()
            buf = b"".join(self.line(self.n + k) for k in range(count))
            self.n += count
            if count and self.rng.random() < 0.3:
                # A line written in two parts: the collector must wait for its newline.
                cut = len(buf) - self.rng.randint(1, 40)
                buf, self.partial = buf[:cut], buf[cut:]
            os.write(self.fd, buf)

    def run(self) -> None:
        period = 0.01
        while not self.stop_flag.is_set():
            if self.reopen_req.exists():
                self.reopen()  # logrotate's postrotate asked (like a SIGHUP handler)
                with contextlib.suppress(FileNotFoundError):
                    self.reopen_req.unlink()
            if not self.paused.is_set():
                burst = self.rng.random() < 0.01
                self.write_lines(2000 if burst else max(1, int(self.rate * period)))
            time.sleep(period)

    def finish(self) -> None:
        self.stop_flag.set()
        self.join()
        with self.lock:
            self._finish_partial()
            os.close(self.fd)


# -- the collector as a real process -----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric_sums(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name.endswith("_created"):
                continue
            key = sample.name
            if sample.name == "chaos_lines_total":
                key = f"blk:{sample.labels['blk']}"
            elif "reason" in sample.labels:
                key = f"{sample.name}:{sample.labels['reason']}"
            out[key] = out.get(key, 0.0) + sample.value
    return out


class Collector:
    def __init__(self, work: Path, paths: str, rng: random.Random) -> None:
        self.work = work
        self.paths = paths
        self.rng = rng
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def start(self, fsize_limit: int | None = None) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        env.update(
            {
                "COLLECTOR_LISTEN": f"127.0.0.1:{self.port}",
                "COLLECTOR_DATA_DIR": str(self.work / "data"),
                "COLLECTOR_LOGS__PATHS": self.paths,
                "COLLECTOR_LOGS__START_AT": "beginning",
                "COLLECTOR_LOGS__POLL_INTERVAL": "0.2",
                "COLLECTOR_LOGS__CHECKPOINT_INTERVAL": str(self.rng.choice([0.2, 0.5, 1.0])),
                "COLLECTOR_LOGS__RULES": str(self.work / "rules.yaml"),
                "COLLECTOR_LOGS__MAX_SERIES": "1000000",
                "COLLECTOR_LOG_LEVEL": "warning",
            }
        )

        def child() -> None:
            if fsize_limit is not None:
                # A full disk for the store: writes past this size fail (EFBIG); lifted later.
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, resource.RLIM_INFINITY))

        self.starts += 1
        stderr = (self.work / f"collector-{self.starts}.stderr").open("wb")
        self.proc = subprocess.Popen(
            [*(_DROP_DAC if os.geteuid() == 0 else []), sys.executable, "-m", "collector"],
            env=env,
            # CHAOS_COLLECTOR_DIR: run another checkout's `collector` package (e.g. an older commit's,
            # to see the campaign catch what it fixed); by default this repository's.
            cwd=os.environ.get("CHAOS_COLLECTOR_DIR", str(REPO)),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=child,
        )
        stderr.close()

    def lift_fsize(self) -> None:
        if self.proc is not None:
            resource.prlimit(
                self.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )

    def scrape(self) -> dict[str, float] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                return _metric_sums(resp.read().decode())
        except OSError:
            return None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /health/ready says ready (the logs source restored and made its first checkpoint)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.port}/health/ready"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.05)
        raise RuntimeError(f"collector not ready after {timeout}s: {self.stderr_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def sigterm(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def stderr_tail(self) -> str:
        parts = []
        for p in sorted(self.work.glob("collector-*.stderr")):
            parts.append(p.read_text(errors="replace")[-1500:])
        return "\n".join(parts)


class Scraper(threading.Thread):
    """Scrapes all the time, like Prometheus, and checks that no counter ever goes below a served value."""

    def __init__(self, collector: Collector) -> None:
        super().__init__(daemon=True)
        self.collector = collector
        self.stop_flag = threading.Event()
        self.best: dict[str, float] = {}
        self.decreased = 0
        self.examples: list[str] = []

    def run(self) -> None:
        while not self.stop_flag.is_set():
            m = self.collector.scrape() if self.collector.running() else None
            if m:
                for key, v in m.items():
                    if key.startswith("blk:") or key.startswith("collector_log_lines_total"):
                        if v < self.best.get(key, 0.0):
                            self.decreased += 1
                            if len(self.examples) < 3:
                                self.examples.append(f"{key}: {self.best[key]} -> {v}")
                        self.best[key] = max(v, self.best.get(key, 0.0))
            time.sleep(0.05)


# -- one cycle -----------------------------------------------------------------------------------------
@dataclass
class Result:
    scenario: str
    config: str
    seed: int
    written: int = 0
    expected: int = 0
    counted: int = 0
    lost: int = 0
    doubled: int = 0
    vanished: int = 0
    gone_uncounted: int = 0
    loss_events: int = 0
    decreased: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.decreased == 0


class Cycle:
    def __init__(self, scenario: str, config: str, seed: int, keep: bool = False) -> None:
        self.scenario = scenario
        self.config = config
        self.seed = seed
        self.rng = random.Random(f"{seed}:{scenario}:{config}")
        self.work = Path(tempfile.mkdtemp(prefix="chaos-"))
        self.keep = keep
        self.logdir = self.work / "logs"
        self.logdir.mkdir()
        (self.work / "data").mkdir()
        (self.work / "rules.yaml").write_text(RULES)
        live = str(self.logdir / "app.log")
        self.collector = Collector(self.work, live if config == "live" else live + "*", self.rng)
        self.writer = Writer(self.logdir, self.rng)
        self.rotations = 0
        self.notes: list[str] = []

    # helpers the scenarios use
    def sleep(self, lo: float, hi: float) -> None:
        time.sleep(self.rng.uniform(lo, hi))

    def restart(self, how: str = "kill9") -> None:
        if how == "kill9":
            self.collector.kill9()
        else:
            self.collector.sigterm()
        self.collector.start()

    def logrotate(self, *options: str, reopen: bool = True) -> None:
        """Run the real logrotate once (-f) with these directives for app.log."""
        self.rotations += 1
        conf = self.work / "logrotate.conf"
        post = ""
        if reopen and "copytruncate" not in options:
            req = self.work / "reopen.req"
            # postrotate waits until the app reopened its file (what a SIGHUP handler does), so a
            # compress that follows never compresses a file the app still writes to.
            post = (
                f"  postrotate\n    touch {req}\n    while [ -e {req} ]; do sleep 0.01; done\n  endscript\n"
            )
        body = "\n".join(f"  {o}" for o in ("rotate 20", "missingok", "ifempty", *options))
        conf.write_text(f"{self.logdir / 'app.log'} {{\n{body}\n{post}}}\n")
        os.chmod(conf, 0o644)
        subprocess.run(
            ["logrotate", "-f", "-s", str(self.work / "logrotate.state"), str(conf)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def rename(self) -> None:
        """`mv app.log app.log.N+1` shifting older copies (the numbered scheme), then the app reopens."""
        self.rotations += 1
        names = sorted(
            (p for p in self.logdir.iterdir() if p.name.startswith("app.log.") and p.name[8:].isdigit()),
            key=lambda p: -int(p.name[8:]),
        )
        for p in names:
            p.rename(self.logdir / f"app.log.{int(p.name[8:]) + 1}")
        (self.logdir / "app.log").rename(self.logdir / "app.log.1")
        self.sleep(0, 0.05)
        self.writer.reopen()

    def run(self) -> Result:
        began = time.monotonic()
        res = Result(self.scenario, self.config, self.seed)
        scraper = Scraper(self.collector)
        try:
            # The first start must see the log directory as it was before the first line: files that
            # exist at a first start are only read if the patterns match them.
            self.collector.start()
            self.collector.wait_ready()
            self.writer.start()
            scraper.start()
            SCENARIOS[self.scenario](self)
            self.sleep(0.3, 0.8)
            self.writer.finish()
            if not self.collector.running():
                self.collector.start()
            final = self._converge()
            scraper.stop_flag.set()
            scraper.join()
            self._judge(res, final)
            res.decreased = scraper.decreased
            res.notes += scraper.examples + self.notes
        finally:
            scraper.stop_flag.set()
            self.writer.stop_flag.set()
            self.collector.sigterm()
            res.seconds = round(time.monotonic() - began, 1)
            if not res.ok:
                res.notes.append(f"work dir {self.work}")
                res.notes.append(self.collector.stderr_tail()[-3000:])
            if res.ok and not self.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        return res

    def _converge(self) -> dict[str, float]:
        """Scrape until the per-block counts have not changed for 2 s (rotated files drain for 5 s)."""
        truth_total = sum(self._on_disk().values())
        deadline = time.monotonic() + 40
        last: dict[str, float] | None = None
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            m = self.collector.scrape()
            if m is not None:
                counts = {k: v for k, v in m.items() if k.startswith("blk:")}
                if counts != (last and {k: v for k, v in last.items() if k.startswith("blk:")}):
                    stable_since = time.monotonic()
                last = m
                enough = sum(counts.values()) >= truth_total
                behind = m.get("collector_log_behind_bytes", 0.0)
                if enough and behind == 0 and time.monotonic() - stable_since > 1.5:
                    break
                if not enough and time.monotonic() - stable_since > 8.0:
                    break
            time.sleep(0.1)
        return last or {}

    def _on_disk(self) -> Counter[int]:
        """Line number -> how many complete copies of it exist in the files at the end."""
        seen: Counter[int] = Counter()
        for root in (self.logdir, self.work / "logs.away"):
            if not root.is_dir():
                continue
            for p in root.iterdir():
                if not p.is_file():
                    continue
                data = _decompressed(p)
                for raw in data.split(b"\n")[:-1]:  # the last piece has no newline: not a line
                    with contextlib.suppress(ValueError):
                        doc = json.loads(raw)
                        if isinstance(doc, dict) and doc.get("message") == "request":
                            seen[int(doc["i"])] += 1
        return seen

    def _judge(self, res: Result, final: dict[str, float]) -> None:
        disk = self._on_disk()
        res.written = self.writer.n
        # A line present in two files (a copytruncate copy and the live file) is one line: the app wrote
        # it once. Only a real copy of the same bytes can show up twice; each counts once.
        on_disk_blocks: Counter[int] = Counter(i // BLOCK for i in disk)
        vanished_blocks: Counter[int] = Counter(i // BLOCK for i in range(res.written) if i not in disk)
        res.expected = len(disk)
        res.vanished = res.written - len(disk)
        counted_blocks = {int(k[4:]): int(v) for k, v in final.items() if k.startswith("blk:")}
        res.counted = sum(counted_blocks.values())
        for blk in set(on_disk_blocks) | set(vanished_blocks) | set(counted_blocks):
            c, d, v = counted_blocks.get(blk, 0), on_disk_blocks.get(blk, 0), vanished_blocks.get(blk, 0)
            res.lost += max(0, d - c)
            res.doubled += max(0, c - d - v)
            res.gone_uncounted += min(v, max(0, d + v - c))
        res.loss_events = int(sum(v for k, v in final.items() if k.startswith("collector_log_losses_total:")))


def _decompressed(p: Path) -> bytes:
    data = p.read_bytes()
    try:
        if data.startswith(b"\x1f\x8b"):
            return gzip.decompress(data)
        if data.startswith(b"BZh"):
            return bz2.decompress(data)
        if data.startswith(b"\xfd7zXZ\x00"):
            return lzma.decompress(data)
    except (OSError, EOFError, lzma.LZMAError):
        return b""
    return data


# -- scenarios -----------------------------------------------------------------------------------------
def rename(c: Cycle) -> None:
    for _ in range(c.rng.randint(1, 3)):
        c.sleep(0.3, 1.0)
        c.rename()


def rename_down(c: Cycle) -> None:
    c.sleep(0.5, 1.2)
    c.collector.kill9()
    c.sleep(0.0, 0.5)
    c.rename()
    c.sleep(0.2, 0.8)
    c.collector.start()


def kill9_after_rotation(c: Cycle) -> None:
    c.sleep(0.5, 1.2)
    if c.rng.random() < 0.5:
        c.rename()
    else:
        c.logrotate(c.rng.choice(["create", "copytruncate"]))
    c.sleep(0.0, 1.0)
    c.restart("kill9")


def crash_random(c: Cycle) -> None:
    for _ in range(c.rng.randint(1, 3)):
        c.sleep(0.2, 1.2)
        c.restart(c.rng.choice(["kill9", "kill9", "sigterm"]))


def _logrotate_running(c: Cycle, *options: str) -> None:
    for _ in range(c.rng.randint(1, 3)):
        c.sleep(0.5, 1.2)
        c.logrotate(*options)
        if "dateext" in options:
            time.sleep(1.1)  # dateformat has one-second resolution


def logrotate_create(c: Cycle) -> None:
    _logrotate_running(c, "create 0644")


def logrotate_copytruncate(c: Cycle) -> None:
    _logrotate_running(c, "copytruncate")


def logrotate_dateext(c: Cycle) -> None:
    _logrotate_running(c, "create 0644", "dateext", "dateformat -%Y%m%d-%H%M%S")


def logrotate_compress(c: Cycle) -> None:
    _logrotate_running(c, "create 0644", "compress")


def logrotate_delaycompress(c: Cycle) -> None:
    _logrotate_running(c, "create 0644", "compress", "delaycompress")


def logrotate_down(c: Cycle) -> None:
    """Several rotations of one kind while the collector is down (the mode is drawn by the seed)."""
    mode = c.rng.choice(
        [
            ("create 0644",),
            ("copytruncate",),
            ("create 0644", "compress"),
            ("create 0644", "compress", "delaycompress"),
            ("copytruncate", "compress"),
            ("create 0644", "dateext", "dateformat -%Y%m%d-%H%M%S"),
        ]
    )
    c.sleep(0.5, 1.2)
    c.collector.kill9() if c.rng.random() < 0.7 else c.collector.sigterm()
    for _ in range(c.rng.randint(1, 3)):
        c.sleep(0.2, 0.6)
        c.logrotate(*mode)
        if "dateext" in mode:
            time.sleep(1.1)
    c.sleep(0.1, 0.5)
    c.collector.start()


def delete_recreate(c: Cycle) -> None:
    c.sleep(0.5, 1.2)
    down = c.rng.random() < 0.5
    if down:
        c.collector.kill9()
    (c.logdir / "app.log").unlink()
    c.writer.reopen()
    c.sleep(0.2, 0.6)
    if down:
        c.collector.start()


def inode_reuse(c: Cycle) -> None:
    """Down: the file's inode ends up holding other content (deleted and re-created, which the file
    system may give the same inode, or truncated and rewritten in place: the same inode for sure)."""
    c.sleep(0.5, 1.2)
    c.collector.sigterm() if c.rng.random() < 0.5 else c.collector.kill9()
    log = c.logdir / "app.log"
    before = log.stat().st_ino
    c.writer.paused.set()
    with c.writer.lock:
        c.writer._finish_partial()
        if c.rng.random() < 0.5:
            log.unlink()
        else:
            os.truncate(log, 0)
    c.writer.reopen()
    c.writer.paused.clear()
    c.sleep(0.2, 0.5)
    c.notes.append(f"inode {'reused' if log.stat().st_ino == before else 'new'}")
    c.collector.start()


def unreadable(c: Cycle) -> None:
    c.sleep(0.5, 1.2)
    c.collector.kill9()
    log = c.logdir / "app.log"
    os.chmod(log, 0)
    c.collector.start()
    c.sleep(1.0, 2.0)
    os.chmod(log, 0o644)


def missing_dir(c: Cycle) -> None:
    """A late volume mount: the log directory is absent when the collector starts, then appears."""
    c.sleep(0.5, 1.2)
    c.collector.kill9()
    away = c.work / "logs.away"
    c.logdir.rename(away)
    c.collector.start()
    c.sleep(1.0, 2.0)
    away.rename(c.logdir)


def slow_copy(c: Cycle) -> None:
    """copytruncate by a slow copier: the copy exists empty first and grows, then the file is truncated."""
    c.sleep(0.5, 1.2)
    src = c.logdir / "app.log"
    dst = c.logdir / "app.log.1"
    with c.writer.lock:
        c.writer._finish_partial()
        data = src.read_bytes()
        with dst.open("wb") as f:
            f.flush()
            time.sleep(c.rng.uniform(0.3, 0.8))  # seen empty by a scan or two
            step = max(1, len(data) // 5)
            for k in range(0, len(data), step):
                f.write(data[k : k + step])
                f.flush()
                time.sleep(0.1)
        os.truncate(src, 0)
    c.rotations += 1


def store_locked(c: Cycle) -> None:
    """Another process holds the state store's write lock while the collector starts."""
    c.sleep(0.5, 1.2)
    c.collector.kill9()
    db = c.work / "data" / "state.db"
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        c.collector.start()
        c.sleep(6.0, 8.0)  # longer than the store's 5 s busy timeout
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def store_full(c: Cycle) -> None:
    """The state store cannot grow at start-up (a full disk: writes fail), then space comes back."""
    c.sleep(0.5, 1.2)
    c.collector.kill9()
    c.collector.start(fsize_limit=1)
    c.sleep(2.0, 4.0)
    c.collector.lift_fsize()


SCENARIOS: dict[str, Callable[[Cycle], None]] = {
    "rename": rename,
    "rename_down": rename_down,
    "kill9_after_rotation": kill9_after_rotation,
    "crash_random": crash_random,
    "logrotate_create": logrotate_create,
    "logrotate_copytruncate": logrotate_copytruncate,
    "logrotate_dateext": logrotate_dateext,
    "logrotate_compress": logrotate_compress,
    "logrotate_delaycompress": logrotate_delaycompress,
    "logrotate_down": logrotate_down,
    "delete_recreate": delete_recreate,
    "inode_reuse": inode_reuse,
    "unreadable": unreadable,
    "missing_dir": missing_dir,
    "slow_copy": slow_copy,
    "store_locked": store_locked,
    "store_full": store_full,
}


def campaign(
    cycles: int,
    config: str,
    seed: int,
    scenarios: list[str] | None = None,
    out: Callable[[str], None] = print,
    keep: bool = False,
) -> list[Result]:
    """Run `cycles` cycles, scenarios in a seeded order (every scenario before any repeats)."""
    names = scenarios or list(SCENARIOS)
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < cycles:
        batch = list(names)
        rng.shuffle(batch)
        order += batch
    results = []
    for k, name in enumerate(order[:cycles]):
        res = Cycle(name, config, seed * 100_000 + k, keep).run()
        results.append(res)
        out(
            f"{k + 1:4d} {config:4s} {name:24s} written={res.written} expected={res.expected} "
            f"counted={res.counted} lost={res.lost} doubled={res.doubled} vanished={res.vanished} "
            f"gone_uncounted={res.gone_uncounted} loss_events={res.loss_events} "
            f"decreased={res.decreased} {res.seconds}s{'' if res.ok else '  FAIL'}"
            + "".join(f" [{n}]" for n in res.notes if len(n) < 60)
        )
        for note in res.notes if not res.ok else []:
            out("      " + note.replace("\n", "\n      "))
    return results


def table(results: list[Result]) -> str:
    cols = ("cycles", "written", "expected", "counted", "lost", "doubled", "vanished", "gone_uncounted",
            "loss_events", "decreased")  # fmt: skip
    rows: dict[tuple[str, str], list[int]] = {}
    for r in results:
        row = rows.setdefault((r.config, r.scenario), [0] * len(cols))
        vals = (1, r.written, r.expected, r.counted, r.lost, r.doubled, r.vanished, r.gone_uncounted,
                r.loss_events, r.decreased)  # fmt: skip
        for i, v in enumerate(vals):
            row[i] += v
    lines = [f"{'config':6s} {'scenario':24s} " + " ".join(f"{c:>14s}" for c in cols)]
    total = [0] * len(cols)
    for (config, scenario), row in sorted(rows.items()):
        lines.append(f"{config:6s} {scenario:24s} " + " ".join(f"{v:14d}" for v in row))
        total = [a + b for a, b in zip(total, row, strict=True)]
    lines.append(f"{'all':6s} {'':24s} " + " ".join(f"{v:14d}" for v in total))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--config", choices=["live", "glob", "both"], default="both")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--keep", action="store_true", help="keep each cycle's directory")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if shutil.which("logrotate") is None:
        print("logrotate is not installed (apt-get install logrotate)", file=sys.stderr)
        return 2
    configs = ["live", "glob"] if args.config == "both" else [args.config]
    results: list[Result] = []
    for config in configs:
        results += campaign(args.cycles, config, args.seed, args.scenario, keep=args.keep)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
