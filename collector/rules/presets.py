"""Ready rule sets for the loggers people use, selected by `COLLECTOR_LOGS__PRESET`.

Each preset is plain rules-file data (the same schema as `config/rules.example.yaml`), validated by
the same code. Field names follow each library's real output (samples in tests/fixtures/logs/). No
preset ever labels by user id, IP, email, raw URL or video id: routes are templated, the rest dropped.
"""

from __future__ import annotations

from collector.rules.schema import RulesError, RuleSpec, parse_rules
from collector.rules.stages import StageSpec, parse_stages

__all__ = ["DURATION_FIELDS", "LEVELS", "PRESETS", "preset_rules", "preset_stages"]

SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
BYTES = [100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000]
#: WebSocket sessions and video streams last minutes to hours.
LONG_SECONDS = [1, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400]


#: Distinct route values a preset admits before new ones become `other` (templates are far fewer).
ROUTE_BUDGET = 200


def http(
    match: dict[str, Any],
    method: list[str],
    route: list[str],
    status: list[str],
    duration: tuple[list[str], str] | None,
    size: list[str] | None,
    template: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The HTTP RED rules for one log shape: which fields hold method, URL, route template, status,
    time and size. `route` is the template when logged, else the normalised URL; a 404/405 without a
    template is `unmatched`; past `ROUTE_BUDGET` values, new ones are `other`."""
    route_label: dict[str, Any] = {
        "from": route, "normalize": "route", "default": "unknown", "status": status,
        "unmatched": "unmatched", "max_values": ROUTE_BUDGET,
    }  # fmt: skip
    if template:
        route_label["template"] = template
    labels = {
        "method": {"from": method, "normalize": "http_method", "default": "OTHER"},
        "route": route_label,
    }
    is_error = (
        {"any": [{path: {"gte": 400}} for path in status]} if len(status) > 1 else {status[0]: {"gte": 400}}
    )
    rules: list[dict[str, Any]] = [
        {
            "metric": "http_requests_total",
            "type": "counter",
            "help": "HTTP requests served, by method, route template and status code.",
            "match": match,
            "labels": {
                **labels,
                "status_code": {"from": status, "normalize": "status_code", "default": "other"},
            },
        },
        {
            "metric": "http_request_errors_total",
            "type": "counter",
            "help": "HTTP requests answered with a 4xx or 5xx status, by error class.",
            "match": {**match, "all": [is_error]},
            "labels": {**labels, "error_class": {"from": status, "normalize": "status_class"}},
        },
    ]
    if duration is not None:
        rules.append(
            {
                "metric": "http_request_duration_seconds",
                "type": "histogram",
                "help": "HTTP request duration in seconds, by method and route template.",
                "match": match,
                "labels": labels,
                "value": {"from": duration[0], "unit": duration[1]},
                "buckets": SECONDS,
            }
        )
    if size is not None:
        rules.append(
            {
                "metric": "http_response_size_bytes",
                "type": "histogram",
                "help": "HTTP response body size in bytes, by method and route template.",
                "match": match,
                "labels": labels,
                "value": {"from": size, "unit": "bytes"},
                "buckets": BYTES,
            }
        )
    return rules


def _count(metric: str, help: str, message: str | list[str], **labels: Any) -> dict[str, Any]:
    when = {"in": message} if isinstance(message, list) else message
    return {"metric": metric, "type": "counter", "help": help, "match": {"message": when}, "labels": labels}


def _gauge(metric: str, help: str, up: str | list[str], down: list[str]) -> list[dict[str, Any]]:
    base = {"metric": metric, "type": "gauge", "help": help}
    when_up = {"in": up} if isinstance(up, list) else up
    return [
        {**base, "match": {"message": when_up}, "action": "inc"},
        # floor 0: a restart between start and end lines must not leave the gauge negative
        {**base, "match": {"message": {"in": down}}, "action": "dec", "floor": 0},
    ]


#: Value budget of the app-events labels read from free text (event types, outcomes, sources, routes).
EVENT_LABEL_BUDGET = 50


def _field(paths: str | list[str], default: str = "unknown", **kw: Any) -> dict[str, Any]:
    budget = {} if "allow" in kw else {"max_values": EVENT_LABEL_BUDGET}  # an allow-list is its own bound
    return {"from": paths, "default": default, **budget, **kw}


APP_EVENTS: list[dict[str, Any]] = [
    # -- auth ---------------------------------------------------------------------------------------
    _count("auth_attempts_total", "Authentication attempts by method and outcome.", "auth_attempt",
           method=_field("method", normalize="lower"), outcome=_field(["outcome", "result"], normalize="lower")),
    *_gauge("auth_sessions_active", "Sessions currently open (created minus destroyed or expired).",
            "session_created", ["session_destroyed", "session_expired", "logout"]),
    _count("user_registrations_total", "New user registrations by sign-up source.", "user_registered",
           source=_field("source", default="direct", normalize="lower")),
    # -- security -----------------------------------------------------------------------------------
    _count("security_events_total", "Security events by type and severity.", "security_event",
           event_type=_field(["event_type", "type"]), severity=_field("severity", normalize="lower")),
    _count("rate_limit_hits_total", "Requests rejected by the rate limiter, by route template.",
           ["rate_limit_hit", "rate_limit_exceeded"], route=_field(["route", "path", "url"], normalize="route")),
    _count("suspicious_activity_total", "Suspicious activity detected, by kind.", "suspicious_activity",
           activity_type=_field(["activity_type", "type"])),
    # -- websocket ----------------------------------------------------------------------------------
    _count("websocket_connections_total", "WebSocket connections accepted by the app.", "ws_connect"),
    *_gauge("websocket_connections_active", "WebSocket connections currently open.", "ws_connect", ["ws_disconnect"]),
    _count("websocket_messages_total", "WebSocket messages by direction and message type.", "ws_message",
           direction=_field("direction", allow=["inbound", "outbound"]), message_type=_field(["message_type", "type"])),
    {
        "metric": "websocket_connection_duration_seconds", "type": "histogram",
        "help": "How long WebSocket connections stayed open, in seconds.",
        "match": {"message": "ws_disconnect"}, "value": {"from": "duration_ms", "unit": "ms"},
        "buckets": LONG_SECONDS,
    },
    # -- content ------------------------------------------------------------------------------------
    _count("content_access_total", "Content accesses by content type and access level.", "content_access",
           content_type=_field("content_type"), access_level=_field("access_level")),
    {**_count("video_streams_total", "Video streams started, by quality.", "content_access",
              quality=_field("quality")), "match": {"message": "content_access", "content_type": "video"}},
    _count("video_streams_total", "Video streams started, by quality.", "video_stream_start",
           quality=_field("quality")),
    {
        "metric": "video_stream_duration_seconds", "type": "histogram",
        "help": "How long video streams played, in seconds.",
        "match": {"message": "video_stream_end"}, "value": {"from": "duration_ms", "unit": "ms"},
        "buckets": LONG_SECONDS,
    },
]  # fmt: skip

#: Field names each stack's loggers and middlewares write, with the synonyms people use.
#: Durations in milliseconds (every stack here logs ms except nginx, which logs seconds).
MS_DURATIONS = ["responseTime", "duration_ms", "response_time", "responseTimeMs", "response_time_ms",
                "elapsed_ms", "latency_ms", "duration"]  # fmt: skip
_PY = dict(
    method=["method", "http_method", "request_method"],
    route=["path", "url", "request_path", "full_path", "raw_path"],
    template=["route", "route_template", "path_template", "url_rule", "endpoint_path"],
    status=["status_code", "status"],
    duration=["duration_ms", "elapsed_ms", "latency_ms", "response_time_ms", "responseTime"],
    size=["response_size", "content_length", "bytes"],
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`collector replay` start-up)
if TYPE_CHECKING:
    from typing import Any
_PY_MESSAGES = ["request_finished", "http_request", "request_completed", "request completed", "access"]


#: Python apps that log seconds instead (`duration`, `elapsed`, `request_time`): used when no ms field is.
PY_SECONDS = ["duration", "elapsed", "request_time", "duration_s"]


def _python(key: str) -> list[dict[str, Any]]:
    """structlog (`event`) and python-json-logger (`message`) carry the same middleware fields."""
    match = {key: {"in": _PY_MESSAGES}}
    rules = http(match, _PY["method"], _PY["route"], _PY["status"], (_PY["duration"], "ms"), _PY["size"],
                 _PY["template"])  # fmt: skip
    ms = next(r for r in rules if r["metric"] == "http_request_duration_seconds")
    has_ms = {"any": [{p: {"exists": True}} for p in _PY["duration"]]}
    # exactly one of the two rules applies to a line, so a line without any duration is one `missing`
    ms["match"] = {**match, "all": [has_ms]}
    rules.append({**ms, "match": {**match, "not": has_ms}, "value": {"from": PY_SECONDS, "unit": "s"}})
    return rules


#: uvicorn (`127.0.0.1:5000 - "GET /x HTTP/1.1" 200`) and gunicorn (`... "GET /x HTTP/1.1" 200 12 ...`)
#: access lines put the request in the message; this regex takes method, target and status from both.
ACCESS_LINE = r'"(?P<request_method>[A-Z]+) (?P<request_target>\S+) HTTP/[0-9.]+" (?P<status_code>[0-9]{3})(?: (?P<response_bytes>[0-9]+|-))?'
_ACCESS_LOGGERS = ["uvicorn.access", "gunicorn.access"]

#: Fastify's built-in logger: `incoming request` (req) and `request completed` (res, responseTime)
#: are two lines with one `reqId`, unique within one process (`pid` on `hostname`).
FASTIFY_JOIN = {
    "key": ["hostname", "pid", "reqId"],
    "start": {"msg": "incoming request"},
    "end": {"msg": "request completed"},
    "carry": ["req"],
    "max_pending": 10_000,
    "expire_after": 600,
}

#: Every app log line by level: what the logs source counts when no preset or rules file is set.
#: pino/bunyan log `level` as a number, Google Cloud Logging style `severity`, some loggers `lvl`.
LEVELS: list[dict[str, Any]] = [
    {
        "metric": "app_log_lines_total",
        "type": "counter",
        "help": "App log lines by level (pino/bunyan numeric levels mapped to names).",
        "match": {
            "any": [{"level": {"exists": True}}, {"severity": {"exists": True}}, {"lvl": {"exists": True}}]
        },
        "labels": {"level": {"from": ["level", "severity", "lvl"], "normalize": "level"}},
    }
]

PRESETS: dict[str, Any] = {
    # A hand-written winston request middleware: flat fields, `message: http_request`.
    "winston": [
        *http({"message": {"in": ["http_request", "request", "request completed", "request_completed"]}},
              ["method"], ["url", "originalUrl", "path"], ["statusCode", "status", "status_code"],
              (MS_DURATIONS, "ms"), ["contentLength", "content_length", "response_size"],
              ["route", "routePath"]),
        *_gauge("http_requests_in_flight", "HTTP requests started and not yet finished (needs request_start lines).",
                "request_start", ["http_request"]),
    ],
    # pino-http's default serializers: req.method, req.url, res.statusCode, responseTime (ms); `route`
    # when the app adds it (customProps), `request errored` for 5xx: one line per request either way.
    "pino-http": http({"req.method": {"exists": True}, "res.statusCode": {"exists": True}}, ["req.method"],
                      ["req.originalUrl", "req.url"], ["res.statusCode"], (["responseTime", "responseTimeMs"], "ms"),
                      ["res.headers.content-length"], ["route", "req.route", "req.routePath"]),
    # express-winston's logger middleware with meta: true.
    "express-winston": http({"meta.req.method": {"exists": True}, "meta.res.statusCode": {"exists": True}},
                            ["meta.req.method"], ["meta.req.originalUrl", "meta.req.url"], ["meta.res.statusCode"],
                            (["meta.responseTime"], "ms"), ["meta.res.headers.content-length"],
                            ["meta.req.route", "meta.route", "route"]),
    # Fastify 4's built-in logger: counted on `request completed`, its req carried from `incoming request`
    # (`request errored`-style error lines carry req and res too, but are not requests: never counted).
    "fastify": {
        "join": FASTIFY_JOIN,
        "rules": http({"msg": "request completed"}, ["req.method"], ["req.url"], ["res.statusCode"],
                      (["responseTime"], "ms"), None,
                      ["req.routeOptions.url", "req.routerPath", "req.route", "routeOptions.url", "routerPath", "route"]),
    },
    "structlog": _python("event"),
    "python-json-logger": _python("message"),
    # uvicorn's / gunicorn's access logger rendered as JSON (python-json-logger): the request is in the
    # message. uvicorn logs no duration, so there is no duration histogram (replay says so).
    "uvicorn": {
        "extract": {"from": "message", "when": {"name": {"in": _ACCESS_LOGGERS}}, "regex": ACCESS_LINE,
                    "types": {"status_code": "int", "response_bytes": "int"}},
        "rules": http({"name": {"in": _ACCESS_LOGGERS}, "status_code": {"exists": True}}, ["request_method"],
                      ["request_target"], ["status_code"], None, None),
    },
    # nginx `log_format ... escape=json` (docs/metrics.md): every variable is a string, time in seconds.
    "nginx-json": http({"request_method": {"exists": True}, "status": {"exists": True}}, ["request_method"],
                       ["request_uri", "uri"], ["status"], (["request_time"], "s"), ["body_bytes_sent"]),
    "app-events": APP_EVENTS,
    "levels": LEVELS,
}  # fmt: skip

#: The duration field(s) each HTTP preset reads; `collector replay` warns when none ever appears.
DURATION_FIELDS: dict[str, list[str]] = {
    name: [p for r in (d["rules"] if isinstance(d, dict) else d)
           if r["metric"] == "http_request_duration_seconds" for p in r["value"]["from"]]
    for name, d in PRESETS.items() if name not in ("app-events", "levels")
}  # fmt: skip


def _preset(name: str) -> Any:
    data = PRESETS.get(name.strip().lower())
    if data is None:
        raise RulesError([f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}"])
    return data


def preset_rules(name: str) -> list[RuleSpec]:
    """The validated rules of one preset.

    Raises:
        RulesError: the name is not a preset.
    """
    return parse_rules(_preset(name), f"preset {name}")


def preset_stages(name: str) -> list[StageSpec]:
    """The extract/join stages of one preset (Fastify's join, uvicorn's message regex).

    Raises:
        RulesError: the name is not a preset.
    """
    return parse_stages(_preset(name), f"preset {name}")
