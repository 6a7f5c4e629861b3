"""Pure parts of the WebSocket source: classification, reply matching, allow-list, cert expiry, settings."""

from __future__ import annotations

import socket
import ssl

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidMessage, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

from collector.settings import ConfigError, Settings, WebSocketSettings, load_settings
from collector.sources.websocket.logic import (
    PHASES,
    REASONS,
    PhaseClock,
    ProbeResult,
    allowed,
    classify,
    earliest_expiry,
    encode_send,
    reply_matches,
)

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def _closed() -> ConnectionClosedError:
    return ConnectionClosedError(Close(1011, "bye"), None)


@pytest.mark.parametrize(
    ("exc", "phase", "unexpected", "reason"),
    [
        (socket.gaierror(-2, "Name or service not known"), "resolve", 0, "dns"),
        (ConnectionRefusedError(111, "refused"), "connect", 0, "refused"),
        (OSError(113, "No route to host"), "connect", 0, "connect"),
        (TimeoutError(), "handshake", 0, "timeout"),
        (TimeoutError(), "exchange", 0, "timeout"),
        (TimeoutError(), "exchange", 2, "unexpected_reply"),
        (TimeoutError(), "ping", 0, "timeout"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls", 0, "tls"),
        (ConnectionResetError(104, "reset"), "tls", 0, "tls"),
        (InvalidStatus(Response(403, "Forbidden", None)), "handshake", 0, "handshake"),  # type: ignore[arg-type]
        (InvalidMessage("did not receive a valid HTTP response"), "handshake", 0, "handshake"),
        (ConnectionResetError(104, "reset"), "handshake", 0, "handshake"),
        (_closed(), "exchange", 0, "closed"),
        (_closed(), "ping", 0, "closed"),
        (ValueError("a bug"), "exchange", 0, "error"),
    ],
)
def test_classify_maps_exception_and_phase_to_reason(
    exc: BaseException, phase: str, unexpected: int, reason: str
) -> None:
    assert classify(exc, phase, unexpected) == reason
    assert reason in REASONS


def test_phase_clock_records_each_phase_and_the_failed_one() -> None:
    ticks = iter([0.0, 1.0, 1.5])
    result = ProbeResult()
    clock = PhaseClock(result, now=lambda: next(ticks))
    clock.begin("resolve")  # t=0
    clock.begin("connect")  # t=1: resolve took 1
    clock.finish()  # t=1.5: connect failed after 0.5
    assert result.phases == {"resolve": 1.0, "connect": 0.5, "tls": 0.0, "handshake": 0.0, "exchange": 0.0}
    assert result.phase == "connect"
    assert tuple(result.phases) == PHASES


@pytest.mark.parametrize(
    ("expect", "message", "ok"),
    [
        ({"type": "pong"}, '{"type":"pong","ts":1}', True),
        ({"type": "pong"}, '{"type":"error"}', False),
        ({"type": "pong"}, "not json", False),
        ({"data.items.0.ok": True}, '{"data":{"items":[{"ok":true}]}}', True),
        ({"data.items.1.ok": True}, '{"data":{"items":[{"ok":true}]}}', False),
        ({"a.b": 1}, '{"a":[1]}', False),
        ("^pong", "pong 42", True),
        ("^pong", "ping", False),
        ("pong", b"\xffpong", True),
    ],
)
def test_reply_matches_regex_or_json_fields(expect: object, message: str | bytes, ok: bool) -> None:
    assert reply_matches(expect, message) is ok  # type: ignore[arg-type]


def test_encode_send_keeps_text_and_serialises_json() -> None:
    assert encode_send("hello") == "hello"
    assert encode_send({"type": "ping"}) == '{"type":"ping"}'


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("ws://127.0.0.1:8080/ws", True),
        ("ws://127.0.0.1:9/other", False),  # path not allowed
        ("wss://app.example.com/ws", True),
        ("wss://app.example.com:443/ws", True),
        ("wss://app.example.com:8443/ws", False),  # only the default port
        ("wss://evil.test/x.example.com/ws", False),  # the host glob does not cross into the path
        ("ws://app.example.com/ws", False),  # scheme must match
        ("wss://user:pw@app.example.com/ws", False),
        ("http://app.example.com/ws", False),
        ("ws://[::1]:5/x", True),
        ("ws://127.0.0.1:notaport/", False),
    ],
)
def test_probe_allow_list_matches_scheme_host_port_and_path(url: str, ok: bool) -> None:
    patterns = ["ws://127.0.0.1:*/ws", "wss://*.example.com/ws", "ws://[::1]:*"]
    assert allowed(url, patterns) is ok


