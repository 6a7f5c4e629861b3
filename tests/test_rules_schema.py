"""Rules file validation (one case per rejected rule, each error names the rule and field) and normalisers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from collector.metrics import MetricState
from collector.rules import PRESETS, RulesError, RuleSet
from collector.rules.normalize import http_method, route_template, status_class, status_code

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

GOOD = "  - metric: ok_total\n    type: counter\n    match: {message: ok}\n"


def load(
    tmp_path: Path, text: str, metrics: MetricState | None = None, presets: tuple[str, ...] = ()
) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return RuleSet(metrics or MetricState(), logging.getLogger("t"), presets, path)


REJECTED = {
    "unknown rule key": ("rules:\n  - metric: a_total\n    type: counter\n    lables: {}\n", "rule 1 (a_total): lables: unknown key"),
    "unknown type": ("rules:\n  - metric: a_total\n    type: summary\n", "rule 1 (a_total): type: must be counter, gauge or histogram"),
    "counter without _total": ("rules:\n  - metric: hits\n    type: counter\n", "rule 1 (hits): metric: counter names must end in _total"),
    "gauge ending in _total": ("rules:\n  - metric: up_total\n    type: gauge\n    action: inc\n", "rule 1 (up_total): metric: only counters may end in _total"),
    "missing metric": ("rules:\n  - type: counter\n", "rule 1: metric: required"),
    "histogram without value": ("rules:\n  - metric: d_seconds\n    type: histogram\n", "rule 1 (d_seconds): value: a histogram needs a value field"),
    "histogram without buckets": ("rules:\n  - metric: d\n    type: histogram\n    value: x\n", "rule 1 (d): buckets: required"),
    "buckets not ascending": ("rules:\n  - metric: d_seconds\n    type: histogram\n    value: x\n    buckets: [1, 0.5]\n", "rule 1 (d_seconds): buckets: must be strictly ascending"),
    "gauge without action": ("rules:\n  - metric: g\n    type: gauge\n", "rule 1 (g): action: a gauge needs action set, inc or dec"),
    "gauge set without value": ("rules:\n  - metric: g\n    type: gauge\n    action: set\n", "rule 1 (g): value: action set needs a value field"),
    "unknown normaliser": ("rules:\n  - metric: a_total\n    type: counter\n    labels: {route: {from: url, normalize: rout}}\n", "rule 1 (a_total): labels.route.normalize: unknown normaliser 'rout'"),
    "label with from and value": ("rules:\n  - metric: a_total\n    type: counter\n    labels: {x: {from: a, value: b}}\n", "rule 1 (a_total): labels.x: needs exactly one of from"),
    "bad label name": ("rules:\n  - metric: a_total\n    type: counter\n    labels: {__x: a}\n", "rule 1 (a_total): metric: '__x' is not a valid label name"),
    "bad regex": ("rules:\n  - metric: a_total\n    type: counter\n    match: {path: {regex: '(['}}\n", "rule 1 (a_total): match.path.regex: not a valid regular expression"),
    "comparison with text": ("rules:\n  - metric: a_total\n    type: counter\n    match: {status: {gte: high}}\n", "rule 1 (a_total): match.status.gte: expected a number"),
    "unknown condition": ("rules:\n  - metric: a_total\n    type: counter\n    match: {status: {above: 3}}\n", "rule 1 (a_total): match.status.above: unknown condition"),
    "in without a list": ("rules:\n  - metric: a_total\n    type: counter\n    match: {level: {in: warn}}\n", "rule 1 (a_total): match.level.in: expected a non-empty list"),
    "bare list as a value": ("rules:\n  - metric: a_total\n    type: counter\n    match: {level: [warn, error]}\n", "rule 1 (a_total): match.level: use {in: [...]}"),
    "unknown unit": ("rules:\n  - metric: d_seconds\n    type: histogram\n    value: {from: t, unit: minutes}\n", "rule 1 (d_seconds): value.unit: unknown unit 'minutes'"),
    "unit and scale": ("rules:\n  - metric: d_seconds\n    type: histogram\n    value: {from: t, unit: ms, scale: 2}\n", "rule 1 (d_seconds): value: give unit or scale, not both"),
    "bad max_series": ("rules:\n  - metric: a_total\n    type: counter\n    max_series: 0\n", "rule 1 (a_total): max_series: must be a positive integer"),
    "bad expire_after": ("rules:\n  - metric: a_total\n    type: counter\n    expire_after: soon\n", "rule 1 (a_total): expire_after: must be a positive number"),
    "floor on a counter": ("rules:\n  - metric: a_total\n    type: counter\n    floor: 0\n", "rule 1 (a_total): floor: only gauges take a floor"),
    "same metric, other labels": (f"rules:\n{GOOD}  - metric: ok_total\n    type: counter\n    labels: {{x: y}}\n", "rule 2 (ok_total): labels: ['x'] but"),
    "same metric, other type": ("rules:\n  - metric: g\n    type: gauge\n    action: inc\n  - metric: g\n    type: histogram\n    value: v\n    buckets: [1]\n", "rule 2 (g): type: histogram but"),
    "invalid YAML": ("rules:\n  - metric: a_total\n   type: counter\n", "not valid YAML at line 3"),
    "no rules": ("rules: []\n", "expected a non-empty list under 'rules'"),
    "unknown top-level key": ("rule:\n  - metric: a_total\n", "unknown top-level key(s) ['rule']"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REJECTED))
def test_invalid_rules_file_is_rejected_naming_the_rule_and_field(tmp_path: Path, case: str) -> None:
    text, message = REJECTED[case]
    with pytest.raises(RulesError) as exc:
        load(tmp_path, text)
    assert any(message in line for line in exc.value.errors), exc.value.errors
    assert all(line.startswith(str(tmp_path / "rules.yaml")) for line in exc.value.errors)


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = "rules:\n  - metric: a\n    type: counter\n  - metric: b_total\n    type: nope\n"
    with pytest.raises(RulesError) as exc:
        load(tmp_path, text)
    assert len(exc.value.errors) == 2


def test_a_metric_owned_elsewhere_in_the_collector_cannot_be_redefined(tmp_path: Path) -> None:
    metrics = MetricState()
    metrics.gauge("app_process_up", "h")
    with pytest.raises(
        RulesError, match=r"rule 1 \(app_process_up\): metric: app_process_up is already a gauge"
    ):
        load(tmp_path, "rules:\n  - metric: app_process_up\n    type: gauge\n    action: inc\n", metrics)


def test_a_rule_set_rebuilt_on_the_same_state_keeps_its_families_values(tmp_path: Path) -> None:
    metrics = MetricState()
    first = load(tmp_path, f"rules:\n{GOOD}", metrics)
    first.consume([b'{"message":"ok"}'])
    second = load(tmp_path, f"rules:\n{GOOD}", metrics)  # e.g. the logs source restarted
    second.consume([b'{"message":"ok"}'])
    assert metrics.families["ok_total"].series == {(): 2.0}


def test_unknown_preset_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="unknown preset 'pino'; expected one of winston, pino-http"):
        RuleSet(MetricState(), logging.getLogger("t"), ["pino"])


def test_missing_rules_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules file"):
        RuleSet(MetricState(), logging.getLogger("t"), (), tmp_path / "absent.yaml")


def test_rules_file_adds_to_presets_and_every_preset_loads_together(tmp_path: Path) -> None:
    metrics = MetricState()
    rs = load(tmp_path, f"rules:\n{GOOD}", metrics, presets=tuple(PRESETS))
    assert "ok_total" in rs.family_names()
    assert "http_requests_total" in rs.family_names()


def test_example_rules_file_in_config_is_valid() -> None:
    path = Path(__file__).parent.parent / "config" / "rules.example.yaml"
    rs = RuleSet(MetricState(), logging.getLogger("t"), (), path)
    assert rs.family_names()


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("/api/users/123", "/api/users/:id"),
        ("/api/users/123/posts/9?sort=new#top", "/api/users/:id/posts/:id"),
        ("/v/550e8400-e29b-41d4-a716-446655440000", "/v/:id"),
        ("/o/5f2b8c9e1a3d4e6f7a8b9c0d", "/o/:id"),
        ("/t/eyJhbGciOiJIUzI1NiJ9abc123XYZ", "/t/:id"),
        ("/u/jane@example.com/avatar", "/u/:id/avatar"),
        ("/static/app.3f9a2b1c4d5e6f708192a3b4c5d6e7f8.js", "/static/app.:hash.js"),
        ("/api/videos/:id", "/api/videos/:id"),
        ("/health", "/health"),
        ("", "/"),
        ("http://example.com/a/1?q", "/a/:id"),
        ("/a/b/c/d/e/f/g/h/i/j/k", "/a/b/c/d/e/f/g/h/..."),
        (42, None),
    ],
)
def test_route_template_collapses_ids_and_strips_queries(raw: object, want: str | None) -> None:
    assert route_template(raw) == want


def test_status_and_method_normalisers_bound_their_values() -> None:
    assert [status_code(v) for v in (200, "404", 503.0, 99, "abc", None)] == [
        "200",
        "404",
        "503",
        "other",
        "other",
        None,
    ]
    assert [status_class(v) for v in (200, "404", 700, None)] == ["2xx", "4xx", "other", None]
    assert [http_method(v) for v in ("get", "PATCH", "BREW", 1)] == ["GET", "PATCH", "OTHER", None]
