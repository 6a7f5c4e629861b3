"""Batch decoding of JSON log lines into only the fields the rules read.

From the set of dotted paths the rules use, generate msgspec Structs (nested for `req.method`), so one
`decode_lines` call decodes a whole batch and skips every other field in C. A batch with a bad line
falls back to line-by-line decoding, so one bad line is counted and skipped, not the batch.
"""

from __future__ import annotations

import itertools
import sys
from operator import attrgetter

from collector.logpipe import NOT_JSON, BatchResult, bad_line_reason, lenient_json, valid_utf8

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    import msgspec

# msgspec (with typing_extensions, uuid, decimal, ...: ~25 ms of a start) is imported by the methods
# that decode, so rules compile and register their families without it: `collector replay` of an
# empty file, `--check`, and a daemon before its first line never load it.

__all__ = ["LineDecoder", "plain_lines"]

#: How many bad lines per batch are reported back (index, reason) for the tailer to log.
MAX_BAD_REPORTED = 5
#: How much of the first buffer is looked at to learn the app's key order and label strings.
SAMPLE_BYTES, SAMPLE_LINES = 64 * 1024, 200
#: Strings a label field may take and still be decoded as a Literal (route templates, methods, ...).
VOCAB_MAX = 256
#: Batches that may fail on a new string before the batch decoder gives up on Literals for good.
MAX_RELEARN = 64
#: What a leaf field decodes to; anything else (object, array) counts as absent.
Scalar = str | int | float | bool | None
#: What an object or array reads as where a path is opaque (see `LineDecoder`): present, and a string.
OPAQUE = "[object]"
_Tree = dict[str, "_Tree | None"]


