"""Seeded random rules and random lines for the rules engine's differential test.

`outcome(seed)` builds a random rules file (every condition operator, label option, action and
value kind the schema has) and random batches of lines (hostile values, nested objects, bad lines),
feeds them to a `RuleSet` through both entry points (`consume`, `consume_buffer`) and returns every
metric the engine wrote plus the per-batch line counts, as plain JSON data.

The golden file `tests/fixtures/rules_differential.json` holds these outcomes as the previous engine
(generated `codegen` -> `batch` layers, before issue 19's rewrite) computed them, with one change to
it: no per-label cache (keyed by the raw value, it gave `false` the label of `0` and `true` that of
`1`), and the discriminator tie broken in rule order, not a set's. `tests/test_rules_differential.py`
checks the current engine gives identical output (it did on these 80 seeds and on 1,000 more run in
separate processes with different hash seeds). `python -m tests.rules_differential` prints the same
comparison; regenerate only on purpose: `--write` (and say why in the commit).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from collector.metrics import MetricState
from collector.rules import RuleSet

GOLDEN = Path(__file__).parent / "fixtures" / "rules_differential.json"
SEEDS = range(80)
log = logging.getLogger("test.differential")
log.addHandler(logging.NullHandler())
log.propagate = False

MESSAGES = ["http_request", "auth_attempt", "job_done", "cache_hit", "ws_open"]
FIELDS = ["method", "status", "route", "url", "duration_ms", "size", "outcome", "level", "user", "req.method",
          "req.url", "res.statusCode", "n"]  # fmt: skip
METHODS = ["GET", "post", "PUT", "BREW", "", "get"]
ROUTES = ["/a", "/a/1", "/b/:id", "/users/42?x=1", "/users/me", "/c/0123456789abcdef0123", "/"]


def _scalar(rnd: random.Random, kind: str) -> Any:
    """A random JSON value for a field: mostly plausible, sometimes hostile."""
    roll = rnd.random()
    if roll < 0.06:
        return None
    if roll < 0.09:
        return rnd.choice([{"x": 1}, [1, 2], True, False, "", "nan", "inf", "-3", 1e300])
    if kind == "method":
        return rnd.choice(METHODS)
    if kind == "status":
        return rnd.choice([200, 200, 201, 404, 405, 500, "503", 99, 200.0, "abc", 700])
    if kind in ("route", "url"):
        return rnd.choice(ROUTES)
    if kind in ("duration_ms", "size", "n"):
        return rnd.choice([rnd.expovariate(1 / 40), rnd.randrange(0, 5000), "12.5", -1.0, 0, 0.5, "x"])
    if kind == "level":
        return rnd.choice(["info", "warn", "ERROR", 30, 50, "debug"])
    if kind == "outcome":
        return rnd.choice(["ok", "fail", "OK", "denied"])
    return rnd.choice(["u1", "u2", "u3", 7])


def _line(rnd: random.Random) -> bytes:
    roll = rnd.random()
    if roll < 0.015:
        return rnd.choice([b"{broken", b"", b"[1,2]", b'"text"', b'{"message":"http_request","m":"\xff"}'])
    obj: dict[str, Any] = {}
    if rnd.random() < 0.9:
        obj["message"] = rnd.choice(MESSAGES) if rnd.random() < 0.95 else rnd.choice([3, None, "other"])
    for path in rnd.sample(FIELDS, rnd.randrange(2, len(FIELDS))):
        value = _scalar(rnd, path.split(".")[-1].replace("statusCode", "status"))
        if "." in path:
            head, tail = path.split(".")
            if rnd.random() < 0.1:
                obj[head] = rnd.choice(["flat", 5, None])
            elif isinstance(obj.get(head, {}), dict):
                obj.setdefault(head, {})[tail] = value
        else:
            obj[path] = value
    return json.dumps(obj).encode()


def _condition(rnd: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rnd.random()
    if depth < 2 and roll < 0.12:
        return {rnd.choice(["any", "all"]): [_condition(rnd, depth + 1) for _ in range(rnd.randrange(1, 3))]}
    if depth < 2 and roll < 0.18:
        return {"not": _condition(rnd, depth + 1)}
    path = rnd.choice(FIELDS)
    kind = path.split(".")[-1].replace("statusCode", "status")
    op = rnd.choice(
        ["equals", "in", "not_equals", "not_in", "regex", "exists", "gt", "gte", "lt", "lte", "bare"]
    )
    if op == "bare":
        return {path: _scalar(rnd, kind) or "GET"}
    if op in ("equals", "not_equals"):
        v = _scalar(rnd, kind)
        return {path: {op: v if not isinstance(v, dict | list) and v is not None else 200}}
    if op in ("in", "not_in"):
        vals = [_scalar(rnd, kind) for _ in range(rnd.randrange(1, 4))]
        return {path: {op: [v if not isinstance(v, dict | list) and v is not None else "GET" for v in vals]}}
    if op == "regex":
        return {path: {"regex": rnd.choice(["^/a", "^G", "[0-9]", "^(ok|fail)$", "e"])}}
    if op == "exists":
        return {path: {"exists": rnd.random() < 0.7}}
    return {path: {op: rnd.choice([0, 1, 200, 399.5, 400, 40, -1])}}


def _match(rnd: random.Random) -> dict[str, Any] | None:
    if rnd.random() < 0.1:
        return None
    out: dict[str, Any] = {}
    if rnd.random() < 0.75:  # a discriminator most rules share
        out["message"] = rnd.choice(MESSAGES) if rnd.random() < 0.7 else {"in": rnd.sample(MESSAGES, 2)}
    for _ in range(rnd.randrange(0, 3)):
        cond = _condition(rnd)
        key = next(iter(cond))
        if key in out:
            out.setdefault("all", []).append(cond)
        else:
            out.update(cond)
    return out or None


def _label(rnd: random.Random) -> Any:
    roll = rnd.random()
    if roll < 0.08:
        return {"value": rnd.choice(["x", "prod"])}
    path = rnd.choice(FIELDS)
    if roll < 0.2:
        return path
    spec: dict[str, Any] = {"from": [path, rnd.choice(FIELDS)] if rnd.random() < 0.25 else path}
    if rnd.random() < 0.5:
        spec["normalize"] = rnd.choice(
            ["status_code", "status_class", "http_method", "route", "lower", "upper"]
        )
    if rnd.random() < 0.2:
        spec["map"] = {"GET": "read", "200": "ok", "/a": "root-a"}
    if rnd.random() < 0.15:
        spec["allow"] = ["GET", "POST", "200", "404", "ok", "/a"]
        spec["other"] = rnd.choice(["other", "rest"])
    if rnd.random() < 0.5:
        spec["default"] = rnd.choice(["unknown", "none", ""])
    if rnd.random() < 0.15:
        spec["template"] = rnd.choice(["route", "req.url"])
    if rnd.random() < 0.15:
        spec["status"] = rnd.choice(["status", "res.statusCode"])
        spec["unmatched"] = "unmatched"
    if rnd.random() < 0.15:
        spec["max_values"] = rnd.randrange(1, 4)
    if rnd.random() < 0.1:
        spec["templates"] = ["/users/:id", "/users/me", "/b/{id}"]
    return spec


def rules_doc(rnd: random.Random) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for i in range(rnd.randrange(1, 8)):
        kind = rnd.choice(["counter", "counter", "histogram", "gauge"])
        names = rnd.sample(["a", "b", "c", "d"], rnd.randrange(0, 4))
        labels = {n: _label(rnd) for n in names}
        rule: dict[str, Any] = {"metric": f"m{i}_total" if kind == "counter" else f"m{i}", "type": kind,
                                "help": "h", "labels": labels}  # fmt: skip
        match = _match(rnd)
        if match is not None:
            rule["match"] = match
        value = {"from": rnd.choice([["duration_ms"], ["size", "n"], ["n"], ["status"]])}
        if rnd.random() < 0.4:
            value["unit"] = rnd.choice(["ms", "s", "kib"])
        elif rnd.random() < 0.2:
            value["scale"] = rnd.choice([2, -1, 0.5])
        if kind == "histogram":
            rule["value"] = value
            rule["buckets"] = sorted(rnd.sample([0.001, 0.01, 0.1, 1, 10, 100, 1000], rnd.randrange(1, 5)))
        elif kind == "gauge":
            rule["action"] = rnd.choice(["set", "inc", "dec"])
            if rule["action"] == "set" or rnd.random() < 0.4:
                rule["value"] = value
            if rule["action"] == "dec" and rnd.random() < 0.5:
                rule["floor"] = 0
        elif rnd.random() < 0.2:
            rule["value"] = value
        if rnd.random() < 0.15:
            rule["max_series"] = rnd.randrange(1, 4)
        rules.append(rule)
        if kind == "gauge" and rnd.random() < 0.5:  # an inc/dec pair on one gauge, as presets make
            twin = {**rule, "action": "dec" if rule["action"] != "dec" else "inc", "match": _match(rnd)}
            if twin["match"] is None:
                del twin["match"]
            if twin["action"] == "inc":
                twin.pop("floor", None)
            rules.append(twin)
        elif rnd.random() < 0.2:  # a second rule feeding the same metric
            twin = {**rule, "match": _match(rnd), "labels": {n: _label(rnd) for n in names}}
            if twin["match"] is None:
                del twin["match"]
            rules.append(twin)
    doc: dict[str, Any] = {"rules": rules}
    if rnd.random() < 0.15:
        doc["extract"] = [
            {"from": "url", "regex": r"^/(?P<section>[a-z]+)/(?P<n>[0-9]+)", "types": {"n": "int"}}
        ]
    return doc


def _state(metrics: MetricState) -> dict[str, Any]:
    """Every family's series as JSON data; values by repr, so NaN and -0.0 compare exactly."""
    out: dict[str, Any] = {}
    for name, fam in sorted(metrics.families.items()):
        out[name] = sorted(
            ["|".join(key), repr(value) if not isinstance(value, list) else [repr(v) for v in value]]
            for key, value in fam.series.items()
        )
    return out


