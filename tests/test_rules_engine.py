"""The rules engine without servers: matching, labels, units, bad input, overflow, expiry, snapshots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from collector.exposition import render
from collector.metrics import OVERFLOW, MetricState
from collector.rules import RuleSet
from tests.helpers import parse, value

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def ruleset(tmp_path: Path, rules: list[dict[str, Any]], **kw: Any) -> tuple[RuleSet, MetricState]:
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps({"rules": rules}))  # JSON is YAML
    metrics = MetricState()
    return RuleSet(metrics, logging.getLogger("test.rules"), rules_path=path, **kw), metrics


def lines(*objs: Any) -> list[bytes]:
    return [o if isinstance(o, bytes) else json.dumps(o).encode() for o in objs]


def scrape(metrics: MetricState) -> Any:
    return parse(render(metrics.families.values()))


def counter(metric: str, match: Any = None, **labels: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"metric": metric, "type": "counter", "help": "h", "labels": labels}
    if match is not None:
        rule["match"] = match
    return rule


def test_match_conditions_equals_in_regex_exists_and_comparisons(tmp_path: Path) -> None:
    rs, m = ruleset(
        tmp_path,
        [
            counter("eq_total", {"status": 200}),  # also matches nginx's "200"
            counter("in_total", {"level": {"in": ["warn", "error"]}}),
            counter("re_total", {"path": {"regex": "^/api/"}}),
            counter("missing_total", {"user": {"exists": False}}),
            counter("slow_total", {"ms": {"gt": 100}, "status": {"lt": 500}}),
            counter("any_total", {"any": [{"a": 1}, {"b": {"gte": 2}}]}),
            counter("not_total", {"not": {"level": "info"}}),
        ],
    )
    result = rs.consume(
        lines(
            {"status": 200, "level": "info", "path": "/api/x", "user": "u", "ms": 150},
            {"status": "200", "level": "warn", "path": "/static", "ms": "250"},
            {"status": 500, "level": "error", "ms": 900, "b": 2},
            {"status": 201, "level": "debug", "a": 1, "ms": 5},
        )
    )
    assert (result.parsed, result.unmatched) == (4, 0)
    s = scrape(m)
    assert value(s, "eq_total") == 2
    assert value(s, "in_total") == 2
    assert value(s, "re_total") == 1
    assert value(s, "missing_total") == 3
    assert value(s, "slow_total") == 2
    assert value(s, "any_total") == 2
    assert value(s, "not_total") == 3


def test_labels_from_nested_paths_with_maps_allow_lists_defaults_and_normalisers(tmp_path: Path) -> None:
    rs, m = ruleset(
        tmp_path,
        [
            counter(
                "req_total",
                {"kind": "http"},
                method={"from": "req.method", "normalize": "http_method"},
                route={"from": ["req.route", "req.url"], "normalize": "route"},
                code={"from": "res.statusCode", "normalize": "status_class"},
                tier={"from": "user.plan", "map": {"gold": "paid", "silver": "paid"}, "default": "free"},
                region={"from": "region", "allow": ["eu", "us"], "other": "elsewhere", "default": "none"},
                app={"value": "shop"},
            )
        ],
    )
    rs.consume(
        lines(
            {"kind": "http", "req": {"method": "get", "url": "/u/42?x=1"}, "res": {"statusCode": 404}, "user": {"plan": "gold"}, "region": "eu"},
            {"kind": "http", "req": {"method": "BREW", "route": "/u/:id"}, "res": {"statusCode": 503}, "region": "mars"},
            {"kind": "http", "req": "not an object", "res": {"statusCode": "200"}, "user": {"plan": "silver"}},
        )
    )  # fmt: skip
    s = scrape(m)
    assert (
        value(s, "req_total", method="GET", route="/u/:id", code="4xx", tier="paid", region="eu", app="shop")
        == 1
    )
    assert (
        value(
            s,
            "req_total",
            method="OTHER",
            route="/u/:id",
            code="5xx",
            tier="free",
            region="elsewhere",
            app="shop",
        )
        == 1
    )
    assert value(s, "req_total", method="", route="", code="2xx", tier="paid", region="none", app="shop") == 1


def test_units_convert_to_seconds_and_histograms_count_buckets_and_sum(tmp_path: Path) -> None:
    rs, m = ruleset(
        tmp_path,
        [
            {"metric": "t_seconds", "type": "histogram", "help": "h", "value": {"from": "ms", "unit": "ms"}, "buckets": [0.1, 1]},
            {"metric": "b_bytes", "type": "histogram", "help": "h", "value": {"from": "kb", "scale": 1000}, "buckets": [1000, 5000]},
            {"metric": "n_total", "type": "counter", "help": "h", "value": "n"},
        ],
    )  # fmt: skip
    rs.consume(
        lines({"ms": 50, "kb": 1, "n": 2}, {"ms": "1000", "kb": 4.5, "n": 3.5}, {"ms": 2500.0}, {"other": 1})
    )
    s = scrape(m)
    assert [value(s, "t_seconds_bucket", le=le) for le in ("0.1", "1.0", "+Inf")] == [1, 2, 3]
    assert value(s, "t_seconds_sum") == 0.05 + 1.0 + 2.5
    assert [value(s, "b_bytes_bucket", le=le) for le in ("1000.0", "5000.0", "+Inf")] == [1, 2, 2]
    assert value(s, "b_bytes_sum") == 5500
    assert value(s, "n_total") == 5.5


def test_gauges_set_inc_and_dec_with_a_floor(tmp_path: Path) -> None:
    rs, m = ruleset(
        tmp_path,
        [
            {"metric": "queue_depth", "type": "gauge", "help": "h", "action": "set", "value": "depth", "match": {"e": "q"}},
            {"metric": "open", "type": "gauge", "help": "h", "action": "inc", "match": {"e": "open"}},
            {"metric": "open", "type": "gauge", "help": "h", "action": "dec", "floor": 0, "match": {"e": "close"}},
        ],
    )  # fmt: skip
    rs.consume(
        lines(
            {"e": "close"},
            {"e": "open"},
            {"e": "open"},
            {"e": "close"},
            {"e": "q", "depth": 7},
            {"e": "q", "depth": 3},
        )
    )
    s = scrape(m)
    assert value(s, "open") == 1  # the first close (before any open) did not go below 0
    assert value(s, "queue_depth") == 3


def test_bad_lines_are_counted_by_kind_and_the_rest_of_the_batch_still_counts(tmp_path: Path) -> None:
    rs, m = ruleset(
        tmp_path, [counter("ok_total", {"msg": "x"}, route={"from": "r.path", "default": "none"})]
    )
    result = rs.consume(
        [
            b'{"msg":"x","r":{"path":"/a"}}',
            b'{"msg":"x", truncated',
            b'{"msg":"x","r":"\xff\xfe"}',
            b"[1, 2]",
            b"",
            b'{"msg":"x","r":["array where an object is read"]}',
            b'{"msg":"other"}',
            b'{"msg":"x","r":{"path":{"deep":"object where a value is read"}}}',
        ]
    )
    assert (result.parsed, result.unmatched, result.invalid_json, result.invalid_utf8) == (3, 1, 3, 1)
    assert [i for i, _r in result.bad] == [1, 2, 3, 4]
    s = scrape(m)
    assert value(s, "ok_total", route="/a") == 1
    assert value(s, "ok_total", route="none") == 2


def test_a_non_numeric_value_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rs, m = ruleset(tmp_path, [{"metric": "d_seconds", "type": "histogram", "help": "h", "value": "d"}])
    with caplog.at_level(logging.WARNING, logger="test.rules"):
        rs.consume(lines({"d": "fast"}, {"d": True}, {"d": 0.5}, {"d": "slow"}))
    s = scrape(m)
    assert value(s, "collector_log_value_errors_total", metric="d_seconds", reason="not_a_number") == 3
    assert value(s, "d_seconds_count") == 1
    assert len([r for r in caplog.records if "not a usable number" in r.getMessage()]) == 1


def test_overflow_folds_new_label_sets_and_keeps_totals_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rs, m = ruleset(tmp_path, [{**counter("hits_total", path="p"), "max_series": 3}])
    with caplog.at_level(logging.WARNING, logger="test.rules"):
        rs.consume(lines(*({"p": f"/p{i % 10}"} for i in range(100))))
    s = scrape(m)
    hits = {x.labels["path"]: x.value for x in s["hits_total"]}
    assert hits == {"/p0": 10, "/p1": 10, "/p2": 10, OVERFLOW: 70}
    assert sum(hits.values()) == 100
    assert value(s, "collector_log_series_overflow_total", metric="hits_total", label="path") == 70
    assert len([r for r in caplog.records if "series limit" in r.getMessage()]) == 1


def test_default_series_limit_comes_from_settings(tmp_path: Path) -> None:
    rs, m = ruleset(tmp_path, [counter("hits_total", path="p")], max_series=2)
    rs.consume(lines({"p": "a"}, {"p": "b"}, {"p": "c"}))
    assert {x.labels["path"] for x in scrape(m)["hits_total"]} == {"a", "b", OVERFLOW}


def test_idle_series_expire_after_their_metric_s_expire_after(tmp_path: Path) -> None:
    now = [1000.0]
    rs, m = ruleset(tmp_path, [{**counter("seen_total", path="p"), "expire_after": 60}], clock=lambda: now[0])
    rs.consume(lines({"p": "a"}, {"p": "b"}))
    now[0] = 1050.0
    rs.consume(lines({"p": "b"}))
    now[0] = 1070.0
    assert rs.expire() == 1
    assert {x.labels["path"]: x.value for x in scrape(m)["seen_total"]} == {"b": 2}


def test_dispatch_runs_keyed_and_unkeyed_rules_in_file_order(tmp_path: Path) -> None:
    rs, m = ruleset(
        tmp_path,
        [
            counter("a_total", {"message": "a"}),
            counter("b_total", {"message": {"in": ["b", "c"]}}),
            counter("lvl_total", {"level": "error"}),  # no condition on the discriminator: always tried
        ],
    )
    result = rs.consume(
        lines(
            {"message": "a", "level": "error"},
            {"message": "c"},
            {"message": "z", "level": "error"},
            {"message": {"o": 1}},
        )
    )
    s = scrape(m)
    assert (value(s, "a_total"), value(s, "b_total"), value(s, "lvl_total")) == (1, 1, 2)
    assert (result.parsed, result.unmatched) == (3, 1)


def test_state_snapshot_restores_into_a_fresh_rule_set(tmp_path: Path) -> None:
    rules = [
        counter("x_total", {"m": "x"}, k="k"),
        {"metric": "d_seconds", "type": "histogram", "help": "h", "value": "d", "match": {"m": "x"}},
    ]
    rs, m = ruleset(tmp_path, rules)
    rs.consume(lines({"m": "x", "k": "a", "d": 0.2}, {"m": "x", "k": "b", "d": 3}))
    snap = m.snapshot(rs.family_names())
    rs2, m2 = ruleset(tmp_path, rules)
    assert m2.restore(json.loads(json.dumps(snap))) == []
    rs2.consume(lines({"m": "x", "k": "a", "d": 0.2}))
    s = scrape(m2)
    assert (value(s, "x_total", k="a"), value(s, "x_total", k="b")) == (2, 1)
    assert value(s, "d_seconds_count") == 3
    assert value(s, "d_seconds_sum") == 0.2 + 3 + 0.2


def test_each_rule_counts_the_lines_it_matched_whether_gathered_per_batch_or_applied_per_line(
    tmp_path: Path,
) -> None:
    gauge = {"metric": "open", "type": "gauge", "help": "h"}
    rules = [
        counter("req_total", {"message": "req"}, code="status"),
        {"metric": "req_seconds", "type": "histogram", "help": "h", "match": {"message": "req"},
         "value": {"from": "ms", "unit": "ms"}},
        {**gauge, "match": {"message": "open"}, "action": "inc"},
        {**gauge, "match": {"message": {"in": ["close", "expire"]}}, "action": "dec", "floor": 0},
        counter("slow_total", {"message": "req", "ms": {"gt": 100}}),
    ]  # fmt: skip
    rs, _m = ruleset(tmp_path, rules)
    batch = [
        {"message": "req", "status": 200, "ms": 5},
        {"message": "req", "status": 500, "ms": 150},
        {"message": "req", "status": 200},  # matched, no value: counted by its rule anyway
        {"message": "open"},
        {"message": "open"},
        {"message": "close"},
        {"message": "expire"},
        {"message": "noise"},
    ]
    rs.consume(lines(*batch))
    rs.consume_buffer(b"\n".join(lines(*batch[:2])), 2)
    counts = [n for _spec, n in rs.rule_matches()]
    # ground truth by hand: 5 req lines; 5 with a histogram match (values or not); 2 open; 2 close/expire
    assert counts == [5, 5, 2, 2, 2]
    assert [spec.metric for spec, _n in rs.rule_matches()] == [
        "req_total",
        "req_seconds",
        "open",
        "open",
        "slow_total",
    ]
