"""The incremental logs checkpoint: deltas reproduce the state exactly, idle writes nothing, v1 migrates."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.metrics import MetricState
from collector.sources.logs.checkpoint import Checkpointer, Pending, decode_row
from collector.store import StateStore
from tests.helpers import serve, value
from tests.sources.logtools import SOURCES, append, level_count, lines, logs_settings

NAMES = ["c_total", "g", "h"]


def _families(m: MetricState, variant: int = 0) -> None:
    m.counter("c_total", "c", ["a", "b"])
    m.gauge("g", "g", ["a"] if variant == 0 else ["a", "z"])  # a reload may redefine it
    m.histogram("h", "h", ["a"], buckets=[1.0, 5.0])


def _apply(store: dict[str, dict[str, str]], pending: Pending) -> None:
    """What the SQL of `put_with_series` does, on dicts."""
    for name in pending.delta.drop:
        store.pop(name, None)
    for name, key, val in pending.delta.upsert:
        store.setdefault(name, {})[key] = val
    for name, key in pending.delta.delete:
        store.get(name, {}).pop(key, None)


def _decoded(store: dict[str, dict[str, str]]) -> dict[str, dict[tuple[str, ...], Any]]:
    out: dict[str, dict[tuple[str, ...], Any]] = {}
    for name, rows in store.items():
        for key, val in rows.items():
            _f, k, v = decode_row(name, key, val)
            out.setdefault(name, {})[k] = v
    return {n: rows for n, rows in out.items() if rows}


def _expected(m: MetricState) -> dict[str, dict[tuple[str, ...], Any]]:
    def spell(v: Any) -> Any:
        if isinstance(v, list):
            return [*v[:-1], spell(v[-1])]
        return v if v - v == 0 else repr(float(v))

    return {
        n: {k: spell(v) for k, v in m.families[n].series.items()}
        for n in NAMES
        if n in m.families and m.families[n].series
    }


@pytest.mark.quick
@pytest.mark.parametrize("seed", range(30))
def test_applied_deltas_always_equal_the_state_they_were_taken_from(seed: int) -> None:
    """Campaign: random updates, removals, clears, redefinitions, failed and skipped writes."""
    rnd = random.Random(seed)
    m = MetricState()
    _families(m)
    cp = Checkpointer(m)
    store: dict[str, dict[str, str]] = {}
    labels = [str(i) for i in range(6)]
    for _step in range(300):
        op = rnd.random()
        fam = m.families.get(rnd.choice(NAMES))
        if op < 0.5 and fam is not None:
            key = tuple(rnd.choice(labels) for _ in fam.labelnames)
            if fam.kind == "counter":
                fam.inc(key, rnd.choice([1, 2, 0.5]))
            elif fam.kind == "gauge":
                fam.set(key, rnd.choice([1.0, -3.0, math.inf, -math.inf, 7.25]))
            else:
                fam.observe(key, rnd.choice([0.5, 2.0, 9.0, math.inf]))
        elif op < 0.6 and fam is not None and fam.series:
            fam.remove(rnd.choice(list(fam.series)))
        elif op < 0.62 and fam is not None:
            fam.clear()
        elif op < 0.64:  # a rules reload redefines the gauge, or drops it and brings it back
            m.unregister("g")
            if rnd.random() < 0.7:
                _families(m, variant=rnd.randrange(2)) if "g" not in m.families else None
        elif op < 0.66:
            _families(m, variant=0) if "g" not in m.families else None
        else:
            pending = cp.take(NAMES, [], ["p"])
            if pending is None:
                assert _decoded(store) == _expected(m)  # nothing to write means nothing differs
                continue
            if rnd.random() < 0.15:
                cp.failed(pending)  # the transaction rolled back: the store keeps its old rows
                continue
            _apply(store, pending)
            cp.committed(pending)
            assert _decoded(store) == _expected(m), f"seed {seed}"


@pytest.mark.quick
def test_an_idle_checkpoint_writes_nothing_and_a_busy_one_only_what_changed() -> None:
    m = MetricState()
    c = m.counter("c_total", "c", ["k"])
    for i in range(10_000):
        c.inc((str(i),))
    cp = Checkpointer(m)
    first = cp.take(["c_total"], [{"offset": 1}], ["p"])
    assert first is not None and first.delta.upserts == len(list(first.delta.upsert)) == 10_000
    cp.committed(first)
    assert cp.take(["c_total"], [{"offset": 1}], ["p"]) is None  # nothing changed: nothing written
    c.inc(("7",))
    c.inc(("8",), 2)
    c.remove(("9",))
    again = cp.take(["c_total"], [{"offset": 1}], ["p"])
    assert again is not None
    assert sorted(again.delta.upsert) == [("c_total", '["7"]', "2"), ("c_total", '["8"]', "3")]
    assert again.delta.delete == [("c_total", '["9"]')] and again.delta.drop == []
    cp.committed(again)
    moved = cp.take(["c_total"], [{"offset": 2}], ["p"])  # only the offsets moved: the document alone
    assert moved is not None and not moved.delta


def _v1_from_v2(db: Path) -> None:
    """Rewrite a version-2 state file as the version-1 collector wrote it: one JSON document."""
    with sqlite3.connect(db) as conn:
        doc = json.loads(bytes(conn.execute("SELECT value FROM kv WHERE owner='logs'").fetchone()[0]))
        metrics: dict[str, Any] = {}
        for fam, key, val in conn.execute("SELECT family, key, value FROM series WHERE owner='logs'"):
            sig = doc["families"][fam]
            metrics.setdefault(fam, {**sig, "series": []})["series"].append(
                [json.loads(key), json.loads(val)]
            )
        for fam, sig in doc["families"].items():
            metrics.setdefault(fam, {**sig, "series": []})
        v1 = {
            "version": 1,
            "patterns": doc["patterns"],
            "streams": doc["streams"],
            "metrics": metrics,
            "consumer": doc.get("consumer"),
        }
        conn.execute("UPDATE kv SET value=? WHERE owner='logs'", (json.dumps(v1).encode(),))
        conn.execute("DELETE FROM series")


async def test_a_version_1_checkpoint_keeps_its_counts_and_is_rewritten_as_version_2(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, lines(300))
    settings = logs_settings(tmp_path, str(tmp_path / "*.log"))
    async with serve(settings, SOURCES) as run:
        await run.wait_for(lambda m: level_count(m) == 300)
    db = settings.effective_state_path
    _v1_from_v2(db)
    append(log, lines(200, "info", 300))  # written while the collector is down
    async with serve(settings, SOURCES) as run:
        await run.wait_for(lambda m: level_count(m) >= 500)
        await asyncio.sleep(0.5)
        m = await run.metrics()
        assert level_count(m) == 500
        assert value(m, "collector_log_read_lines_total", path=str(log)) == 500
    store = StateStore(db)
    await store.open()
    try:
        doc = msgspec.json.decode(await store.get("logs", "checkpoint"))
        rows = {(f, k): v for f, k, v in await store.series_rows("logs", decode_row)}
    finally:
        await store.close()
    assert doc["version"] == 2 and "metrics" not in doc
    assert rows[("app_log_lines_total", ("info",))] == 500


async def test_a_restart_restores_counts_from_series_rows(tmp_path: Path) -> None:
    """Both update paths mark what changed: whole chunks (batch) and lines one by one (a bad line
    in a chunk sends it through the per-line rules)."""
    log = tmp_path / "app.log"
    append(log, lines(120) + b"not json\n" + lines(30, "error"))
    settings = logs_settings(tmp_path, str(tmp_path / "*.log"))
    for round_ in range(3):
        async with serve(settings, SOURCES) as run:
            await run.wait_for(lambda m, r=round_: level_count(m, "error") == 30 + 10 * r)
            await asyncio.sleep(0.3)
            m = await run.metrics()
            assert level_count(m) == 120 and level_count(m, "error") == 30 + 10 * round_
        append(log, lines(5, "error", 1000 + round_) + b"{bad\n" + lines(5, "error", 2000 + round_))


GAUGE = """
  - metric: app_queue_depth
    type: gauge
    help: Queue depth last logged.
    action: set
    labels:
      level: {from: level, default: unknown}
    value: {from: i}
