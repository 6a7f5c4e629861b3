"""Batch decoding of JSON log lines into only the fields the rules read.

From the set of dotted paths the rules use, generate msgspec Structs (nested for `req.method`), so one
`decode_lines` call decodes a whole batch and skips every other field in C. A batch with a bad line
falls back to line-by-line decoding, so one bad line is counted and skipped, not the batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any

import msgspec

from collector.logpipe import BatchResult

__all__ = ["LineDecoder", "plain_lines"]

#: How many bad lines per batch are reported back (index, reason) for the tailer to log.
MAX_BAD_REPORTED = 5
#: What a leaf field decodes to; anything else (object, array) counts as absent.
Scalar = str | int | float | bool | None
_Tree = dict[str, "_Tree | None"]


def _tree(paths: Iterable[str]) -> _Tree:
    """`{"req.method", "res.statusCode"}` -> `{"req": {"method": None}, "res": {"statusCode": None}}`."""
    root: _Tree = {}
    for path in sorted(paths, key=lambda p: p.count(".")):  # a parent read as a leaf becomes an object
        node = root
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            node = child
        node.setdefault(parts[-1], None)
    return root


class LineDecoder:
    """Decode batches of JSON lines into generated Structs holding the needed fields.

    Args:
        paths: dotted field paths the rules read.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self._tree = _tree(paths)
        self._counter = itertools.count()
        self._attr: dict[str, str] = {}  # dotted JSON path -> dotted attribute path
        self.root = self._struct(self._tree, "", "")
        self._decoder = msgspec.json.Decoder(self.root)

    def _struct(self, node: _Tree, json_prefix: str, attr_prefix: str) -> type:
        fields: list[tuple[str, Any, Any]] = []
        for i, (name, child) in enumerate(node.items()):
            attr = f"f{i}"
            json_path, attr_path = json_prefix + name, attr_prefix + attr
            if child is None:
                ftype: Any = Scalar  # objects/arrays where a rule reads a value: reshaped per line
                self._attr[json_path] = attr_path
            else:
                ftype = self._struct(child, json_path + ".", attr_path + ".") | None
                self._attr[json_path] = attr_path  # a parent is readable too (exists checks)
            fields.append((attr, ftype, msgspec.field(name=name, default=None)))
        # frozen: hashable, so every value a rule compares or caches is hashable
        return msgspec.defstruct(f"Fields{next(self._counter)}", fields, gc=False, frozen=True)

    def attr(self, path: str) -> str:
        """The dotted attribute path (`f3.f0`) that holds a dotted JSON path in decoded lines."""
        return self._attr[path]

    def getter(self, paths: Sequence[str]) -> Callable[[Any], Any]:
        """A function returning the first present (non-null) of `paths` from a decoded line."""
        getters = [self._one(p) for p in paths]
        if len(getters) == 1:
            return getters[0]

        def first(obj: Any) -> Any:
            for get in getters:
                value = get(obj)
                if value is not None:
                    return value
            return None

        return first

    def _one(self, path: str) -> Callable[[Any], Any]:
        attr = self._attr[path]
        get = attrgetter(attr)
        if "." not in attr:
            return get

        def nested(obj: Any) -> Any:
            try:
                return get(obj)
            except AttributeError:  # an intermediate object is absent (None)
                return None

        return nested

    def decode(self, lines: Sequence[bytes], result: BatchResult) -> list[Any]:
        """Decode a batch; bad lines are counted in `result` and left out of the returned list."""
        try:
            objs = self._decoder.decode_lines(b"\n".join(lines))
            if len(objs) == len(lines):
                return objs
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        return self._decode_each(lines, result)

    def decode_buffer(self, buf: bytes | memoryview, count: int) -> list[Any] | None:
        """`count` complete lines joined by newlines, decoded without splitting; None when that is not
        exactly one object per line (an empty or bad line): the caller splits and uses `decode`."""
        try:
            objs = self._decoder.decode_lines(buf)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        return objs if len(objs) == count else None

    def _decode_each(self, lines: Sequence[bytes], result: BatchResult) -> list[Any]:
        out = []
        decode = self._decoder.decode
        for i, line in enumerate(lines):
            try:
                out.append(decode(line))
                continue
            except msgspec.ValidationError:
                obj = self._reshape(line)  # valid JSON whose shape differs where a rule looks
            except UnicodeDecodeError:
                obj = "invalid_utf8"
            except msgspec.DecodeError:
                obj = "invalid_utf8" if _bad_utf8(line) else "invalid_json"
            if isinstance(obj, str):
                if obj == "invalid_utf8":
                    result.invalid_utf8 += 1
                else:
                    result.invalid_json += 1
                if len(result.bad) < MAX_BAD_REPORTED:
                    result.bad.append((i, obj if obj != "not_object" else "invalid_json"))
            else:
                out.append(obj)
        return out

    def _reshape(self, line: bytes) -> Any:
        """Decode generically, drop values whose type a nested path cannot read, then convert."""
        try:
            data = msgspec.json.decode(line)
        except UnicodeDecodeError:
            return "invalid_utf8"
        except msgspec.DecodeError:
            return "invalid_json"
        if not isinstance(data, dict):
            return "not_object"
        return msgspec.convert(_prune(data, self._tree), self.root)


def _prune(data: dict[str, Any], tree: _Tree) -> dict[str, Any]:
    out = {}
    for name, child in tree.items():
        if name not in data:
            continue
        value = data[name]
        if child is None:
            if not isinstance(value, dict | list):
                out[name] = value
        elif isinstance(value, dict):
            out[name] = _prune(value, child)
    return out


def _bad_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def plain_lines(data: bytes, end: int, max_line_bytes: int) -> int:
    """How many lines `data[:end]` (complete lines; `data[end]` is a newline) holds, or 0 when one of
    them may be longer than `max_line_bytes` (the caller splits and checks each). Checked in C without
    splitting: a longer line would contain a whole aligned window of half the limit without a newline.
    """
    if end <= 0 or b"\r" in data:
        return 0
    half = (max_line_bytes + 1) // 2
    if end > max_line_bytes and any(
        data.find(b"\n", p, min(p + half, end)) < 0 for p in range(0, end - half + 1, half)
    ):
        return 0
    return data.count(b"\n", 0, end) + 1