def _tree(paths: Iterable[str]) -> _Tree:
    """`{"req.method", "res.statusCode"}` -> `{"req": {"method": None}, "res": {"statusCode": None}}`."""
    root: _Tree = {}
    # parents first (a parent read as a leaf becomes an object), then by name: the same attribute
    # names in every process, whatever the order of the set of paths
    for path in sorted(paths, key=lambda p: (p.count("."), p)):
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

    Two things are learnt from the first lines (see `learn`): the order the app writes its keys in, and
    the few strings each label field takes (`"GET"`, `"/api/videos/:id"`), which the batch decoder then
    reads as `Literal` values: msgspec returns the one interned string instead of allocating a new one,
    and its hash is already known when a rule looks it up (~12% of replay's CPU together). A string not
    seen before fails that batch's decoding; the batch is decoded again with plain fields and its new
    strings are learnt. A field with more than `VOCAB_MAX` strings stays plain.

    Args:
        paths: dotted field paths the rules read.
        literal_paths: those of `paths` that may be learnt as Literals (labels and matches; not values).
        opaque_paths: those of `paths` where an object or array is a value of its own (`OPAQUE`), not
            absent: a log level logged as an object is still a line with a level (`other`).
        check_utf8: count a line with invalid UTF-8 anywhere as `invalid_utf8`, also in the fields no
            rule reads (msgspec skips those unchecked); costs one `isascii` pass over each batch.
    """

    def __init__(
        self,
        paths: Iterable[str],
        literal_paths: Iterable[str] = (),
        opaque_paths: Iterable[str] = (),
        check_utf8: bool = False,
    ) -> None:
        paths = set(paths)
        self._opaque = set(opaque_paths) & paths
        self.check_utf8 = check_utf8
        self._tree = _tree(paths)
        self._counter = itertools.count()
        self._attr: dict[str, str] = {}  # dotted JSON path -> dotted attribute path
        self._order: dict[str, int] = {}  # dotted JSON path -> position in the app's lines
        # dotted JSON path -> strings seen (a Literal field), or None: too many, a plain field
        self._vocab: dict[str, set[str] | None] = {p: set() for p in literal_paths if p in paths}
        self._relearn = MAX_RELEARN
        _layout(self._tree, "", "", self._attr)  # attribute names now; the Structs at the first decode
        self._root: type[msgspec.Struct] | None = None
        # plain fields: the exact per-line path
        self._plain: msgspec.json.Decoder[msgspec.Struct] | None = None
        self._batch_decoder: msgspec.json.Decoder[msgspec.Struct] | None = None  # Literals once learnt
        self._learnt = False
        # Whether the last batch's label strings are the learnt Literals (the same objects in every
        # line, interned) or plain strings (equal, not identical): `Compiled.apply` re-keys its caches
        # when this changes, so the loop's dict lookups compare strings by identity, not by value.
        self.literals = False

    @property
    def root(self) -> type[msgspec.Struct]:
        """The Struct of the plain fields (built at first use)."""
        if self._root is None:
            self._root = self._struct(self._tree, "", "", {})
        return self._root

    @property
    def _decoder(self) -> msgspec.json.Decoder[msgspec.Struct]:
        """The decoder of the plain fields: the exact per-line path."""
        if self._plain is None:
            import msgspec

            self._plain = msgspec.json.Decoder(self.root)
        return self._plain

    @property
    def _fast(self) -> msgspec.json.Decoder[msgspec.Struct]:
        """The batch decoder, with Literal fields once learnt."""
        if self._batch_decoder is None:
            self._batch_decoder = self._decoder
        return self._batch_decoder

    def _struct(
        self, node: _Tree, json_prefix: str, attr_prefix: str, types: dict[str, Any]
    ) -> type[msgspec.Struct]:
        import msgspec

        fields: list[tuple[str, Any, Any]] = []
        for i, (name, child) in enumerate(node.items()):
            attr = f"f{i}"  # by position in the rules' tree: the same whatever order or types fields get
            json_path, attr_path = json_prefix + name, attr_prefix + attr
            if child is None:
                # objects/arrays where a rule reads a value: reshaped per line
                ftype: Any = types.get(json_path, Scalar)
                self._attr[json_path] = attr_path
            else:
                ftype = self._struct(child, json_path + ".", attr_path + ".", types) | None
                self._attr[json_path] = attr_path  # a parent is readable too (exists checks)
            fields.append((attr, ftype, msgspec.field(name=name, default=None)))
        # msgspec matches each key of an object against the fields from the one after the last match:
        # fields in the order the app writes its keys match at the first compare (~5% of decoding)
        order = self._order
        fields.sort(key=lambda f: order.get(json_prefix + f[2].name, len(order)))
        # frozen: hashable, so every value a rule compares or caches is hashable
        return msgspec.defstruct(f"Fields{next(self._counter)}", fields, gc=False, frozen=True)

    def learn(self, buf: bytes | memoryview) -> None:
        """Learn key order and label strings from the first lines of `buf` (once, on the first batch).
        Attribute names stay, so compiled rules are unaffected."""
        if self._learnt:
            return
        self._learnt = True
        import msgspec

        seen: dict[str, set[str]] = {}
        for line in bytes(buf[:SAMPLE_BYTES]).split(b"\n")[:SAMPLE_LINES]:
            try:
                data = msgspec.json.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
                continue
            if isinstance(data, dict):
                _walk(data, "", self._order, seen)
        for path, strings in seen.items():
            self._add_strings(path, strings)
        self._root = self._struct(self._tree, "", "", {})  # the plain fields, in the learnt order
        self._plain = None
        self._rebuild_fast()

    def _add_strings(self, path: str, strings: set[Any]) -> None:
        known = self._vocab.get(path)
        if known is not None:
            known |= {s for s in strings if s.__class__ is str}
            if len(known) > VOCAB_MAX:
                self._vocab[path] = None

    def _rebuild_fast(self) -> None:
        """The batch decoder for the strings learnt so far (the plain one when there are none)."""
        from typing import Literal

        import msgspec

        literal = {
            # interned: a discriminator value is then the very constant the generated loop compares with
            p: Literal[tuple(sorted(map(sys.intern, v)))] | int | float | bool | None
            for p, v in self._vocab.items()
            if v
        }
        self._batch_decoder = (
            msgspec.json.Decoder(self._struct(self._tree, "", "", literal)) if literal else self._decoder
        )

    def _batch(self, buf: bytes | memoryview) -> list[Any]:
        """`decode_lines` with the fast decoder; a label string it has not learnt fails it, so the
        batch is decoded with plain fields and its strings are learnt (a bad batch raises as before)."""
        import msgspec

        if not _lines_end_at_lf_only(buf):
            raise msgspec.DecodeError("a lone CR in the batch: decode it line by line")  # callers do
        self.literals = False
        try:
            objs = self._fast.decode_lines(buf)
            self.literals = self._fast is not self._decoder
            return objs
        except msgspec.ValidationError:
            if self._fast is self._decoder:
                raise
        objs = self._decoder.decode_lines(buf)
        self._relearn -= 1
        if self._relearn <= 0:
            self._batch_decoder = self._decoder  # values keep coming: plain fields from now on
            return objs
        for path, known in self._vocab.items():
            if known is not None:
                self._add_strings(path, set(map(self._one(path), objs)))
        self._rebuild_fast()
        return objs

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
        import msgspec

        if not self._learnt:
            self.learn(b"\n".join(lines[:SAMPLE_LINES]))
        buf = b"\n".join(lines)
        if self.check_utf8 and not (buf.isascii() or valid_utf8(buf)):
            return self._decode_each(lines, result)
        try:
            objs = self._batch(buf)
            if len(objs) == len(lines):
                return objs
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass
        return self._decode_each(lines, result)

    def decode_buffer(self, buf: bytes | memoryview, count: int) -> list[Any] | None:
        """`count` complete lines joined by newlines, decoded without splitting; None when that is not
        exactly one object per line (an empty or bad line): the caller splits and uses `decode`."""
        import msgspec

        if not self._learnt:
            self.learn(buf)
        if self.check_utf8 and not ((data := bytes(buf)).isascii() or valid_utf8(data)):
            return None  # the caller splits: `decode` finds the line
        try:
            objs = self._batch(buf)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        return objs if len(objs) == count else None

    def decode_one(self, line: bytes) -> Any:
        """One line with the plain fields (None when it is not a usable object): explain, restores."""
        out = self._decode_each([line], BatchResult())
        return out[0] if out else None

    def _decode_each(self, lines: Sequence[bytes], result: BatchResult) -> list[Any]:
        import msgspec

        self.literals = False
        out = []
        decode = self._decoder.decode
        for i, line in enumerate(lines):
            if self.check_utf8 and not (line.isascii() or valid_utf8(line)):
                result.invalid_utf8 += 1
                if len(result.bad) < MAX_BAD_REPORTED:
                    result.bad.append((i, "invalid_utf8"))
                continue
            try:
                out.append(decode(line))
                continue
            except msgspec.ValidationError:
                obj = self._reshape(line)  # valid JSON whose shape differs where a rule looks
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                # valid JSON msgspec refuses (a lone surrogate escape, 1e400, depth) is reshaped too
                obj = self._reshape(line) if bad_line_reason(line) == "invalid_json" else "invalid_utf8"
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
        import msgspec

        try:
            data = msgspec.json.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
            if bad_line_reason(line) == "invalid_utf8":
                return "invalid_utf8"
            data = lenient_json(line)  # valid JSON msgspec refuses: lone surrogate escapes, 1e400, depth
            if data is NOT_JSON:
                return "invalid_json"
        if not isinstance(data, dict):
            return "not_object"
        return msgspec.convert(_prune(data, self._tree, self._opaque), self.root)


def _lines_end_at_lf_only(buf: bytes | memoryview) -> bool:
    """Whether `decode_lines` ends lines in `buf` only where its lines do, at each LF.

    msgspec also ends a line at a lone CR (one not before a LF): a line `{...}\r{...}` decodes as two
    objects and, with a blank line (no object) in the same batch, passes the callers' one-object-per-line
    count with every later object shifted onto the wrong line. LF-only logs pay one memchr; CRLF logs
    one regex scan (~0.4 ms per MiB, a fifth of two `count` calls).
    """
    whole = buf.obj if isinstance(buf, memoryview) else buf  # `in` on a memoryview compares ints
    if b"\r" not in whole:  # type: ignore[operator]
        return True
    import re  # compiled once, when a batch first holds a CR (re caches it)

    return re.search(rb"\r(?!\n|\Z)", buf) is None  # a CR that does not end a line


def _layout(node: _Tree, json_prefix: str, attr_prefix: str, out: dict[str, str]) -> None:
    """Each dotted JSON path's dotted attribute path, as `LineDecoder._struct` names the fields: by
    position in the rules' tree, so the names never depend on the key order learnt later."""
    for i, (name, child) in enumerate(node.items()):
        json_path, attr_path = json_prefix + name, attr_prefix + f"f{i}"
        out[json_path] = attr_path  # a parent is readable too (exists checks)
        if child is not None:
            _layout(child, json_path + ".", attr_path + ".", out)


def _walk(data: dict[str, Any], prefix: str, order: dict[str, int], seen: dict[str, set[str]]) -> None:
    """Record the order of `data`'s keys and the strings under each (nested keys: dotted paths)."""
    for key, value in data.items():
        path = prefix + key
        if path not in order:
            order[path] = len(order)
        if isinstance(value, dict):
            _walk(value, path + ".", order, seen)
        elif isinstance(value, str):
            seen.setdefault(path, set()).add(value)


def _prune(data: dict[str, Any], tree: _Tree, opaque: set[str], prefix: str = "") -> dict[str, Any]:
    """The fields of `tree` in `data`; an object or array where a value is read is absent (`OPAQUE`
    on an opaque path)."""
    out = {}
    for name, child in tree.items():
        if name not in data:
            continue
        value = data[name]
        if child is None:
            if not isinstance(value, dict | list):
                out[name] = value
            elif prefix + name in opaque:
                out[name] = OPAQUE
        elif isinstance(value, dict):
            out[name] = _prune(value, child, opaque, prefix + name + ".")
    return out


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
