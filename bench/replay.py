"""Replay benchmark: `collector replay` vs `mtail --one_shot` on the same genlogs file, same counts.

Both run as child processes; CPU is the child's user+system time from `wait4`, so start-up counts too
(as it does for mtail). Counts are compared series by series after mapping mtail's names to ours.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

BENCH = Path(__file__).resolve().parent
RULES = BENCH / "app_rules.yaml"
MTAIL_PROG = BENCH / "app.mtail"
#: mtail label name -> collector label name (the catalog says status_code); `prog` is mtail's own.
LABEL_MAP = {"status": "status_code"}
DROP_LABELS = {"prog"}

#: The decode floor: msgspec `decode_lines` of the same file into the fields bench/app_rules.yaml
#: reads, nothing else (no rules, no metrics), in the same 4 MiB chunks; a child process like ours.
DECODE_FLOOR = """
import sys, msgspec
class L(msgspec.Struct):
    message: str | None = None
    method: str | None = None
    route: str | None = None
    status: int | str | None = None
    duration_ms: float | None = None
    outcome: str | None = None
    event_type: str | None = None
    severity: str | None = None
    content_type: str | None = None
    access_level: str | None = None
dec = msgspec.json.Decoder(L)
n = 0
with open(sys.argv[1], "rb") as f:
    rest = b""
    while chunk := f.read(4 << 20):
        buf = rest + chunk
        cut = buf.rfind(b"\\n") + 1
        n += len(dec.decode_lines(buf[:cut]))
        rest = buf[cut:]
