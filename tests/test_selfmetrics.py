"""The collector's own metrics (`collector/selfmetrics.py`, `collector/web/metrics.py`) render what
prometheus_client's registry rendered for the same events.

Ground truth: the golden outputs of the previous implementation (prometheus_client's registry,
tests/selfmetrics_differential.py) for 40 seeded event sequences, and prometheus_client's own
`ProcessCollector` reading the same copy of /proc as `ProcessMetrics`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.process_collector import ProcessCollector

from collector import __version__
from collector.selfmetrics import ProcessMetrics, SelfMetrics, SelfRegistry
from collector.web.metrics import REJECT_REASONS, HttpMetrics
from tests.selfmetrics_differential import FULL, GOLDEN, SEEDS, digest, outcome

pytestmark = pytest.mark.quick  # the quick tier: no servers, processes or sleeps

_golden = json.loads(GOLDEN.read_text())


def test_the_golden_file_covers_every_seed() -> None:
    assert set(_golden["sha256"]) == {str(s) for s in SEEDS}
    assert set(_golden["full"]) == {str(s) for s in FULL}


@pytest.mark.parametrize("seed", FULL)
def test_seeded_events_render_what_prometheus_client_rendered_in_full(seed: int) -> None:
    assert outcome(seed) == _golden["full"][str(seed)]


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_events_render_what_prometheus_client_rendered(seed: int) -> None:
    assert digest(outcome(seed)) == _golden["sha256"][str(seed)]


def _samples(body: bytes, openmetrics: bool = False) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parse = parse_openmetrics if openmetrics else parse_text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in parse(body.decode())
        for s in fam.samples
    }


def _types(body: bytes, openmetrics: bool = False) -> dict[str, str]:
    parse = parse_openmetrics if openmetrics else parse_text
    return {fam.name: fam.type for fam in parse(body.decode())}


def test_exact_values_after_known_events_in_both_formats() -> None:
    sm = SelfMetrics()
    sm.init_source("logs", ("read_failed", "open_failed"))
    sm.init_source("stripe")
    http = HttpMetrics(sm.registry, ("main",))
    sm.set_source_state("logs", "running")
    sm.set_source_state("stripe", "failed")
    for _ in range(3):
        sm.source_errors.labels("logs", "read_failed").inc()
    sm.source_restarts.labels("stripe").inc()
    sm.store_errors.labels("scrape_checkpoint").inc()
    sm.store_resets.inc()
    sm.series_overflow.labels("http_requests_total").inc(0)
    sm.loop_lag.set(0.0125)
    for _ in range(5):
        http.answered("main", 200).inc()
    http.answered("main", 404).inc()
    http.requests.labels("main", "401").inc()
    http.rejected.labels("main", "unauthorized").inc()
    http.connections.labels("main").inc()
    http.connections.labels("main").inc()
    http.connections.labels("main").dec()
    http.auth_checks.labels("verified").inc(2)
    http.reloads.labels("failure").inc()
    http.last_reload_ok.set(0)
    http.last_reload_time.set(1_764_000_000.5)
    in_flight = {("main", "metrics"): 2, ("main", "ingest"): 1}
    http.follow_budgets(in_flight)
    for openmetrics in (False, True):
        body = sm.render(openmetrics)
        got = _samples(body, openmetrics)
        assert got[("collector_source_up", (("source", "logs"),))] == 1
        assert got[("collector_source_up", (("source", "stripe"),))] == 0
        states = {
            k[1][1][1]: v
            for k, v in got.items()
            if k[0] == "collector_source_state" and k[1][0][1] == "stripe"
        }
        assert states == {"starting": 0, "running": 0, "degraded": 0, "failed": 1, "stopped": 0}
        assert got[("collector_source_errors_total", (("reason", "read_failed"), ("source", "logs")))] == 3
        assert got[("collector_source_errors_total", (("reason", "open_failed"), ("source", "logs")))] == 0
        assert got[("collector_source_restarts_total", (("source", "stripe"),))] == 1
        assert got[("collector_source_restarts_total", (("source", "logs"),))] == 0
        assert got[("collector_state_store_errors_total", (("operation", "scrape_checkpoint"),))] == 1
        assert got[("collector_state_store_errors_total", (("operation", "open"),))] == 0
        assert got[("collector_state_store_resets_total", ())] == 1
        assert got[("collector_series_overflow_total", (("metric", "http_requests_total"),))] == 0
        assert got[("collector_event_loop_lag_seconds", ())] == 0.0125
        assert got[("collector_build_info", (("python", __import__("platform").python_version()),
                                              ("version", __version__)))] == 1  # fmt: skip
        assert got[("collector_http_requests_total", (("code", "200"), ("listener", "main")))] == 5
        assert got[("collector_http_requests_total", (("code", "404"), ("listener", "main")))] == 1
        assert got[("collector_http_requests_total", (("code", "401"), ("listener", "main")))] == 1
        rejected = {k[1][1][1]: v for k, v in got.items() if k[0] == "collector_http_rejected_total"}
        assert rejected == {r: (1 if r == "unauthorized" else 0) for r in REJECT_REASONS}
        assert got[("collector_http_connections", (("listener", "main"),))] == 1
        assert got[("collector_http_auth_checks_total", (("result", "verified"),))] == 2
        assert got[("collector_http_auth_checks_total", (("result", "busy"),))] == 0
        assert got[("collector_web_config_reloads_total", (("result", "failure"),))] == 1
        assert got[("collector_web_config_last_reload_successful", ())] == 0
        assert got[("collector_web_config_last_reload_success_timestamp_seconds", ())] == 1_764_000_000.5
        assert got[("collector_http_requests_in_flight", (("listener", "main"),))] == 3
        assert (
            got[("collector_http_route_class_in_flight", (("listener", "main"), ("route_class", "ingest")))]
            == 1
        )
        assert math.isnan(got[("collector_asyncio_tasks", ())])  # rendered outside an event loop
        assert not any(name.endswith("_created") for name, _ in got)
        types = _types(body, openmetrics)
        assert (types["collector_http_requests"], types["collector_http_connections"]) == ("counter", "gauge")
        assert body.endswith(b"# EOF\n") == openmetrics
    in_flight[("main", "metrics")] = 0  # the gauges follow the budgets' own count at each scrape
    assert _samples(sm.render(False))[("collector_http_requests_in_flight", (("listener", "main"),))] == 1


def test_asyncio_tasks_counts_the_loops_tasks() -> None:
    sm = SelfMetrics()
    HttpMetrics(sm.registry)

    async def scrape() -> float:
        sleeper = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        value = _samples(sm.render(False))[("collector_asyncio_tasks", ())]
        sleeper.cancel()
        return value

    assert asyncio.run(scrape()) == 2


def test_a_labelled_family_without_series_shows_help_and_type_and_a_computed_one_nothing() -> None:
    r = SelfRegistry()
    r.counter("a_total", "A.", ["x"])
    age: list[float | None] = [None]
    r.computed("b_seconds", "B.", lambda: age[0])
    assert r.render(False) == "# HELP a_total A.\n# TYPE a_total counter\n"
    assert r.render(True) == "# HELP a A.\n# TYPE a counter\n"
    age[0] = 2.5
    assert r.render(False).endswith("# HELP b_seconds B.\n# TYPE b_seconds gauge\nb_seconds 2.5\n")
    age[0] = None
    assert "b_seconds" not in r.render(False)


def test_misuse_raises_as_client_python_did() -> None:
    r = SelfRegistry()
    c = r.counter("c_total", "C.", ["code"])
    g = r.gauge("g", "G.")
    with pytest.raises(ValueError, match="non-negative"):
        c.labels("200").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        c.labels("200", "extra")
    with pytest.raises(ValueError, match="call labels"):
        c.inc()
    with pytest.raises(ValueError, match="already registered"):
        r.gauge("g", "again")
    c.labels(200).inc()
    c.labels("200").inc()
    g.dec(2)
    assert r.render(False) == (
        '# HELP c_total C.\n# TYPE c_total counter\nc_total{code="200"} 2.0\n# HELP g G.\n# TYPE g gauge\ng -2.0\n'
    )


# --- process_*: against prometheus_client's ProcessCollector over the same /proc ------------------


def _fake_proc(root: Path, *, limit: str = "65536", fds: int = 7, stat: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("cpu  1 2 3\nbtime 1764000123\nprocesses 42\n")
    pid = root / "4242"
    (pid / "fd").mkdir(parents=True)
    for i in range(fds):
        (pid / "fd" / str(i)).touch()
    if stat:
        fields = ["S", *[str(i) for i in range(1, 60)]]  # after "(comm)": state, ppid, ...
        fields[11], fields[12] = "12345", "678"  # utime, stime (ticks)
        fields[19], fields[20], fields[21] = "987654", "123456789", "4321"  # starttime, vsize, rss (pages)
        (pid / "stat").write_text("4242 (python3 (x) y) " + " ".join(fields) + "\n")
    (pid / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        f"Max open files            {limit:<20} 1048576              files     \n"
    )
    return root


def _ours(proc: Path, openmetrics: bool = False) -> bytes:
    return SelfMetrics(process=ProcessMetrics(str(proc), "4242")).render(openmetrics)


def _theirs(proc: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    collector = ProcessCollector(proc=str(proc), pid=lambda: "4242", registry=None)
    return {(s.name, ()): s.value for fam in collector.collect() for s in fam.samples}


@pytest.mark.parametrize("openmetrics", [False, True])
def test_process_metrics_are_process_collectors_exactly(tmp_path: Path, openmetrics: bool) -> None:
    proc = _fake_proc(tmp_path)
    theirs = _theirs(proc)
    assert len(theirs) == 6
    body = _ours(proc, openmetrics)
    ours = {k: v for k, v in _samples(body, openmetrics).items() if k[0].startswith("process_")}
    assert ours == theirs
    ticks = os.sysconf("SC_CLK_TCK")
    assert ours[("process_start_time_seconds", ())] == 987654 / ticks + 1764000123
    assert ours[("process_open_fds", ())] == 7
    assert ours[("process_max_fds", ())] == 65536
    types = _types(body, openmetrics)
    assert types["process_cpu_seconds"] == "counter"  # both parsers name a counter's family without _total
    assert {types[n] for n in ("process_resident_memory_bytes", "process_open_fds")} == {"gauge"}


def test_process_help_and_types_are_process_collectors(tmp_path: Path) -> None:
    collector = ProcessCollector(proc=str(_fake_proc(tmp_path)), pid=lambda: "4242", registry=None)
    theirs = [(f.name, f.type, f.documentation) for f in collector.collect()]
    ours = [(f.name, f.type, f.documentation) for f in parse_openmetrics(_ours(tmp_path, True).decode())]
    assert ours[: len(theirs)] == theirs  # first, in ProcessCollector's order


def test_process_metrics_follow_the_files_and_leave_out_what_cannot_be_read(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    process = ProcessMetrics(str(proc), "4242")
    sm = SelfMetrics(process=process)
    (proc / "4242" / "fd" / "7").touch()
    assert _samples(sm.render(False))[("process_open_fds", ())] == 8
    (proc / "4242" / "stat").unlink()  # the stat group goes, the descriptor group stays
    names = {k[0] for k in _samples(sm.render(False)) if k[0].startswith("process_")}
    assert names == {"process_open_fds", "process_max_fds"} == {k[0] for k in _theirs(proc)}
    assert "process_cpu_seconds_total" not in sm.render(False).decode()  # no HELP either


def test_an_unlimited_descriptor_limit_is_inf_and_no_proc_means_no_process_metrics(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "a", limit="unlimited")
    assert _samples(_ours(proc))[("process_max_fds", ())] == math.inf  # ProcessCollector failed the scrape
    body = SelfMetrics(process=ProcessMetrics(str(tmp_path / "none"), "self")).render(False).decode()
    assert "process_" not in body and "collector_build_info" in body


def test_the_real_proc_self_agrees_with_process_collector() -> None:
    ours = {k[0]: v for k, v in _samples(SelfMetrics().render(False)).items() if k[0].startswith("process_")}
    theirs = {s.name: s.value for fam in ProcessCollector(registry=None).collect() for s in fam.samples}
    assert set(ours) == set(theirs)
    for name in ("process_start_time_seconds", "process_max_fds"):  # those that hold still
        assert ours[name] == theirs[name]
    assert abs(ours["process_resident_memory_bytes"] - theirs["process_resident_memory_bytes"]) < 16 << 20
