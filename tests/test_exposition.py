"""Exposition: text and OpenMetrics rendering parse back to the exact values."""

from __future__ import annotations

import math

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from collector.exposition import escape_label_value, format_value, render, wants_openmetrics
from collector.metrics import MetricState
from tests.helpers import parse, value

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def _state() -> MetricState:
    state = MetricState()
    c = state.counter("http_requests_total", "Requests.", ["method", "route"])
    c.inc(("GET", "/a"), 3)
    c.inc(("POST", 'we"ird\\path\nx'), 1)
    h = state.histogram("lat_seconds", "Latency.", ["route"], buckets=[0.1, 1])
    for v in (0.05, 0.5, 2):
        h.observe(("/a",), v)
    g = state.gauge("temp_celsius", "Temp.")
    g.set((), -1.5)
    state.gauge("empty", "never set")
    return state


def test_text_format_parses_back_to_exact_values() -> None:
    text = render(_state().families.values())
    s = parse(text)
    assert value(s, "http_requests_total", method="GET", route="/a") == 3
    assert value(s, "http_requests_total", method="POST", route='we"ird\\path\nx') == 1
    assert value(s, "lat_seconds_bucket", route="/a", le="0.1") == 1
    assert value(s, "lat_seconds_bucket", route="/a", le="1.0") == 2
    assert value(s, "lat_seconds_bucket", route="/a", le="+Inf") == 3
    assert value(s, "lat_seconds_count", route="/a") == 3
    assert value(s, "lat_seconds_sum", route="/a") == 2.55
    assert value(s, "temp_celsius") == -1.5
    assert "empty" not in text


def test_openmetrics_names_counter_families_without_total() -> None:
    text = render(_state().families.values(), openmetrics=True) + "# EOF\n"
    fams = {f.name: f for f in om_parse(text)}
    assert fams["http_requests"].type == "counter"
    assert {(s.name, s.labels["method"], s.value) for s in fams["http_requests"].samples} == {
        ("http_requests_total", "GET", 3),
        ("http_requests_total", "POST", 1),
    }
    assert fams["lat_seconds"].type == "histogram"


def test_unchanged_family_reuses_its_text_and_a_change_invalidates_it() -> None:
    state = _state()
    fam = state.families["http_requests_total"]
    first = render([fam])
    assert render([fam]) is first
    fam.inc(("GET", "/a"))
    assert 'route="/a"} 4' in render([fam])


def test_values_and_escapes_use_prometheus_spelling() -> None:
    assert [format_value(v) for v in (1.0, 0.25, math.inf, -math.inf, 1e20)] == [
        "1",
        "0.25",
        "+Inf",
        "-Inf",
        "1e+20",
    ]
    assert format_value(math.nan) == "NaN"
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_accept_header_negotiation() -> None:
    assert wants_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert not wants_openmetrics("text/plain")
    assert not wants_openmetrics(None)
    assert not wants_openmetrics("application/openmetrics-text;q=0")


def test_the_cached_template_follows_direct_updates_additions_and_removals() -> None:
    state = MetricState()
    c = state.counter("c_total", "h", ["k"])
    h = state.histogram("h_seconds", "h", ["k"], buckets=[1])
    g = state.gauge("g", "h", ["k"])
    for i in range(3):
        c.inc((str(i),), i + 1)
        h.observe((str(i),), 0.5)
    g.set(("x",), math.nan)
    first = render(state.families.values())
    c.series[("1",)] += 5  # direct update, as compiled rules do
    h.series[("2",)][1] += 1
    del c.series[("0",)]  # direct removal, as rule expiry does
    for fam in state.families.values():
        fam.touch()
    s = parse(render(state.families.values()))
    assert value(s, "c_total", k="0") is None
    assert value(s, "c_total", k="1") == 7
    assert value(s, "c_total", k="2") == 3
    assert value(s, "h_seconds_bucket", k="2", le="+Inf") == 2
    assert value(s, "h_seconds_count", k="2") == 2
    assert value(s, "h_seconds_count", k="1") == 1
    assert math.isnan(value(s, "g", k="x"))
    assert ("0",) not in state.families["c_total"]._keys
    assert first != render(state.families.values())
    c.series[("3",)] = 2.5  # a series added directly: the template is extended, not rebuilt
    c.touch()
    s = parse(render([c]))
    assert [(x.labels["k"], x.value) for x in s["c_total"]] == [("1", 7.0), ("2", 3.0), ("3", 2.5)]


def test_percent_signs_in_labels_and_non_finite_values_survive_the_template() -> None:
    state = MetricState()
    c = state.counter("c_total", "h", ["k"])
    h = state.histogram("h_seconds", "h", ["k"], buckets=[1])
    c.inc(("100%r %s %d",), 2)
    c.inc(("inf",), math.inf)
    h.observe(("50%",), 0.5)
    h.observe(("50%",), -math.inf)
    text = render(state.families.values())
    assert 'c_total{k="100%r %s %d"} 2\n' in text  # whole counts stay ints
    assert 'c_total{k="inf"} +Inf\n' in text
    assert 'h_seconds_sum{k="50%"} -Inf\n' in text
    s = parse(text)
    assert value(s, "h_seconds_bucket", k="50%", le="1.0") == 2
    assert value(s, "h_seconds_count", k="50%") == 2


def test_bucket_bounds_are_spelled_as_client_python_spells_them() -> None:
    from prometheus_client.utils import floatToGoString

    from collector.exposition import go_float

    for bound in (0.005, 0.01, 1, 2.5, 10, 1e6, 123456789.0, 1234567.5, 1e-7, 3e20, 5e-324, math.inf):
        assert go_float(bound) == floatToGoString(bound), bound
