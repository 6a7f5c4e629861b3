"""Labels bounded by construction, string extraction and two-line joins, on synthetic hostile input.

A seeded campaign sends random URLs (ids, UUIDs, slugs, dates, e-mails, tokens, random words, deep
paths, unicode) with random statuses; ground truth is computed from what was generated.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from collector.metrics import OVERFLOW, Family, MetricState
from collector.rules import RulesError, RuleSet
from collector.rules.normalize import Budget, TemplateMatcher, route_template
from collector.rules.schema import parse_rules
from collector.rules.stages import parse_stages

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def ruleset(
    tmp_path: Path, doc: Any, clock: Any = lambda: 1000.0, max_series: int = 10_000
) -> tuple[RuleSet, MetricState]:
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps(doc))
    metrics = MetricState()
    return RuleSet(
        metrics, logging.getLogger("test.rules"), rules_path=path, clock=clock, max_series=max_series
    ), metrics


def lines(*objs: dict[str, Any]) -> list[bytes]:
    return [json.dumps(o).encode() for o in objs]


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("/blog/why-we-moved-to-rust", "/blog/:slug"),
        ("/blog/release-2024", "/blog/:slug"),
        ("/old-page", "/old-page"),
        ("/api/v1/users", "/api/v1/users"),
        ("/reports/2024-11-01", "/reports/:date"),
        ("/u/alice@example.com", "/u/:id"),
        ("/t/" + "x" * 41, "/t/:id"),
        ("/api/videos/550e8400-e29b-41d4-a716-446655440000?t=3", "/api/videos/:id"),
        ("/api/users/{user_id}", "/api/users/{user_id}"),  # a FastAPI template passes through
    ],
)
def test_route_normaliser_collapses_ids_slugs_and_dates(url: str, want: str) -> None:
    assert route_template(url) == want


def test_template_matcher_prefers_literal_segments_and_ignores_the_query() -> None:
    m = TemplateMatcher(("/users/:id", "/users/me", "/blog/{slug}", "/files/<path:name>"))
    assert m.match("/users/me?x=1") == "/users/me"
    assert m.match("/users/17") == "/users/:id"
    assert m.match("/blog/hello-world") == "/blog/{slug}"
    assert m.match("/nope") is None


def test_budget_keeps_admitted_values_and_refuses_new_ones() -> None:
    b = Budget(2)
    assert [b.admit(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]
    assert b.refused == 2


def test_family_series_limit_folds_only_the_unbounded_labels() -> None:
    folded: list[str] = []
    fam = Family(
        "r_total", "counter", "h", ["method", "route", "status_code"], max_series=2, on_overflow=folded.append
    )
    fam.fold_only(["route"])
    for route in ("/a", "/b", "/c", "/d"):
        fam.inc(("GET", route, "500"))
    assert fam.series == {("GET", "/a", "500"): 1, ("GET", "/b", "500"): 1, ("GET", OVERFLOW, "500"): 2}
    assert fam.folded == ("route",) and len(folded) == 2


HTTP_RULE = {
    "metric": "req_total", "type": "counter", "help": "h", "match": {"msg": "done"},
    "labels": {
        "method": {"from": "method", "normalize": "http_method"},
        "route": {"from": "url", "template": "route", "normalize": "route", "status": "status",
                  "unmatched": "unmatched", "max_values": 30},
        "status_code": {"from": "status", "normalize": "status_code"},
    },
}  # fmt: skip


def hostile_url(rnd: random.Random) -> str:
    word = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 12)))
    return rnd.choice(
        [
            lambda: f"/api/users/{rnd.randint(0, 10**9)}",
            lambda: f"/api/videos/{uuid.UUID(int=rnd.getrandbits(128))}",
            lambda: f"/blog/{word}-{word}-{rnd.randint(0, 99)}",
            lambda: f"/reports/2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            lambda: f"/u/{word}@example.com",
            lambda: f"/t/{rnd.getrandbits(256):x}",
            lambda: f"/{word}",  # a random word: the only shape the normaliser cannot know
            lambda: "/" + "/".join(word for _ in range(rnd.randint(1, 20))),
            lambda: f"/caf\u00e9/{word}?q={word}",
        ]
    )()


@pytest.mark.parametrize("max_series", [10_000, 40])
@pytest.mark.parametrize("seed", range(3))
def test_campaign_random_urls_keep_route_within_its_budget_and_counts_exact(
    tmp_path: Path, seed: int, max_series: int
) -> None:
    rnd = random.Random(seed)
    rs, m = ruleset(tmp_path, {"rules": [HTTP_RULE]}, max_series=max_series)
    truth: Counter[tuple[str, str]] = Counter()
    for _batch in range(20):
        batch = []
        for _ in range(500):
            status = rnd.choice([200, 200, 201, 301, 404, 404, 405, 500, 503])
            method = rnd.choice(["GET", "POST", "HEAD", "PROPFIND"])
            line: dict[str, Any] = {
                "msg": "done",
                "method": method,
                "url": hostile_url(rnd),
                "status": status,
            }
            if rnd.random() < 0.2:
                line["route"] = rnd.choice(["/api/users/:id", "/health"])
            batch.append(line)
            truth[(method if method != "PROPFIND" else "OTHER", str(status))] += 1
        rs.consume(lines(*batch))
    series = m.families["req_total"].series
    got: Counter[tuple[str, str]] = Counter()
    for (method, _route, status), v in series.items():
        got[(method, status)] += v
    assert got == truth  # exact per method and status whatever was folded
    routes = {r for _m, r, _s in series}
    assert len(routes - {"other", "unmatched", OVERFLOW}) <= 30
    assert m.families["collector_log_label_values_overflow_total"].series[("route",)] > 0
    if max_series == 40:  # the series limit folded route only
        assert len(series) <= 40 + 4 * 9  # plus at most one folded series per method and status
        assert OVERFLOW in routes and not any(OVERFLOW in (meth, st) for meth, _r, st in series)
    else:
        assert "other" in routes and "unmatched" in routes


def test_templates_list_and_openapi_document_name_the_routes(tmp_path: Path) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps({"openapi": "3.0.0", "paths": {"/pets/{petId}": {}, "/pets": {}}}))
    rule = {**HTTP_RULE, "labels": {"route": {"from": "url", "templates": ["/blog/:slug"], "openapi": str(spec),
                                             "normalize": "route",
                                             "status": "status", "unmatched": "unmatched"}}}  # fmt: skip
    rs, m = ruleset(tmp_path, {"rules": [rule]})
    rs.consume(lines(
        {"msg": "done", "url": "/pets/7?x=1", "status": 200}, {"msg": "done", "url": "/blog/hello-world", "status": 200},
        {"msg": "done", "url": "/pets", "status": 200}, {"msg": "done", "url": "/x/y", "status": 404},
        {"msg": "done", "url": "/other/5", "status": 200},
    ))  # fmt: skip
    assert m.families["req_total"].series == {
        ("/pets/{petId}",): 1,
        ("/blog/:slug",): 1,
        ("/pets",): 1,
        ("unmatched",): 1,
        ("/other/:id",): 1,
    }


def test_extract_turns_an_access_line_into_typed_fields(tmp_path: Path) -> None:
    doc = {
        "extract": {"from": "message", "when": {"name": "gunicorn.access"},
                    "regex": r'"(?P<verb>[A-Z]+) (?P<target>\S+) [^"]*" (?P<code>\d{3}) (?P<size>\d+|-)',
                    "types": {"code": "int", "size": "int"}},
        "rules": [{"metric": "r_total", "type": "counter", "help": "h", "match": {"code": {"gte": 500}},
                   "labels": {"verb": "verb", "code": "code"}},
                  {"metric": "size_bytes", "type": "histogram", "help": "h", "match": {"name": "gunicorn.access"},
                   "value": "size"}],
    }  # fmt: skip
    rs, m = ruleset(tmp_path, doc)
    gunicorn = '127.0.0.1 - - [01/Dec/2026:20:00:00 +0000] "GET /x?y=1 HTTP/1.1" {} {} "-" "curl/8"'
    rs.consume(lines(
        {"name": "gunicorn.access", "message": gunicorn.format(502, 157)},
        {"name": "gunicorn.access", "message": gunicorn.format(304, "-")},
        {"name": "gunicorn.access", "message": "not an access line"},
        {"name": "other", "message": gunicorn.format(500, 1)},
    ))  # fmt: skip
    assert m.families["r_total"].series == {("GET", "502"): 1}
    # the 304's `-` stays absent: counted as a missing value, not a 0-byte response
    assert m.families["size_bytes"].series[()][-1] == 157.0
    assert m.families["collector_log_value_errors_total"].series == {("size_bytes", "missing"): 2}
    assert m.families["collector_log_extract_misses_total"].series == {(): 1}  # "not an access line"


JOIN = {
    "join": {"key": ["pid", "reqId"], "start": {"msg": "in"}, "end": {"msg": "out"}, "carry": ["req"],
             "max_pending": 3, "expire_after": 60},
    "rules": [{"metric": "r_total", "type": "counter", "help": "h", "match": {"msg": "out"},
               "labels": {"method": {"from": "req.method", "default": "none"}}}],
}  # fmt: skip


def test_join_pending_table_is_bounded_and_expires(tmp_path: Path) -> None:
    now = [1000.0]
    rs, m = ruleset(tmp_path, JOIN, clock=lambda: now[0])
    start = lambda i, pid=1: {"msg": "in", "pid": pid, "reqId": f"r{i}", "req": {"method": "GET"}}  # noqa: E731
    end = lambda i, pid=1: {"msg": "out", "pid": pid, "reqId": f"r{i}"}  # noqa: E731
    # same reqId in another process is another request; five starts with room for three
    result = rs.consume(lines(start(1), start(1, pid=2), end(1, pid=2), *(start(i) for i in range(2, 6))))
    assert result.parsed == 7
    rs.consume(lines(end(1), end(5)))  # r1 was evicted: counted, without its method
    now[0] += 61
    rs.consume(lines(start(9)))
    now[0] += 1
    rs.consume(lines(end(4)))  # expired
    assert m.families["r_total"].series == {("GET",): 2, ("none",): 2}
    outcomes = {k[0]: v for k, v in m.families["collector_log_join_total"].series.items()}
    assert outcomes == {"joined": 2, "start_evicted": 2, "end_without_start": 2, "start_expired": 2}
    assert [k for k in rs.checkpoint_state()["joins"][0][1]] == [
        [[1, "r9"], 1061.0, {"req": {"method": "GET"}}]
    ]


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"rules": [{**HTTP_RULE, "labels": {"r": {"from": "u", "unmatched": "x"}}}]}, "needs status"),
        ({"rules": [{**HTTP_RULE, "labels": {"r": {"from": "u", "max_values": 0}}}]}, "max_values: must be a positive"),
        ({"rules": [{**HTTP_RULE, "labels": {"r": {"from": "u", "templates": ["x"]}}}]}, "starting with /"),
        ({"rules": [{**HTTP_RULE, "labels": {"r": {"from": "u", "openapi": "/nonexistent.yaml"}}}]}, "cannot read the OpenAPI"),
    ],
)  # fmt: skip
def test_each_bad_label_bound_is_rejected_with_its_reason(doc: Any, error: str) -> None:
    with pytest.raises(RulesError, match=error):
        parse_rules(doc, "t")


@pytest.mark.parametrize(
    ("stage", "error"),
    [
        ({"extract": {"from": "m", "regex": "(x"}}, "not a valid regular expression"),
        ({"extract": {"from": "m", "regex": "x"}}, "needs named groups"),
        ({"extract": {"from": "m", "regex": "(?P<a>x)", "types": {"a": "date"}}}, "expected one of str, int, float"),
        ({"extract": {"from": "m", "regex": "(?P<a>x)", "types": {"b": "int"}}}, "not a named group"),
        ({"join": {"key": ["id"], "start": {"msg": "a"}, "carry": ["req"]}}, "start and end are both required"),
        ({"join": {"key": ["id"], "start": {"m": "a"}, "end": {"m": "b"}, "carry": ["req.method"]}}, "carry top-level"),
        ({"join": {"key": ["id"], "start": {"m": "a"}, "end": {"m": "b"}, "carry": ["r"], "max_pending": 0}}, "max_pending"),
        ({"join": {"key": ["id"], "start": {"m": "a"}, "end": {"m": "b"}, "carry": ["r"], "expire_after": -1}}, "expire_after"),
    ],
)  # fmt: skip
def test_each_bad_stage_is_rejected_with_its_reason(stage: Any, error: str) -> None:
    with pytest.raises(RulesError, match=error):
        parse_stages(stage, "t")


def test_a_restart_does_not_grant_the_route_budget_again(tmp_path: Path) -> None:
    rs, m = ruleset(tmp_path, {"rules": [HTTP_RULE]})
    rs.consume(lines(*({"msg": "done", "url": f"/a{i}", "status": 200} for i in range(25))))
    snapshot = m.snapshot(rs.family_names())
    state = rs.checkpoint_state()
    rs2, m2 = ruleset(tmp_path, {"rules": [HTTP_RULE]})
    m2.restore(snapshot)
    rs2.restore_state(state)
    rs2.consume(lines(*({"msg": "done", "url": f"/b{i}", "status": 200} for i in range(25))))
    routes = {k[1] for k in m2.families["req_total"].series}
    assert len(routes - {"other"}) == 30 and "other" in routes  # 25 restored + 5 new, not 25 + 25


def test_python_presets_read_seconds_when_no_millisecond_field_is_logged(tmp_path: Path) -> None:
    metrics = MetricState()
    rs = RuleSet(metrics, logging.getLogger("test"), ["structlog"])
    base = {"event": "request_finished", "method": "GET", "route": "/x", "status_code": 200}
    rs.consume(lines({**base, "duration_ms": 250.0}, {**base, "duration": 0.5}, {**base, "elapsed": 2}, base))
    cells = metrics.families["http_request_duration_seconds"].series[("GET", "/x")]
    assert cells[-1] == 0.25 + 0.5 + 2 and sum(cells[:-1]) == 3
    errors = metrics.families["collector_log_value_errors_total"].series
    assert errors[("http_request_duration_seconds", "missing")] == 1


def campaign(seeds: int, batches: int, max_series: int) -> None:
    """The long run: `python -m tests.test_rules_bounded [seeds] [batches of 500] [max_series]`."""
    import tempfile
    import time

    worst = 0
    for seed in range(seeds):
        rnd = random.Random(seed)
        with tempfile.TemporaryDirectory() as tmp:
            rs, m = ruleset(Path(tmp), {"rules": [HTTP_RULE]}, max_series=max_series)
            truth: Counter[tuple[str, str]] = Counter()
            began = time.process_time()
            for _ in range(batches):
                batch = []
                for _ in range(500):
                    status, method = (
                        rnd.choice([200, 301, 404, 405, 500]),
                        rnd.choice(["GET", "POST", "PROPFIND"]),
                    )
                    batch.append({"msg": "done", "method": method, "url": hostile_url(rnd), "status": status})
                    truth[(method if method != "PROPFIND" else "OTHER", str(status))] += 1
                rs.consume(lines(*batch))
            series = m.families["req_total"].series
            got: Counter[tuple[str, str]] = Counter()
            for (method, _r, status), v in series.items():
                got[(method, status)] += v
            routes = {r for _m, r, _s in series}
            worst = max(worst, len(routes))
            print(
                f"seed {seed}: {batches * 500:,} lines in {time.process_time() - began:.2f} CPU-s, "
                f"{len(series)} series, {len(routes)} route values, exact per method/status: {got == truth}"
            )
            assert got == truth
    print(f"worst route values: {worst} (budget 30 + other, unmatched, {OVERFLOW})")


if __name__ == "__main__":
    import sys

    campaign(*(int(a) for a in sys.argv[1:4])) if len(sys.argv) > 1 else campaign(5, 200, 10_000)
