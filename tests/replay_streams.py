"""Seeded random log byte streams with their ground truth, for replay-vs-daemon line counting.

A stream mixes real app log lines (the winston and app-events samples) with the lines a real log also
holds: blank lines, whitespace, broken and non-object JSON, invalid UTF-8, a lone `\\r` inside a line,
over-long lines; each line ends in `\\n` or `\\r\\n` (a Windows app), and the last may have no newline.
The truth is counted from what was generated, not by either reader.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "logs"
PRESETS = ["winston", "app-events"]
MAX_LINE = 2048  # lines are at most half of it, or over-long by far: never near the limit


def good_lines() -> list[bytes]:
    return [
        line
        for name in ("winston", "app-events")
        for line in (FIXTURES / name / "sample.log").read_bytes().split(b"\n")
        if line.strip()
    ]


@dataclass
class Stream:
    """Bytes, and what they hold: complete lines by kind, and the kind of an unterminated last line."""

    data: bytes
    kinds: Counter[str]  # ok (parsed or unmatched), invalid_json, invalid_utf8, too_long
    last: str | None  # the kind of the last line when it has no newline

    def all_kinds(self) -> Counter[str]:
        """What a reader that reads to the end counts (replay: the last line ends at the end)."""
        return self.kinds + Counter([self.last] if self.last else [])


def stream(seed: int, lines: int = 300) -> Stream:
    rng = random.Random(seed)
    good = good_lines()
    choices: list[tuple[str, bytes]] = []
    for _ in range(lines):
        roll = rng.random()
        if roll < 0.6:
            choices.append(("ok", rng.choice(good)))
        elif roll < 0.66:
            choices.append(("invalid_json", b""))
        elif roll < 0.70:
            choices.append(("invalid_json", b" \t "))
        elif roll < 0.74:
            choices.append(("invalid_json", rng.choice(good)[: rng.randrange(1, 40)]))  # cut short
        elif roll < 0.77:
            choices.append(("invalid_json", rng.choice([b"[1,2]", b'"text"', b"null", b"42"])))
        elif roll < 0.82:
            choices.append(("invalid_utf8", b'{"level":"info","message":"\xff\xfe"}'))
        elif roll < 0.87:
            # a lone CR is not a line end (tail, mtail and Promtail split on LF only): one bad line
            choices.append(("invalid_json", rng.choice(good) + b"\r" + rng.choice(good)))
        elif roll < 0.92:
            choices.append(
                ("too_long", b'{"message":"' + b"x" * rng.randrange(2 * MAX_LINE, 6 * MAX_LINE) + b'"}')
            )
        else:
            choices.append(("invalid_json", b"GET /api/videos 200 12ms (plain text)"))
    kinds: Counter[str] = Counter()
    out = []
    for i, (kind, text) in enumerate(choices):
        end = b"\r\n" if rng.random() < 0.3 else b"\n"
        if i == len(choices) - 1 and rng.random() < 0.5:
            return Stream(b"".join(out) + text, kinds, kind if text else None)
        out.append(text + end)
        kinds[kind] += 1
    return Stream(b"".join(out), kinds, None)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut at random places (a writer's appends: boundaries anywhere, inside CRLF too)."""
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 60))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
