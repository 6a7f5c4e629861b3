"""Seeded event sequences for the self metrics' differential test (`collector_*`, `process_*`).

`outcome(seed)` builds the collector's own metrics as the daemon does (`SelfMetrics`, the HTTP layer's
`HttpMetrics`, the logs source's checkpoint age), drives them with a random sequence of the events the
code reports (source states, errors, restarts, store errors, overflow, loop lag, requests, refusals,
connections, auth checks, web config reloads, budget slots) and renders `/metrics`'s self part in
both formats at a few points, as plain JSON data: every `# HELP`/`# TYPE` line verbatim and in order,
and every sample parsed by prometheus_client's own parsers (name, labels, value).

The golden file `tests/fixtures/selfmetrics_differential.json` holds these outcomes as the previous
implementation (prometheus_client's `CollectorRegistry`, `Counter`, `Gauge`, `ProcessCollector`, with
`disable_created_metrics`) rendered them. `process_*` values change from run to run, so only their
families and sample names are kept (their values are checked exactly against `ProcessCollector` over a
fixed /proc in tests/test_selfmetrics.py); `collector_build_info`'s labels are replaced by
placeholders (they name this machine's Python). `python -m tests.selfmetrics_differential` prints the
comparison; regenerate only on purpose: `--write` (and say why in the commit). Most seeds are kept as a
digest of their outcome (one whole outcome is ~100 KB, nearly all of it the series that exist at 0
from start-up); the first ones whole, so that a difference can be read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from collector.routes import ROUTE_CLASSES
from collector.selfmetrics import STORE_OPERATIONS, SelfMetrics
from collector.sources.logs.source import _checkpoint_age as register_checkpoint_age
from collector.web.metrics import LISTENERS, REJECT_REASONS, HttpMetrics

GOLDEN = Path(__file__).parent / "fixtures" / "selfmetrics_differential.json"
SEEDS = range(40)
#: Seeds kept whole in the golden file (a difference shows as a diff); the others as a digest.
FULL = range(2)

SOURCES = ["logs", "stripe", "github", "deployments", "websocket", "process"]
STATES = ["starting", "running", "degraded", "failed", "stopped"]
ERRORS = ["read_failed", "permission_denied", "api_error", "checkpoint_failed", "rate_limited", "timeout"]
STATUSES = [200, 200, 200, 201, 204, 304, 400, 401, 404, 408, 413, 429, 500, 503]
AUTH = ["cached", "verified", "failed", "busy"]
FAMILIES = ["http_requests_total", "http_request_duration_seconds", "auth_attempts_total", "x:y_total"]


class _Age:
    """What the checkpoint age collector reads: a logs source's `checkpoint_age()`."""

    def __init__(self) -> None:
        self.age: float | None = None

    def checkpoint_age(self) -> float | None:
        return self.age


def _checkpoint_age(sm: SelfMetrics, age: _Age) -> None:
    """Register the logs source's `collector_log_checkpoint_age_seconds` as the source does."""
    register_checkpoint_age(sm.registry, age.checkpoint_age)


def _value(value: float) -> str:
    return "NaN" if value != value else repr(float(value))


def _samples(text: str, openmetrics: bool) -> dict[str, list[str]]:
    """Each family's samples in order, as `name{labels sorted} value`, parsed by prometheus_client."""
    out: dict[str, list[str]] = {}
    for fam in (parse_openmetrics if openmetrics else parse_text)(text):
        lines = out.setdefault(fam.name, [])
        for s in fam.samples:
            labels = dict(s.labels)
            if s.name == "collector_build_info":  # this machine's Python
                labels = {k: f"<{k}>" for k in labels}
            value = "<varies>" if s.name.startswith("process_") else _value(s.value)
            lines.append(
                s.name + "{" + ",".join(f"{k}={v!r}" for k, v in sorted(labels.items())) + "} " + value
            )
    return out


def _headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def _render(sm: SelfMetrics) -> dict[str, Any]:
    async def both() -> tuple[str, str]:  # in a loop, as in the daemon (collector_asyncio_tasks counts)
        return sm.render(False).decode(), sm.render(True).decode()

    text, om = asyncio.run(both())
    samples, om_samples = _samples(text, False), _samples(om, True)
    return {
        "text_headers": _headers(text),  # every HELP and TYPE line verbatim, in order
        "openmetrics_headers": _headers(om),  # the same, plus `# EOF`
        "samples": samples,
        # OpenMetrics names a counter's family without `_total`; its samples are the text format's
        "openmetrics_samples_same": [s for v in om_samples.values() for s in v]
        == [s for v in samples.values() for s in v],
        "created": "_created" in text + om,
    }