def test_earliest_expiry_is_the_minimum_in_unix_seconds() -> None:
    assert earliest_expiry(["Jan  2 03:04:05 2031 GMT", "Jun  1 00:00:00 2040 GMT"]) == 1925089445.0
    assert earliest_expiry([""]) is None


# -- settings ---------------------------------------------------------------------------------------


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    return load_settings(None)


def test_targets_as_comma_separated_urls_take_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _load(
        monkeypatch,
        COLLECTOR_WEBSOCKET__TARGETS="ws://a:1/x, wss://b/y",
        COLLECTOR_WEBSOCKET__INTERVAL="7",
    )
    assert [t.url for t in s.websocket.targets] == ["ws://a:1/x", "wss://b/y"]
    assert s.websocket.targets[0].mode == "periodic"
    assert s.websocket.interval == 7
    assert s.websocket.is_enabled()


def test_targets_as_json_objects(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    s = _load(
        monkeypatch,
        COLLECTOR_WEBSOCKET__TARGETS='[{"name":"chat","url":"wss://x/ws","mode":"persistent",'
        '"send":{"type":"ping"},"expect":{"type":"pong"},"headers":{"X-Key":"k"},'
        '"subprotocols":["v1"],"verify":false}, "ws://y/"]',
        COLLECTOR_WEBSOCKET__PROBE_ALLOW="ws://127.0.0.1:*,wss://*.example.com",
    )
    chat, plain = s.websocket.targets
    assert chat.label == "chat" and chat.mode == "persistent" and chat.send == {"type": "ping"}
    assert chat.headers["X-Key"].get_secret_value() == "k"
    assert plain.label == "ws://y/"
    assert s.websocket.probe_allow == ["ws://127.0.0.1:*", "wss://*.example.com"]


def test_token_is_read_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    token = Path(str(tmp_path)) / "token"
    token.write_text("s3cret\n")
    s = _load(monkeypatch, COLLECTOR_WEBSOCKET__TARGETS="ws://a/", COLLECTOR_WEBSOCKET__TOKEN_FILE=str(token))
    assert s.websocket.token is not None and s.websocket.token.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://a/", "COLLECTOR_WEBSOCKET__TARGETS[0].url: must be a ws:// or wss:// URL"),
        ("ws://a:99999/", "COLLECTOR_WEBSOCKET__TARGETS[0].url: not a valid URL"),
        ("ws://u:p@a/", "credentials in the URL"),
        ('[{"name":"x"}]', "COLLECTOR_WEBSOCKET__TARGETS[0].url: Field required"),
        (
            '[{"url":"ws://a/","ca_file":"/ca.pem"}]',
            "COLLECTOR_WEBSOCKET__TARGETS[0]: ca_file set for a ws:// URL",
        ),
        ('[{"url":"wss://a/","key_file":"/k.pem"}]', "key_file needs cert_file"),
        ('[{"url":"ws://a/","mode":"sometimes"}]', "COLLECTOR_WEBSOCKET__TARGETS[0].mode"),
        ('[{"url":"ws://a/","expect":"("}]', "not a valid regular expression"),
        ('[{"url":"ws://a/","timeout":0}]', "COLLECTOR_WEBSOCKET__TARGETS[0].timeout"),
        ('[{"url":"ws://a/","token_env":"NO_SUCH_TOKEN_VAR"}]', "NO_SUCH_TOKEN_VAR is not set"),
        ('[{"url":"ws://a/","bogus":1}]', "COLLECTOR_WEBSOCKET__TARGETS[0].bogus"),
        ("ws://a/,ws://a/", "two targets share the name 'ws://a/'"),
        ("[not json", "COLLECTOR_WEBSOCKET__TARGETS (value not shown: it can hold secrets): not valid JSON"),
    ],
)
def test_rejected_targets_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("COLLECTOR_WEBSOCKET__TARGETS", value)
    with pytest.raises(ConfigError) as err:
        load_settings(None)
    assert message in str(err.value)


