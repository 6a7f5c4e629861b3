"""Both log line decoders against JSONTestSuite: valid JSON counts as valid, invalid JSON as invalid.

A log line is one JSON object, so each document is checked as the value of a field
(`{"level":"info","v":DOC}`); top-level objects are checked as they are too. The corpus is
`tests/fixtures/jsontestsuite/` (see its README).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.logpipe import BatchResult, LineConsumer
from collector.metrics import MetricState
from collector.rules import RuleSet
from collector.sources.logs.consumer import level_counter

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

CORPUS = Path(__file__).parent / "fixtures" / "jsontestsuite"

#: i_ cases RFC 8259 calls valid JSON (its grammar allows any number and any \uXXXX escape): accepted.
I_VALID = {
    "i_number_double_huge_neg_exp.json",
    "i_number_huge_exp.json",
    "i_number_neg_int_huge_exp.json",
    "i_number_pos_double_huge_exp.json",
    "i_number_real_neg_overflow.json",
    "i_number_real_pos_overflow.json",
    "i_number_real_underflow.json",
    "i_number_too_big_neg_int.json",
    "i_number_too_big_pos_int.json",
    "i_number_very_big_negative_int.json",
    "i_object_key_lone_2nd_surrogate.json",
    "i_string_1st_surrogate_but_2nd_missing.json",
    "i_string_1st_valid_surrogate_2nd_invalid.json",
    "i_string_incomplete_surrogate_and_escape_valid.json",
    "i_string_incomplete_surrogate_pair.json",
    "i_string_incomplete_surrogates_escape_valid.json",
    "i_string_invalid_lonely_surrogate.json",
    "i_string_invalid_surrogate.json",
    "i_string_inverted_surrogates_U+1D11E.json",
    "i_string_lone_second_surrogate.json",
    "i_structure_500_nested_arrays.json",
}


def _levels() -> LineConsumer:
    return level_counter(MetricState(), logging.getLogger("test.json"))


def _rules(tmp_path: Path) -> LineConsumer:
    path = tmp_path / "rules.yaml"
    rule = {"metric": "lines_total", "type": "counter", "help": "h", "labels": {"level": "level"}}
    rule2 = {
        "metric": "v_total",
        "type": "counter",
        "help": "h",
        "labels": {"v": {"from": "v", "default": "x"}},
    }
    path.write_text(json.dumps({"rules": [rule, rule2]}))
    return RuleSet(MetricState(), logging.getLogger("test.json"), rules_path=path)


CONSUMERS: dict[str, Callable[[Path], LineConsumer]] = {
    "levels": lambda _tmp: _levels(),
    "rules": _rules,
}


def _docs(prefix: str) -> list[tuple[str, bytes]]:
    docs = [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob(f"{prefix}_*.json"))]
    if prefix == "n":
        docs += [
            ("n_structure_100000_opening_arrays.json", b"[" * 100000),
            ("n_structure_open_array_object.json", b'["a":{' * 50000),  # the original's pattern, shorter
        ]
    return docs


def _line(doc: bytes) -> bytes:
    # JSON whitespace may be a newline; a log line cannot hold one, and a space is the same whitespace.
    return b'{"level":"info","v":' + doc.replace(b"\n", b" ") + b"}"


def _valid(result: BatchResult) -> int:
    return result.parsed + result.unmatched


@pytest.mark.parametrize("kind", sorted(CONSUMERS))
def test_every_valid_document_decodes_as_valid_alone_and_in_a_batch(kind: str, tmp_path: Path) -> None:
    docs = _docs("y")
    assert len(docs) >= 95
    consumer = CONSUMERS[kind](tmp_path)
    refused = [name for name, doc in docs if _valid(consumer.consume([_line(doc)])) != 1]
    assert refused == []
    # In one batch (the fast path first, then line by line): still every one, and the good line beside it.
    batch = [_line(doc) for _name, doc in docs] + [b'{"level":"info"}']
    assert _valid(consumer.consume(batch)) == len(batch)


@pytest.mark.parametrize("kind", sorted(CONSUMERS))
def test_valid_top_level_objects_are_log_lines(kind: str, tmp_path: Path) -> None:
    consumer = CONSUMERS[kind](tmp_path)
    objects = [(n, d) for n, d in _docs("y") if d.lstrip(b" \t\r\n").startswith(b"{")]
    assert len(objects) >= 10
    refused = [n for n, d in objects if _valid(consumer.consume([d.replace(b"\n", b" ")])) != 1]
    assert refused == []


@pytest.mark.parametrize("kind", sorted(CONSUMERS))
def test_every_invalid_document_is_counted_invalid_and_never_raises(kind: str, tmp_path: Path) -> None:
    consumer = CONSUMERS[kind](tmp_path)
    accepted = []
    for name, doc in _docs("n"):
        # A raw newline cannot be inside a log line; a carriage return is the same whitespace outside
        # strings and as invalid inside them (n_string_unescaped_newline stays invalid).
        doc = doc.replace(b"\n", b"\r")
        for line in (b'{"level":"info","v":' + doc + b"}", doc):
            result = consumer.consume([line, b'{"level":"info"}'])
            bad = result.invalid_json + result.invalid_utf8
            if bad != 1 or _valid(result) != 1:
                accepted.append(name)
    assert accepted == []


@pytest.mark.parametrize("kind", sorted(CONSUMERS))
def test_implementation_defined_documents_that_rfc_8259_allows_are_valid(kind: str, tmp_path: Path) -> None:
    consumer = CONSUMERS[kind](tmp_path)
    docs = dict(_docs("i"))
    assert set(docs) >= I_VALID
    refused = [name for name in sorted(I_VALID) if _valid(consumer.consume([_line(docs[name])])) != 1]
    assert refused == []
    # The rest (invalid UTF-8, UTF-16, a byte-order mark) may go either way, but never raise.
    for name, doc in docs.items():
        result = consumer.consume([_line(doc), b'{"level":"info"}'])
        assert _valid(result) + result.invalid_json + result.invalid_utf8 == 2, name


def test_a_lone_surrogate_label_value_is_served_as_the_replacement_character(tmp_path: Path) -> None:
    metrics = MetricState()
    path = tmp_path / "rules.yaml"
    rule = {"metric": "users_total", "type": "counter", "help": "h", "labels": {"name": "user"}}
    path.write_text(json.dumps({"rules": [rule]}))
    consumer = RuleSet(metrics, logging.getLogger("test.json"), rules_path=path)
    result = consumer.consume(
        [rb'{"level":"info","user":"ab\ud800"}', rb'{"level":"info","user":"\ud83d\ude00"}']
    )
    assert result.parsed == 2
    from collector.exposition import render

    text = render(metrics.families.values())
    assert 'users_total{name="ab\ufffd"} 1' in text
    assert 'users_total{name="\U0001f600"} 1' in text
    text.encode("utf-8")  # servable


def test_deep_nesting_past_the_parser_limit_is_invalid_json_not_a_crash(tmp_path: Path) -> None:
    for consumer in (_levels(), _rules(tmp_path)):
        deep = b'{"level":"info","v":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        result = consumer.consume([deep, b'{"level":"info"}'])
        assert (result.invalid_json, _valid(result)) == (1, 1)