def digest(result: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def outcome(seed: int) -> list[dict[str, Any]]:
    """The self metrics' exposition at four points of a random event sequence."""
    rnd = random.Random(seed)
    sm = SelfMetrics()
    sources = rnd.sample(SOURCES, rnd.randrange(1, len(SOURCES) + 1))
    for name in sources:
        sm.init_source(name, tuple(rnd.sample(ERRORS, rnd.randrange(0, 4))))
    age = _Age()
    if "logs" in sources:
        _checkpoint_age(sm, age)
    listeners = LISTENERS if rnd.random() < 0.5 else LISTENERS[:1]
    http = HttpMetrics(sm.registry, listeners)
    in_flight: dict[tuple[str, str], int] = {}
    if rnd.random() < 0.8:
        http.follow_budgets(in_flight)
    connections = {listener: 0 for listener in listeners}
    snapshots = [_render(sm)]
    for _round in range(3):
        for _ in range(rnd.randrange(0, 120)):
            roll = rnd.random()
            source = rnd.choice(sources)
            listener = rnd.choice(listeners)
            if roll < 0.08:
                sm.set_source_state(source, rnd.choice(STATES))
            elif roll < 0.14:
                sm.source_errors.labels(source, rnd.choice(ERRORS)).inc()
            elif roll < 0.17:
                sm.source_restarts.labels(source).inc()
            elif roll < 0.20:
                sm.loop_lag.set(rnd.choice([0.0, rnd.random() / 50, rnd.expovariate(10)]))
            elif roll < 0.21:
                sm.store_resets.inc()
            elif roll < 0.24:
                sm.store_errors.labels(rnd.choice([*STORE_OPERATIONS, "scrape_checkpoint"])).inc()
            elif roll < 0.27:
                fam = rnd.choice(FAMILIES)
                sm.series_overflow.labels(fam).inc(rnd.choice([0, 1]))
            elif roll < 0.30:
                sm.scrape_duration.set(rnd.expovariate(500))
            elif roll < 0.50:
                http.answered(listener, rnd.choice(STATUSES)).inc()
            elif roll < 0.55:
                http.requests.labels(listener, str(rnd.choice(STATUSES))).inc()  # the guard's refusals
            elif roll < 0.62:
                http.rejected.labels(listener, rnd.choice(REJECT_REASONS)).inc()
            elif roll < 0.70:
                if connections[listener] and rnd.random() < 0.5:
                    connections[listener] -= 1
                    http.connections.labels(listener).dec()
                else:
                    connections[listener] += 1
                    http.connections.labels(listener).inc()
            elif roll < 0.76:
                http.auth_checks.labels(rnd.choice(AUTH)).inc()
            elif roll < 0.80:
                ok = rnd.random() < 0.6
                http.reloads.labels("success" if ok else "failure").inc()
                http.last_reload_ok.set(1 if ok else 0)
                if ok:
                    http.last_reload_time.set(1_700_000_000 + rnd.randrange(0, 10**8) / 1000)
            elif roll < 0.90:
                key = (listener, rnd.choice(ROUTE_CLASSES))
                in_flight[key] = max(0, in_flight.get(key, 0) + rnd.choice([-1, 1, 1, 2]))
            else:
                age.age = rnd.choice([None, 0.0, rnd.random() * 10, rnd.randrange(0, 4000) * 1.0])
        snapshots.append(_render(sm))
    return snapshots


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        golden = {
            "full": {str(s): outcome(s) for s in FULL},
            "sha256": {str(s): digest(outcome(s)) for s in SEEDS},
        }
        GOLDEN.write_text(json.dumps(golden, indent=0, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} ({len(SEEDS)} seeds)")
        return 0
    golden = json.loads(GOLDEN.read_text())
    bad = [s for s in SEEDS if digest(outcome(s)) != golden["sha256"][str(s)]]
    print(f"{len(SEEDS) - len(bad)}/{len(SEEDS)} seeds identical; differing: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
