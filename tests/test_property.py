"""Hostile input, property-based (hypothesis, bounded budget): the log decoder and rules, Stripe and
GitHub signature checks and decoders never raise anything unexpected, and a batch counts exactly what
its lines counted one by one (one bad line is skipped, not the batch)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import gidgethub
import msgspec
from gidgethub.sansio import validate_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.metrics import MetricState
from collector.rules import PRESETS, RuleSet
from collector.settings import GitHubSettings
from collector.sources.github.events import parse_event
from collector.sources.stripe.events import EventError, decode_event
from collector.sources.stripe.signature import verify

# CI budget: a few hundred examples per property keeps this module to seconds.
BUDGET = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
_json = st.recursive(
    _scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=12), kids, max_size=5)
    ),
    max_leaves=12,
)
# Field names the presets read, so random objects reach the rules and not only the decoder's fallback.
_KEYS = [
    "level", "message", "msg", "event", "method", "url", "route", "status", "statusCode", "status_code",
    "responseTime", "duration", "duration_ms", "req", "res", "request", "response", "time", "user",
    "reason", "request_time", "request_method", "request_uri", "meta", "http", "latency",
]  # fmt: skip
_finite_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=12), kids, max_size=5)),
    max_leaves=12,
)  # fmt: skip
_log_objects = st.dictionaries(st.sampled_from(_KEYS), _finite_json, max_size=8)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


_lines = st.lists(
    st.one_of(
        _log_objects.map(_line),
        st.binary(max_size=60).filter(lambda b: b"\n" not in b),
        st.sampled_from(
            [b"{", b"[]", b"null", b'{"level": "info"', b"\xff\xfe", b'{"a": "\xc3"}', b"", b"   "]
        ),
    ),
    max_size=25,
)


_CACHE: dict[str, tuple[MetricState, RuleSet]] = {}


def _ruleset(name: str) -> tuple[MetricState, RuleSet]:
    """Compiling every preset takes a while, so each role keeps one rule set across examples; the two
    sides of a comparison see the same lines, so their cumulative states must stay equal."""
    if name not in _CACHE:
        metrics = MetricState()
        log = logging.getLogger("test.property")
        _CACHE[name] = metrics, RuleSet(metrics, log, presets=list(PRESETS), clock=lambda: 1e9)
    return _CACHE[name]


def _state(metrics: MetricState) -> dict[str, Any]:
    return {name: dict(fam.series) for name, fam in metrics.families.items()}


@BUDGET
@given(_lines)
def test_rules_never_raise_and_a_batch_counts_what_its_lines_count_alone(lines: list[bytes]) -> None:
    batch_metrics, batch = _ruleset("batch")
    single_metrics, single = _ruleset("single")
    result = batch.consume(lines)
    assert result.parsed + result.unmatched + result.invalid_json + result.invalid_utf8 == len(lines)
    totals = [0, 0, 0, 0]
    for line in lines:
        r = single.consume([line])
        for i, n in enumerate((r.parsed, r.unmatched, r.invalid_json, r.invalid_utf8)):
            totals[i] += n
    assert totals == [result.parsed, result.unmatched, result.invalid_json, result.invalid_utf8]
    assert _state(batch_metrics) == _state(single_metrics)


@BUDGET
@given(st.lists(_log_objects.map(_line), min_size=1, max_size=10), st.integers(min_value=0, max_value=9))
def test_one_bad_line_in_a_batch_costs_only_that_line(good: list[bytes], at: int) -> None:
    clean_metrics, clean = _ruleset("clean")
    dirty_metrics, dirty = _ruleset("dirty")
    clean.consume(good)
    dirty_batch = list(good)
    dirty_batch.insert(min(at, len(good)), b'{"level": "info", "broken": ')
    result = dirty.consume(dirty_batch)
    assert result.invalid_json == 1
    assert _state(clean_metrics) == _state(dirty_metrics)


SECRET = "whsec_property"


def _stripe_header(body: bytes, ts: int, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@BUDGET
@given(st.binary(max_size=200), st.one_of(st.none(), st.text(max_size=120)))
def test_stripe_signature_check_rejects_any_forgery_without_raising(body: bytes, header: str | None) -> None:
    assert verify(body, header, [SECRET], 300) is not None


@BUDGET
@given(st.text(max_size=200).map(str.encode), st.one_of(st.integers(0, 290), st.integers(310, 10**6)))
def test_stripe_signature_accepts_exactly_fresh_correct_signatures(body: bytes, age: int) -> None:
    ts = int(time.time()) - age
    reason = verify(body, _stripe_header(body, ts), [SECRET], 300)
    assert (reason is None) == (age <= 290)  # older than the tolerance: a replay
    assert verify(body, _stripe_header(body, ts, "whsec_other"), [SECRET], 300) is not None


@BUDGET
@given(st.one_of(st.binary(max_size=300), _json.map(lambda v: json.dumps(v, allow_nan=True).encode())))
def test_stripe_decoder_raises_only_event_error(body: bytes) -> None:
    try:
        decode_event(body)
    except EventError as exc:
        assert exc.reason in ("invalid_json", "invalid_event") or exc.reason


_event_envelopes = st.fixed_dictionaries(
    {"id": st.text(max_size=10), "type": st.sampled_from(["payment_intent.succeeded", "charge.refunded", "x"]),
     "created": _scalars, "data": st.one_of(_json, st.fixed_dictionaries({"object": _json}))},
)  # fmt: skip


@BUDGET
@given(_event_envelopes)
def test_stripe_decoder_handles_envelopes_with_wrong_types(ev: dict[str, Any]) -> None:
    with contextlib.suppress(EventError):
        decode_event(json.dumps(ev, allow_nan=True).encode())


@BUDGET
@given(st.binary(max_size=200), st.text(max_size=80))
def test_github_signature_check_rejects_forgeries_with_its_one_exception(body: bytes, sig: str) -> None:
    try:
        validate_event(body, signature=sig, secret="gh-secret")
    except gidgethub.ValidationFailure:
        return
    raise AssertionError("a forged signature was accepted")


_GH = GitHubSettings(webhook_secret="s", repositories=[])


@BUDGET
@given(
    st.sampled_from(["deployment", "deployment_status", "push", "workflow_run", "issues", "ping", "", "x"]),
    st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v, allow_nan=True).encode())),
)
def test_github_parser_raises_only_decode_errors(event: str, body: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        parse_event(event, body, _GH)