print(n)
"""

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def generate(lines: int, path: Path) -> Path:
    """Write `lines` lines of bench/genlogs.py output to `path` (reused when already there)."""
    if path.exists() and path.stat().st_size > 0:
        return path
    with path.open("wb") as out:
        subprocess.run([sys.executable, str(BENCH / "genlogs.py"), str(lines)], stdout=out, check=True)
    return path


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run `cmd`; (wall seconds, CPU seconds of the child, stdout)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-out-{os.getpid()}.txt"
    with out_path.open("wb") as out:
        began = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text()
    out_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, text


def series(text: str, mtail: bool = False) -> Series:
    """Every counter value and histogram count, keyed by (sample name, sorted labels), names mapped."""
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if fam.type == "histogram" and not s.name.endswith("_count"):
                continue  # counts compared; mtail leaves values above the last bucket out of +Inf
            if fam.type not in ("counter", "histogram"):
                continue
            labels = tuple(
                sorted(
                    (LABEL_MAP.get(k, k) if mtail else k, v)
                    for k, v in s.labels.items()
                    if k not in DROP_LABELS
                )
            )
            name = s.name if s.name.endswith(("_total", "_count")) else s.name + "_total"
            out[(name, labels)] = s.value
    return out


def compare(ours: Series, theirs: Series) -> list[str]:
    """Differences between two series maps, one line each (empty: identical counts)."""
    diffs = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None or not math.isclose(a, b, rel_tol=0, abs_tol=1e-9):
            diffs.append(f"{key[0]}{dict(key[1])}: collector {a} mtail {b}")
    return diffs


def bench_replay(lines: int, runs: int, workdir: Path) -> dict[str, Any]:
    """Median lines per CPU-second of both tools over `runs` runs, and whether every count agrees."""
    log = generate(lines, workdir / f"genlogs-{lines}.log")
    # An installed package has its bytecode compiled (pip does it); a checkout under
    # PYTHONDONTWRITEBYTECODE would recompile every module at each start (~50 ms here).
    import collector

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(collector.__file__).parent)], check=True
    )
    ours_cmd = [sys.executable, "-m", "collector", "replay", "--rules", str(RULES), str(log)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    mtail = shutil.which("mtail")
    cmd = [
        str(mtail),
        "--one_shot",
        "--one_shot_format",
        "prometheus",
        "--progs",
        str(MTAIL_PROG),
        "--logs",
        str(log),
        # one_shot still opens its HTTP listener: an ephemeral loopback port cannot clash with another mtail
        "--address",
        "127.0.0.1",
        "--port",
        "0",
    ]
    floor_cmd = [sys.executable, "-c", DECODE_FLOOR, str(log)]
    empty = log.with_name("empty.log")
    empty.touch()
    empty_cmd = [*ours_cmd[:-1], str(empty)]
    # Start-up beside its floors: the same command with a preset (no YAML file to parse) and the
    # interpreter alone (`python -c pass`, site and .pth files included, as every start pays them).
    preset_cmd = [sys.executable, "-m", "collector", "replay", "--preset", "winston", str(empty)]
    # replay keeps the parsed rules file in the user's cache dir (collector/rules/yamlcache.py): the
    # YAML figure is a re-run's; the cold one (a fresh cache dir each run) pays PyYAML's import too.
    cold = Path(tempfile.mkdtemp(prefix="bench-replay-cache-"))
    python_cmd = [sys.executable, "-c", "pass"]
    # Runs alternate (ours, mtail, ours, ...): the machine's speed drifts over minutes here, and
    # alternating lets the drift hit both sides of the ratio alike.
    ours_cpu, ours_wall, m_cpu, m_wall, text, mtext = [], [], [], [], "", ""
    floor_cpu: list[float] = []
    empty_cpu: list[float] = []
    cold_cpu: list[float] = []
    preset_cpu: list[float] = []
    python_cpu: list[float] = []
    for _ in range(runs):
        wall, cpu, text = run_child(ours_cmd, env)
        ours_cpu.append(cpu)
        ours_wall.append(wall)
        floor_cpu.append(run_child(floor_cmd, env)[1])
        empty_cpu += [run_child(empty_cmd, env)[1] for _ in range(3)]
        for _ in range(3):
            cold_cpu.append(run_child(empty_cmd, {**env, "XDG_CACHE_HOME": str(cold / str(len(cold_cpu)))})[1])
        preset_cpu += [run_child(preset_cmd, env)[1] for _ in range(3)]
        python_cpu += [run_child(python_cmd, env)[1] for _ in range(3)]
        if mtail is not None:
            wall, cpu, mtext = run_child(cmd)
            m_cpu.append(cpu)
            m_wall.append(wall)
    shutil.rmtree(cold, ignore_errors=True)
    ours = series(text)
    total = sum(v for (name, _l), v in ours.items() if name == "http_requests_total")
    result: dict[str, Any] = {
        "lines": lines,
        "collector_cpu_s": statistics.median(ours_cpu),
        "collector_wall_s": statistics.median(ours_wall),
        "collector_lps_cpu": lines / statistics.median(ours_cpu),
        "collector_series": len(ours),
        "floor_cpu_s": statistics.median(floor_cpu),
        "floor_ratio": statistics.median(floor_cpu) / statistics.median(ours_cpu),
        "empty_startup_cpu_ms": 1000 * statistics.median(empty_cpu),
        "empty_startup_cold_cpu_ms": 1000 * statistics.median(cold_cpu),
        "empty_startup_preset_cpu_ms": 1000 * statistics.median(preset_cpu),
        "python_startup_cpu_ms": 1000 * statistics.median(python_cpu),
        "http_requests": total,
    }
    if mtail is None:
        result["mtail"] = "skipped: mtail not installed (apt-get install mtail)"
        return result
    diffs = compare(ours, series(mtext, mtail=True))
    result.update(
        mtail="ran",
        mtail_cpu_s=statistics.median(m_cpu),
        mtail_wall_s=statistics.median(m_wall),
        mtail_lps_cpu=lines / statistics.median(m_cpu),
        ratio=statistics.median(m_cpu) / statistics.median(ours_cpu),
        counts_identical=not diffs,
        diffs=diffs[:10],
    )
    return result