def test_rejected_source_defaults_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_WEBSOCKET__TARGETS", "ws://a/")
    monkeypatch.setenv("COLLECTOR_WEBSOCKET__PROBE_CONCURRENCY", "0")
    with pytest.raises(ConfigError) as err:
        load_settings(None)
    assert "COLLECTOR_WEBSOCKET__PROBE_CONCURRENCY='0'" in str(err.value)


def test_unconfigured_source_is_off() -> None:
    assert not WebSocketSettings().is_enabled()
    assert WebSocketSettings(probe_allow=["ws://127.0.0.1:*"]).is_enabled()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("ws://127.0.0.1:1/ws", True),
        ("ws://127.0.0.1:1/wsx", False),  # globs match whole segments: `/ws*` is /ws and below
        ("ws://127.0.0.1:1/ws/../admin", False),  # dot segments are resolved before matching
        ("ws://127.0.0.1:1/ws/%2e%2e/admin", False),  # also when percent-encoded
        ("ws://127.0.0.1:1/%77s", True),  # %77 is `w`: the same path as /ws
        ("ws://127.0.0.1:1/ws/x/y", True),
        ("ws://127.0.0.1:1/one/x", True),  # a `*` segment is one segment
        ("ws://127.0.0.1:1/one/x/y", False),
        ("ws://127.0.0.1:1/one", False),
        ("ws://127.0.0.1:1/ws?x=1", False),  # no query unless the pattern has one
        ("ws://127.0.0.1:1/ws#frag", False),
        ("ws://127.0.0.1:1/ws\r\nX-Injected: 1", False),  # control characters are refused, not stripped
        ("ws://127.0.0.1:1/ws%0d%0aX: 1", False),
        ("ws://127.0.0.1:1/app/a/b/c", True),  # `**` spans segments
        ("ws://127.0.0.1:1/app/../ws/../../etc", False),
        ("ws://127.0.0.1:1/feed?room=42", True),
        ("ws://127.0.0.1:1/feed?room=42&admin=1", False),
    ],
)
def test_probe_allow_list_normalises_paths_and_matches_whole_segments(url: str, ok: bool) -> None:
    patterns = [
        "ws://127.0.0.1:*/ws*",
        "ws://127.0.0.1:*/one/*",
        "ws://127.0.0.1:*/app/**",
        "ws://127.0.0.1:*/feed?room=[0-9][0-9]",
    ]
    assert allowed(url, patterns) is ok


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("WS://Example.COM:80/a/./b/../c", "ws://example.com:80/a/c"),
        ("ws://h/a b", "ws://h/a%20b"),  # raw spaces are encoded: never raw on the request line
        ("ws://h/%7euser/%2f", "ws://h/~user/%2F"),  # unreserved decoded, reserved upper-cased
        ("ws://h", "ws://h/"),
        ("ws://h/é", "ws://h/%C3%A9"),
        ("ws://h/%zz", None),
        ("ws://h/\x00", None),
        ("ws://h/\t", None),
        ("ws://u:p@h/", None),
        ("http://h/", None),
    ],
)
def test_normalised_probe_urls_carry_no_raw_space_or_control_character(url: str, normal: str | None) -> None:
    from collector.sources.websocket.logic import normalize_ws_url

    assert normalize_ws_url(url) == normal
    if normal is not None:
        assert not any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in normal)
