"""The batch fast paths (issue 9): unsplit chunks and per-batch aggregation give line-by-line results."""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import pytest

from collector.metrics import MetricState
from collector.replay import LogsDefaults, ReplayStats, read_batches, read_buffers, replay
from collector.rules import RuleSet
from collector.rules.decode import plain_lines
from collector.settings import LogsSettings

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "bench" / "app_rules.yaml"
log = logging.getLogger("test.batch")


def _rules(path: Path = RULES, presets: tuple[str, ...] = ()) -> tuple[MetricState, RuleSet]:
    metrics = MetricState()
    return metrics, RuleSet(metrics, log, list(presets), path, clock=lambda: 1e9)


def _state(metrics: MetricState) -> dict[str, object]:
    return {name: dict(fam.series) for name, fam in metrics.families.items()}


def _lines(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        method = rnd.choice(["GET", "POST", "get", "BREW"])
        status = rnd.choice([200, 200, 404, 500, "503", 99])
        dur = rnd.choice([rnd.expovariate(1 / 40), 0.1, 3, "12.5", "fast", None, -1.0, True])
        fields = f'"method":"{method}","route":"/r{i % 3}","status":{status if isinstance(status, int) else chr(34) + status + chr(34)}'
        if dur is not None:
            value = f'"{dur}"' if isinstance(dur, str) else "true" if dur is True else repr(dur)
            fields += f',"duration_ms":{value}'
        kind = rnd.choice(["http_request"] * 6 + ["auth_attempt", "ws_connect"])
        out.append(f'{{"message":"{kind}",{fields},"outcome":"ok"}}'.encode())
    return out


def test_a_batch_updates_exactly_what_its_lines_do_one_by_one_sums_bit_identical() -> None:
    # Several raw tuples (status, unnormalised methods) feed each histogram series, values of every kind.
    lines = _lines(3000)
    batch_metrics, batch = _rules()
    single_metrics, single = _rules()
    result = batch.consume(lines)
    parsed = sum(single.consume([line]).parsed for line in lines)
    assert result.parsed == parsed and result.parsed + result.unmatched == len(lines)
    assert _state(batch_metrics) == _state(single_metrics)  # float sums compared with ==
    bad = batch_metrics.families["collector_log_value_errors_total"].series
    assert bad == single_metrics.families["collector_log_value_errors_total"].series and bad


def test_consume_buffer_equals_consume_and_declines_chunks_it_cannot_take_whole() -> None:
    lines = _lines(500, seed=3)
    m1, r1 = _rules()
    m2, r2 = _rules()
    whole = r1.consume_buffer(b"\n".join(lines), len(lines))
    assert whole is not None and whole == r2.consume(lines)
    assert _state(m1) == _state(m2)
    assert r1.consume_buffer(b'{"message":"http_request"}\n{bad', 2) is None  # a bad line: caller splits
    assert r1.consume_buffer(b'{"message":"x"}\n\n{"message":"y"}', 3) is None  # an empty line
    assert _state(m1) == _state(m2)  # nothing applied when declined


def test_plain_lines_counts_lines_and_refuses_possible_over_long_ones() -> None:
    data = b"a\nbb\nccc\n"
    assert plain_lines(data, len(data) - 1, 1024) == 3
    assert plain_lines(b"a\r\nb\n", 4, 1024) == 0
    long = b"x" * 3000 + b"\n" + b"y\n" * 500
    assert plain_lines(long, len(long) - 1, 2048) == 0
    short = (b"z" * 1000 + b"\n") * 10
    assert plain_lines(short, len(short) - 1, 2048) == 10
    near = b"w" * 2048 + b"\n" + b"v" * 2048 + b"\n"
    assert plain_lines(near, len(near) - 1, 2048) == 0  # may be declined: the exact reader decides


def _exact(data: bytes, max_line: int) -> tuple[list[bytes], int]:
    stats = ReplayStats()
    return [ln for b in read_batches(io.BytesIO(data), max_line, stats) for ln in b], stats.too_long


def test_read_buffers_yields_the_lines_read_batches_does(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("collector.replay.BIG_CHUNK", 4096)  # many chunks, lines across their edges
    rnd = random.Random(5)
    parts = []
    for _ in range(400):
        parts.append(rnd.choice([b"x" * rnd.randrange(1, 300), b"", b"y" * 5000, b"zz\r", b"{}"]))
    for tail in (b"", b"\n", b"last-without-newline"):
        data = b"\n".join(parts) + tail
        for max_line in (1024, 2048, 8192):
            expected, too_long = _exact(data, max_line)
            for seekable in (True, False):
                fh = io.BytesIO(data) if seekable else io.BufferedReader(_Pipe(data))  # type: ignore[arg-type]
                stats = ReplayStats()
                got = [ln for buf, n in read_buffers(fh, max_line, stats) for ln in _split(buf, n)]
                assert got == expected and stats.too_long == too_long, (tail, max_line, seekable)


class _Pipe(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        chunk = self.data.read(min(len(b), 1000))
        b[: len(chunk)] = chunk
        return len(chunk)


def _split(buf: memoryview, n: int) -> list[bytes]:
    lines = bytes(buf).split(b"\n")
    assert len(lines) == n
    return lines


def test_replay_of_a_file_equals_consuming_its_lines(tmp_path: Path) -> None:
    lines = _lines(2000, seed=11)
    path = tmp_path / "app.log"
    path.write_bytes(b"\n".join(lines) + b"\n\n{broken\n")
    m1, r1 = _rules()
    m2, r2 = _rules()
    stats = replay([str(path)], r1, 1024 * 1024)
    expected = r2.consume([*lines, b"", b"{broken"])
    # the blank line and the broken one, as the daemon counts them (docs/logs.md, "Lines")
    assert stats.result.parsed == expected.parsed and stats.result.invalid_json == 2
    assert _state(m1) == _state(m2)


def test_replay_defaults_are_the_logs_settings_defaults() -> None:
    defaults, logs = LogsDefaults(), LogsSettings()
    assert list(defaults.preset) == list(logs.preset) and defaults.rules == logs.rules
    assert (defaults.max_series, defaults.max_line_bytes) == (logs.max_series, logs.max_line_bytes)


OBSERVE_ONLY = """
rules:
  - metric: ws_session_seconds
    type: histogram
    help: Session length.
    match: {message: ws_disconnect}
    labels:
      direction: {from: direction, default: unknown}
    value: {from: duration_ms, unit: ms}
    buckets: [0.01, 0.1, 1]
  - metric: ws_bytes_total
    type: counter
    help: Bytes, by a counter that reads a value field (per-line path in the same batch).
    match: {message: ws_message}
    value: {from: size}
"""


def test_observe_only_groups_count_a_line_as_used_only_when_its_value_is(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(OBSERVE_ONLY)
    rnd = random.Random(9)
    lines = []
    for _ in range(2000):
        kind = rnd.choice(["ws_disconnect", "ws_message"])
        direction = rnd.choice(['"in"', '"IN"', "null", "1"])
        value = rnd.choice(["12.5", "0.001", '"7"', '"x"', "null", "-3", "true", "1e3"])
        lines.append(
            f'{{"message":"{kind}","direction":{direction},"duration_ms":{value},"size":{value}}}'.encode()
        )
    batch_metrics, batch = _rules(path)
    single_metrics, single = _rules(path)
    result = batch.consume(lines)
    singles = [single.consume([line]) for line in lines]
    assert result.parsed == sum(r.parsed for r in singles) and 0 < result.parsed < len(lines)
    assert result.unmatched == sum(r.unmatched for r in singles)
    assert _state(batch_metrics) == _state(single_metrics)


def _line(method: str, route: str, status: int = 200, dur: float = 12.5) -> bytes:
    return (
        f'{{"level":"info","message":"http_request","method":"{method}","route":"{route}",'
        f'"status":{status},"duration_ms":{dur}}}'
    ).encode()


def test_label_strings_are_learnt_and_a_new_one_relearns_without_losing_a_line() -> None:
    m1, fast = _rules()
    m2, single = _rules()
    first = [_line("GET", "/a"), _line("POST", "/b")] * 50
    later = [_line("GET", "/a"), _line("PUT", "/c", 500, 7.25), _line("POST", "/b")] * 40
    for batch in (first, later, first):
        assert fast.consume_buffer(b"\n".join(batch), len(batch)) is not None
        for line in batch:
            single.consume([line])
    assert _state(m1) == _state(m2)
    dec = fast._compiled.decoder
    assert dec._vocab["method"] == {"GET", "POST", "PUT"} and dec._vocab["route"] == {"/a", "/b", "/c"}
    assert "duration_ms" not in dec._vocab  # a value field is never learnt as strings
    assert dec._fast is not dec._decoder  # still decoding labels as Literals
    fields = dec.root.__struct_encode_fields__
    assert fields[:5] == ("message", "method", "route", "status", "duration_ms")  # the app's key order


def test_a_label_with_too_many_strings_or_too_many_relearns_falls_back_to_plain_fields(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr("collector.rules.decode.VOCAB_MAX", 8)
    m1, fast = _rules()
    m2, single = _rules()
    batches = [[_line("GET", f"/r{i}-{j}") for j in range(3)] for i in range(6)]  # routes keep coming
    for batch in batches:
        assert fast.consume_buffer(b"\n".join(batch), len(batch)) is not None
        for line in batch:
            single.consume([line])
    assert _state(m1) == _state(m2)
    dec = fast._compiled.decoder
    assert dec._vocab["route"] is None and dec._vocab["method"] == {"GET"}  # routes: plain strings now

    monkeypatch.setattr("collector.rules.decode.MAX_RELEARN", 2)
    m3, capped = _rules()
    for batch in [[_line(f"M{i}", "/a")] for i in range(5)]:
        assert capped.consume_buffer(batch[0], 1) is not None
    dec = capped._compiled.decoder
    assert dec._fast is dec._decoder  # gave up on Literals after two relearns
    counts = m3.families["http_requests_total"].series
    assert sum(counts.values()) == 5


def test_batch_entries_kept_across_batches_are_trimmed_and_stay_exact(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("collector.rules.decide.CACHE_LIMIT", 4)
    m1, fast = _rules()
    m2, single = _rules()
    rnd = random.Random(2)
    for _ in range(12):
        batch = [
            _line(rnd.choice(["GET", "POST"]), f"/r{rnd.randrange(6)}", rnd.choice([200, 404]), rnd.random())
            for _ in range(rnd.randrange(1, 40))
        ]
        fast.consume(batch)
        for line in batch:
            single.consume([line])
        assert _state(m1) == _state(m2)
