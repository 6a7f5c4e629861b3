"""Pure parts of log tailing, without files or servers: splitting, identity, levels, tailer decisions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from collector.metrics import MetricState
from collector.rules.normalize import normalise_level
from collector.settings import ConfigError, load_settings
from collector.sources.logs.consumer import level_counter
from collector.sources.logs.identity import FP_BYTES, Fingerprint, end_offset
from collector.sources.logs.lines import line_offset, split_lines
from collector.sources.logs.scan import FdObs, FileObs, Scan, watch_roots
from collector.sources.logs.tailer import Tailer

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

log = logging.getLogger("test")


# -- splitting ------------------------------------------------------------------------------------
def test_split_keeps_the_partial_last_line_for_later() -> None:
    s = split_lines(b"a\nbb\nccc", False, 100)
    assert (s.lines, s.consumed, s.too_long, s.skipping) == ([b"a", b"bb"], 5, 0, False)


def test_split_without_newline_consumes_nothing() -> None:
    s = split_lines(b"abc", False, 100)
    assert (s.lines, s.consumed) == ([], 0)


def test_split_counts_a_line_over_the_limit_once_and_keeps_its_neighbours() -> None:
    s = split_lines(b"ok\n" + b"x" * 50 + b"\nfine\n", False, 10)
    assert (s.lines, s.too_long, s.consumed, s.skipping) == ([b"ok", b"fine"], 1, 59, False)
    assert line_offset(s, 1000, 1) == 1000 + 3 + 51


def test_split_starts_skipping_an_unfinished_line_already_over_the_limit() -> None:
    s = split_lines(b"ok\n" + b"x" * 50, False, 10)
    assert (s.lines, s.too_long, s.consumed, s.skipping) == ([b"ok"], 1, 53, True)


def test_split_while_skipping_drops_up_to_the_newline_without_counting_again() -> None:
    s = split_lines(b"xxxx", True, 10)
    assert (s.lines, s.too_long, s.consumed, s.skipping) == ([], 0, 4, True)
    s = split_lines(b"xx\nnext\n", True, 10)
    assert (s.lines, s.too_long, s.consumed, s.skipping) == ([b"next"], 0, 8, False)
    assert line_offset(s, 0, 0) == 3


def test_split_keeps_blank_lines_as_lines() -> None:
    assert split_lines(b"\n\na\n", False, 10).lines == [b"", b"", b"a"]


# -- identity -------------------------------------------------------------------------------------
def test_fingerprint_matches_a_longer_file_with_the_same_start() -> None:
    fp = Fingerprint.of(b"hello\n")
    assert fp.matches(b"hello\nworld\n")
    assert not fp.matches(b"hellx\nworld\n")
    assert not fp.matches(b"hel")  # shorter: truncated
    assert Fingerprint.of(b"x" * 5000).size == FP_BYTES


def test_an_empty_fingerprint_matches_anything_but_ties_nothing() -> None:
    fp = Fingerprint.of(b"")
    assert fp.matches(b"anything") and not fp.ties(b"anything")


def test_a_copy_ties_whether_it_is_shorter_or_longer_than_what_we_saw() -> None:
    fp = Fingerprint.of(b"a\nb\nc\n")
    assert fp.ties(b"a\nb\n") and fp.ties(b"a\nb\nc\nd\n")
    assert not fp.ties(b"x\nb\n") and not fp.ties(b"")


@pytest.mark.parametrize(
    ("tail", "size", "expected"),
    [(b"", 0, (0, False)), (b"a\nb\n", 4, (4, False)), (b"a\nbc", 4, (4, True)), (b"abc", 103, (103, True))],
)
def test_start_at_end_begins_at_the_end_and_skips_an_unfinished_line(
    tail: bytes, size: int, expected: tuple
) -> None:
    assert end_offset(tail, size) == expected


def test_watch_roots_fall_back_to_the_nearest_existing_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert watch_roots([f"{tmp_path}/a/b/*.log"]) == ((str(tmp_path), False),)
    assert watch_roots([f"{tmp_path}/**/*.log"]) == ((str(tmp_path), True),)


# -- levels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "level"),
    [
        (10, "trace"),
        (20, "debug"),
        (30, "info"),
        (35, "info"),
        (40, "warn"),
        (50, "error"),
        (60, "fatal"),
        ("WARNING", "warn"),
        ("err", "error"),
        ("silly", "trace"),
        ("http", "info"),
        ("nonsense", "other"),
        (True, "other"),
        ({"x": 1}, "other"),
        (None, None),
    ],
)
def test_levels_are_normalised_to_a_bounded_set(raw: object, level: str | None) -> None:
    assert normalise_level(raw) == level


def test_consumer_counts_a_good_batch_in_one_decode() -> None:
    m = MetricState()
    c = level_counter(m, log)
    r = c.consume([b'{"level":30}', b'{"level":"error"}', b'{"severity":"WARNING"}', b'{"msg":"x"}'])
    assert (r.parsed, r.unmatched, r.invalid_json, r.invalid_utf8) == (3, 1, 0, 0)
    assert m.families["app_log_lines_total"].series == {("info",): 1, ("error",): 1, ("warn",): 1}


def test_consumer_counts_one_bad_line_and_keeps_the_rest_of_the_batch() -> None:
    m = MetricState()
    c = level_counter(m, log)
    r = c.consume([b'{"level":30}', b"{broken", b"", b'{"level":"info","m":"\xff"}', b'{"level":30}'])
    assert (r.parsed, r.invalid_json, r.invalid_utf8) == (2, 2, 1)
    assert r.bad == [(1, "invalid_json"), (2, "invalid_json"), (3, "invalid_utf8")]
    assert m.families["app_log_lines_total"].series == {("info",): 2}


# -- tailer decisions (synthetic scans) -----------------------------------------------------------
def _tailer() -> Tailer:
    m = MetricState()
    return Tailer(level_counter(m, log), m, log, max_line=1024, grace=5)


def _file(path: str, ino: int, content: bytes, fd: int | None = -1) -> FileObs:
    return FileObs(path, "*.log", dev=1, ino=ino, size=len(content), prefix=content[:FP_BYTES], fd=fd)


def _never(_fo: FileObs) -> bool:
    return False


def test_a_renamed_file_is_the_same_stream_and_the_new_file_starts_at_zero() -> None:
    t = _tailer()
    t.apply(Scan(files={"app.log": _file("app.log", 7, b"one\n")}), 0, lambda fo: True)
    t.streams[(1, 7)].offset = 4
    t.apply(
        Scan(
            files={"app.log.1": _file("app.log.1", 7, b"one\n", None), "app.log": _file("app.log", 8, b"")},
            fds={(1, 7): FdObs(4, b"one\n")},
        ),
        1,
        _never,
    )
    assert (t.streams[(1, 7)].path, t.streams[(1, 7)].offset) == ("app.log.1", 4)
    assert t.streams[(1, 8)].offset == 0
    assert t.rotations.series == {("app.log",): 1}


def test_a_checkpointed_inode_with_other_content_is_a_new_file() -> None:
    t = _tailer()
    t.restore([{"path": "a.log", "dev": 1, "ino": 7, "head": "b2xkCg==", "offset": 4}])  # b"old\n"
    t.apply(Scan(files={"a.log": _file("a.log", 7, b"new content\n")}), 0, _never)
    assert t.streams[(1, 7)].offset == 0
    assert t.streams[(1, 7)].fp == Fingerprint.of(b"new content\n")


def test_a_copy_is_tied_and_read_from_the_old_offset_when_the_original_is_truncated() -> None:
    t = _tailer()
    t.apply(Scan(files={"app.log": _file("app.log", 7, b"a\nb\n")}), 0, _never)
    t.streams[(1, 7)].offset = 2  # read "a\n" only
    copy = _file("app.log.1", 9, b"a\nb\n")
    t.apply(Scan(files={"app.log.1": copy, "app.log": _file("app.log", 7, b"", None)},
                 fds={(1, 7): FdObs(0, b"")}), 1, _never)  # fmt: skip
    assert (t.streams[(1, 9)].offset, t.streams[(1, 9)].tied_to) == (2, None)
    assert t.streams[(1, 7)].offset == 0
    assert t.truncations.series == {("app.log",): 1}


def test_a_copy_of_a_live_file_is_not_read_while_the_original_goes_on() -> None:
    t = _tailer()
    t.apply(Scan(files={"app.log": _file("app.log", 7, b"a\nb\n")}), 0, _never)
    t.streams[(1, 7)].offset = 4
    t.apply(Scan(files={"app.bak.log": _file("app.bak.log", 9, b"a\nb\n"),
                        "app.log": _file("app.log", 7, b"a\nb\nc\n", None)},
                 fds={(1, 7): FdObs(6, b"a\nb\nc\n")}), 1, _never)  # fmt: skip
    assert t.streams[(1, 9)].tied_to is t.streams[(1, 7)]
    assert t.truncations.series == {}


# -- settings -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("COLLECTOR_LOGS__START_AT", "middle"),
        ("COLLECTOR_LOGS__MAX_LINE_BYTES", "10"),
        ("COLLECTOR_LOGS__CHECKPOINT_INTERVAL", "0"),
        ("COLLECTOR_LOGS__POLL_INTERVAL", "-1"),
    ],
)
def test_rejected_logs_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str
) -> None:
    monkeypatch.setenv("COLLECTOR_LOGS__PATHS", "/var/log/app/*.log")
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigError) as err:
        load_settings(None)
    assert var in str(err.value)


def test_paths_accept_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_LOGS__PATHS", '["/a/*.log", "/b/*.log"]')
    assert load_settings(None).logs.paths == ["/a/*.log", "/b/*.log"]
    monkeypatch.setenv("COLLECTOR_LOGS__PATHS", "/a/*.log, /b/*.log")
    assert load_settings(None).logs.paths == ["/a/*.log", "/b/*.log"]


def test_a_seeming_copy_that_grows_apart_is_read_as_a_new_file_from_its_start() -> None:
    t = _tailer()
    t.apply(Scan(files={"a.log": _file("a.log", 7, b"banner\nA1\n")}), 0, _never)
    t.apply(Scan(files={"b.log": _file("b.log", 9, b"banner\n")}), 1, _never)
    assert t.streams[(1, 9)].tied_to is t.streams[(1, 7)]
    t.streams[(1, 9)].fd = -1
    t.apply(Scan(files={}, fds={(1, 9): FdObs(10, b"banner\nB1\n")}), 2, _never)
    assert (t.streams[(1, 9)].tied_to, t.streams[(1, 9)].offset) == (None, 0)


def test_files_first_seen_in_the_same_scan_never_tie_to_each_other() -> None:
    t = _tailer()
    t.apply(
        Scan(files={"a.log": _file("a.log", 7, b"x\n"), "b.log": _file("b.log", 9, b"x\ny\n")}), 0, _never
    )
    assert t.streams[(1, 9)].tied_to is None and t.streams[(1, 7)].tied_to is None


def test_consumer_survives_object_and_array_levels() -> None:
    m = MetricState()
    r = level_counter(m, log).consume([b'{"level":{"a":1}}', b'{"level":[1]}', b'{"lvl":"info"}'])
    assert (r.parsed, r.unmatched) == (3, 0)
    assert m.families["app_log_lines_total"].series == {("other",): 2, ("info",): 1}


def test_a_copy_resumed_past_its_end_is_not_taken_for_a_truncation() -> None:
    t = _tailer()
    t.apply(Scan(files={"app.log": _file("app.log", 7, b"a\nb\nc\n")}), 0, _never)
    t.streams[(1, 7)].offset = 6  # read all three lines; the copy below was taken after "a\n" only
    t.apply(Scan(files={"app.log.1": _file("app.log.1", 9, b"a\n"), "app.log": _file("app.log", 7, b"", None)},
                 fds={(1, 7): FdObs(0, b"")}), 1, _never)  # fmt: skip
    assert t.streams[(1, 9)].offset == 6
    t.apply(Scan(files={}, fds={(1, 9): FdObs(2, b"a\n"), (1, 7): FdObs(0, b"")}), 2, _never)
    assert t.streams[(1, 9)].offset == 6  # nothing re-read from the copy
    assert t.truncations.series == {("app.log",): 1}


def test_rotated_names_are_told_from_other_logs_beside_them() -> None:
    from collector.sources.logs.identity import rotated_name

    live = "app.log"
    for name in ("app.log.1", "app.log.2.gz", "app.log-20261201", "app.log-20261201-1764547200.gz",
                 "app-20261201.log", "app-20261201.log.gz", "app.log.1.xz"):  # fmt: skip
        assert rotated_name(name, live), name
    for name in ("app.log", "app-error.log", "app.log.bak", "other.log", "app.logs", "app.log.old.gz"):
        assert not rotated_name(name, live), name


def test_a_compressed_copy_is_read_at_any_offset_and_a_partial_line_is_served_again(tmp_path: Path) -> None:
    import gzip

    from collector.sources.logs.scan import Decompressed

    data = b"".join(b"line %06d\n" % i for i in range(50_000))
    path = tmp_path / "app.log.1.gz"
    path.write_bytes(gzip.compress(data))
    z = Decompressed(str(path), "gzip")
    assert z.pread(100, 0) == data[:100]
    assert z.pread(100, 95) == data[95:195]  # backwards inside the last chunk: no re-decompression
    assert z.pread(1000, 300_000) == data[300_000:301_000]  # forward seek
    assert z.pread(10**7, 499_990) == data[499_990:]
    assert z.pread(10, len(data)) == b""
    z.close()