"""
COMMUTING = """
  - metric: app_lines_by_level_total
    type: counter
    help: Lines by level.
    labels:
      level: {from: level, default: unknown}
  - metric: app_i
    type: histogram
    help: The i field.
    labels:
      level: {from: level, default: unknown}
    value: {from: i}
    buckets: [10, 100]
"""


@pytest.mark.parametrize("per_line", [True, False])
async def test_a_restart_restores_what_each_update_path_changed(tmp_path: Path, per_line: bool) -> None:
    """Every update path marks what changed: with a `set` rule (it does not commute) the group runs
    per line in generated code; counters and histograms alone are gathered per batch."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:" + (GAUGE if per_line else "") + COMMUTING)
    log = tmp_path / "app.log"
    settings = logs_settings(tmp_path, str(tmp_path / "*.log"), rules=str(rules))
    total = 0
    for round_ in range(3):
        append(log, lines(5, "info", 100 * round_ + 1))
        want, total = 100 * round_ + 5, total + sum(range(100 * round_ + 1, 100 * round_ + 6))
        async with serve(settings, SOURCES) as run:
            await run.wait_for(lambda m, t=total: value(m, "app_i_sum", level="info") == t)
            await asyncio.sleep(0.3)  # a checkpoint after the update
        async with serve(settings, SOURCES) as run:  # nothing new: the value comes from the store
            m = await run.wait_for(lambda m: value(m, "app_i_count", level="info") is not None)
            assert value(m, "app_i_sum", level="info") == total
            if per_line:
                assert value(m, "app_queue_depth", level="info") == want
            assert value(m, "app_lines_by_level_total", level="info") == 5 * (round_ + 1)
            assert value(m, "app_i_count", level="info") == 5 * (round_ + 1)


async def test_a_rules_file_raising_max_series_keeps_every_series_across_a_restart(tmp_path: Path) -> None:
    """15,000 label values under a rule with `max_series: 20000` (the default limit is 10,000): none
    folds into __overflow__, and a restart restores all of them from their rows."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - metric: app_ids_total\n    type: counter\n    help: Per id.\n"
        "    labels:\n      id: {from: id}\n    max_series: 20000\n"
    )
    log = tmp_path / "app.log"
    append(log, b"".join(b'{"id":"u%d"}\n' % i for i in range(15_000)))
    settings = logs_settings(tmp_path, str(tmp_path / "*.log"), rules=str(rules))
    for _ in range(2):
        async with serve(settings, SOURCES) as run:
            m = await run.wait_for(lambda m: len(m.get("app_ids_total", [])) == 15_000, timeout=60)
            assert {s.labels["id"] for s in m["app_ids_total"]} == {f"u{i}" for i in range(15_000)}
            assert all(s.value == 1 for s in m["app_ids_total"])