def outcome(seed: int) -> dict[str, Any]:
    """What the engine makes of seed `seed`'s rules and lines (see the module docstring)."""
    rnd = random.Random(seed)
    doc = rules_doc(rnd)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.json"
        path.write_text(json.dumps(doc))
        metrics = MetricState()
        try:
            rs = RuleSet(metrics, log, [], path, max_series=rnd.choice([3, 50]), clock=lambda: 1000.0)
        except ValueError as exc:
            return {"rejected": str(exc).replace(tmp, "TMP")}
    batches = []
    for _ in range(rnd.randrange(3, 9)):
        lines = [_line(rnd) for _ in range(rnd.randrange(1, 120))]
        if rnd.random() < 0.5:
            r = rs.consume_buffer(b"\n".join(lines), len(lines))
            if r is None:
                r = rs.consume(lines)
        else:
            r = rs.consume(lines)
        batches.append([r.parsed, r.unmatched, r.invalid_json, r.invalid_utf8])
    return {"rules": len(doc["rules"]), "batches": batches, "metrics": _state(metrics)}


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        GOLDEN.write_text(json.dumps({str(s): outcome(s) for s in SEEDS}, indent=0, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} ({len(SEEDS)} seeds)")
        return 0
    golden = json.loads(GOLDEN.read_text())
    bad = [s for s in SEEDS if outcome(s) != golden[str(s)]]
    print(f"{len(SEEDS) - len(bad)}/{len(SEEDS)} seeds identical; differing: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
