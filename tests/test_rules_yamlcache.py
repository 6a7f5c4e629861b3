"""collector.rules.yamlcache: replay's cache of parsed rules files is exact, or it is not used."""

from __future__ import annotations

import marshal
from pathlib import Path
from typing import Any

import pytest

from collector.rules import yamlcache
from collector.rules.schema import load_yaml
from collector.rules.yamlcache import MAX_ENTRIES, cache_dir, cached_loader

pytestmark = pytest.mark.quick

TEXT = "rules:\n  - metric: hits_total\n    type: counter\n    match: {message: hit, status: 200}\n"


class Counting:
    """`load_yaml`, counting its calls (a call is a miss)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> Any:
        self.calls += 1
        return load_yaml(text)


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("rules-yaml-*"))


def test_a_hit_returns_exactly_what_parsing_gives(tmp_path: Path) -> None:
    load = Counting()
    cached = cached_loader(str(tmp_path), load)
    first, second = cached(TEXT), cached(TEXT)
    assert first == second == load_yaml(TEXT) and load.calls == 1
    assert list(first["rules"][0]["match"]) == ["message", "status"]  # key order kept
    assert cached_loader(str(tmp_path), load)(TEXT) == first and load.calls == 1  # another process


def test_another_text_with_the_same_file_name_is_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = Counting()
    cached = cached_loader(str(tmp_path), load)
    cached(TEXT)
    (entry,) = _entries(tmp_path)
    other = TEXT.replace("hit", "hat")  # same length; now force the same file name as well
    monkeypatch.setattr("zlib.crc32", lambda _b: int(entry.name.split("-")[2], 16))
    assert cached(other) == load_yaml(other) and load.calls == 2


@pytest.mark.parametrize("garbage", [b"", b"\x00\x01garbage", marshal.dumps(("a", "b")), marshal.dumps(7)])
def test_a_corrupt_or_foreign_entry_is_a_miss_and_is_rewritten(tmp_path: Path, garbage: bytes) -> None:
    load = Counting()
    cached = cached_loader(str(tmp_path), load)
    cached(TEXT)
    (entry,) = _entries(tmp_path)
    entry.write_bytes(garbage)
    assert cached(TEXT) == load_yaml(TEXT) and load.calls == 2
    assert cached(TEXT) == load_yaml(TEXT) and load.calls == 2  # rewritten whole


def test_an_entry_of_another_version_or_pyyaml_is_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = Counting()
    cached_loader(str(tmp_path), load)(TEXT)
    monkeypatch.setattr(yamlcache, "__version__", "9.9.9")
    cached_loader(str(tmp_path), load)(TEXT)
    assert load.calls == 2


def test_data_marshal_cannot_hold_is_not_cached(tmp_path: Path) -> None:
    load = Counting()
    cached = cached_loader(str(tmp_path), load)
    text = "when: 2026-12-02\n"  # a YAML timestamp: a datetime.date
    assert cached(text) == cached(text) == load_yaml(text) and load.calls == 2
    assert _entries(tmp_path) == []


def test_bad_yaml_raises_as_without_the_cache_and_caches_nothing(tmp_path: Path) -> None:
    import yaml

    with pytest.raises(yaml.YAMLError):
        cached_loader(str(tmp_path), load_yaml)("rules: [")
    assert _entries(tmp_path) == []


def test_an_unwritable_directory_parses_every_time(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    load = Counting()
    cached = cached_loader(str(blocker / "collector"), load)
    assert cached(TEXT) == cached(TEXT) == load_yaml(TEXT) and load.calls == 2
    assert cached_loader(None, load) is load


def test_the_directory_keeps_at_most_max_entries(tmp_path: Path) -> None:
    cached = cached_loader(str(tmp_path), load_yaml)
    for n in range(MAX_ENTRIES + 5):
        cached(f"n: {n}\n")
    names = [p.name for p in _entries(tmp_path)]
    assert len(names) == MAX_ENTRIES and not any(p.endswith(".tmp") for p in names)


def test_the_cache_directory_follows_xdg() -> None:
    assert cache_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == "/c/collector"
    assert cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == "/h/.cache/collector"
    assert cache_dir({"HOME": "/h"}) == "/h/.cache/collector"
    assert cache_dir({}) is None
