"""Metric state: families, histograms, overflow folding, snapshot and restore."""

from __future__ import annotations

import json

import pytest

from collector.metrics import OVERFLOW, Family, MetricDefinitionError, MetricState

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def test_counter_increments_per_label_set() -> None:
    fam = Family("x_total", "counter", "h", ["a"])
    fam.inc(("1",))
    fam.inc(("1",), 2.5)
    fam.inc(("2",))
    assert fam.series == {("1",): 3.5, ("2",): 1.0}


def test_histogram_counts_each_value_in_its_le_bucket() -> None:
    fam = Family("d_seconds", "histogram", "h", [], buckets=[0.1, 1])
    for v in (0.05, 0.1, 0.5, 1.0, 7):
        fam.observe((), v)
    # per-bucket counts (non-cumulative), +Inf, then the sum; 0.1 and 1.0 sit in their own le bucket
    assert fam.series[()] == [2, 2, 1, pytest.approx(8.65)]


@pytest.mark.parametrize(
    ("name", "kind", "labels", "buckets", "message"),
    [
        ("requests", "counter", [], None, "must end in _total"),
        ("size_total", "gauge", [], None, "only counters"),
        ("bad-name", "gauge", [], None, "not a valid"),
        ("x", "gauge", ["__reserved"], None, "not a valid label"),
        ("x", "gauge", ["a", "a"], None, "given twice"),
        ("x", "histogram", ["le"], [1], "le"),
        ("x", "histogram", [], [], "at least one bucket"),
        ("x", "histogram", [], [2, 1], "ascending"),
        ("x", "summary", [], None, "type must be"),
        ("x_bucket", "gauge", [], None, "reserves"),
    ],
)
def test_invalid_definitions_are_rejected(name, kind, labels, buckets, message) -> None:
    with pytest.raises(MetricDefinitionError, match=message):
        Family(name, kind, "h", labels, buckets)


def test_label_sets_past_the_limit_fold_into_overflow_and_totals_stay_exact() -> None:
    folded: list[str] = []
    fam = Family("r_total", "counter", "h", ["user", "kind"], max_series=3, on_overflow=folded.append)
    for i in range(10):
        fam.inc((f"u{i}", "k"))
    fam.inc(("u0", "k"))  # an admitted series keeps counting on its own
    assert len(fam.series) == 4
    assert fam.series[(OVERFLOW, OVERFLOW)] == 7
    assert fam.series[("u0", "k")] == 2
    assert sum(fam.series.values()) == 11
    assert folded == ["r_total"] * 7


def test_state_reuses_a_family_with_the_same_signature_and_rejects_a_conflicting_one() -> None:
    state = MetricState()
    a = state.counter("a_total", "h", ["x"])
    a.inc(("1",))
    assert state.counter("a_total", "new help", ["x"]) is a
    assert a.help == "new help"
    with pytest.raises(MetricDefinitionError, match="already defined"):
        state.counter("a_total", "h", ["y"])


def test_snapshot_restores_values_through_json_and_skips_redefined_families() -> None:
    state = MetricState()
    c = state.counter("c_total", "h", ["m"])
    h = state.histogram("h_seconds", "h", ["m"], buckets=[1, 2])
    g = state.gauge("g", "h")
    c.inc(("GET",), 3)
    h.observe(("GET",), 1.5)
    g.set((), 7)
    data = json.loads(json.dumps(state.snapshot(["c_total", "h_seconds", "g", "missing"])))

    fresh = MetricState()
    c2 = fresh.counter("c_total", "h", ["m"])
    h2 = fresh.histogram("h_seconds", "h", ["m"], buckets=[1, 2])
    fresh.gauge("g", "h", ["changed"])
    skipped = fresh.restore(data)
    assert skipped == ["g"]
    assert c2.series == {("GET",): 3.0}
    assert h2.series == {("GET",): [0, 1, 0, 1.5]}
    assert fresh.families["g"].series == {}


def test_set_cells_replaces_a_histogram_series_as_observe_keeps_it() -> None:
    state = MetricState()
    h = state.histogram("lead_seconds", "Lead.", ["repo"], buckets=[1, 5], max_series=1)
    h.observe(("a",), 3)
    h.keep_rendered(False, "stale")
    h.set_cells(("a",), [2, 0, 1, 11.5])  # two <= 1, none in (1, 5], one above: sum 11.5
    assert h.series[("a",)] == [2, 0, 1, 11.5]
    assert h.rendered(False) is None  # the update dropped the rendered text
    h.set_cells(("b",), [0, 1, 0, 2.0])  # past the limit of one: folded, as observe folds
    assert set(h.series) == {("a",), (OVERFLOW,)}
    assert sorted(h.take_changes()[1]) == sorted([("a",), (OVERFLOW,)])  # a checkpoint would see both
    with pytest.raises(ValueError, match="3 cells for 2 buckets"):
        h.set_cells(("a",), [1, 1, 1.0])


def test_the_series_template_builds_lines_only_for_series_it_has_not_seen() -> None:
    fam = MetricState().counter("c_total", "h", ["k"])
    built: list[tuple[str, ...]] = []

    def lines_of(key: tuple[str, ...]) -> str:
        built.append(key)
        return f"c_total{{k={key[0]}}} %r\n"

    fam.inc(("a",))
    fam.inc(("b",))
    assert fam.series_template(lines_of) == "c_total{k=a} %r\nc_total{k=b} %r\n"
    fam.inc(("c",))
    assert fam.series_template(lines_of).endswith("c_total{k=c} %r\n")
    assert built == [("a",), ("b",), ("c",)]  # extended, not rebuilt
    fam.remove(("a",))
    assert fam.series_template(lines_of) == "c_total{k=b} %r\nc_total{k=c} %r\n"
    assert built[3:] == [("b",), ("c",)]  # a removal rebuilds
