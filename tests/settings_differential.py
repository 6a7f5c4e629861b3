"""Seeded random configurations for the settings loader's differential test.

`outcome(seed)` builds a random configuration (environment variables, an env file, command-line flags
and `<VAR>_FILE` secret files; valid and hostile values: wrong types, out-of-range and odd numbers,
bad JSON sections, unknown and misspelt names, empty strings, secret files that do not exist, both a
secret and its file, lowercase names) and returns what `collector run` would get from it: the masked
effective configuration and the typo warnings when it loads, or every `ConfigError` line when not.

The golden file `tests/fixtures/settings_differential.json` holds these outcomes as the pydantic-based
loader (before issue 22 removed pydantic from run time) computed them, plus `collector run --help`'s
text. `tests/test_settings_differential.py` checks the current loader gives the same outcome, line
for line (the few deliberate differences are listed there, each with its reason).
`python -m tests.settings_differential` prints the comparison; `--write` regenerates the golden file
(only on purpose, and say why in the commit).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "fixtures" / "settings_differential.json"
SEEDS = range(600)

_GENERIC = [
    "", " ", "abc", "0", "-1", "1", "2", "1.5", "true", "FALSE", "yes", "off", "on", "null", "[]", "{}",
    '["a", "b"]', "a,b", "inf", "-inf", "nan", "1e3", " 42 ", "1_000", "99999999999999999999", "0x10",
    "\u00e9t\u00e9", "[broken", '{"a": 1}', "-0", "+5", "1.0", "3.000", ",", " , a ,", "[1, 2]", '[""]',
    "DEBUG", "text", "beginning", "persistent", "both",
]  # fmt: skip
_NUMBERS = ["0", "0.001", "0.01", "0.05", "0.5", "1", "59", "60", "61", "300", "301", "1023", "1024", "3600",
            "3601", "86400", "86401", "65536", "1048576", "268435456", "268435457", "1073741824",
            "1073741825", "2592000", "2592001", "604801", "-5", "1e2", "12.0", "7.5", "400", "401", "64", "65",
            "100000", "100001", "1000", "1001"]  # fmt: skip
_SPECIFIC: dict[str, list[str]] = {
    "COLLECTOR_LISTEN": ["127.0.0.1:9", "[::1]:0", "h:65536", "x", ":80", "0.0.0.0:9464", "host:-1", "a:b:1"],
    "COLLECTOR_WEBHOOK_LISTEN": ["127.0.0.1:9", "0.0.0.0:9464", "127.0.0.1:x", "[::]:8443"],
    "COLLECTOR_LOG_LEVEL": ["debug", "Info", "warning", "ERROR", "LOUD", "critical"],
    "COLLECTOR_LOG_LEVEL_LIBRARIES": ["debug", "error", "trace"],
    "COLLECTOR_LOG_FORMAT": ["JSON", "Text", "yaml"],
    "COLLECTOR_DATA_DIR": ["<TMP>/data", "rel/dir", ""],
    "COLLECTOR_STATE_PATH": ["<TMP>/s.db", "", "x.db"],
    "COLLECTOR_WEB_CONFIG_FILE": ["<TMP>/missing.yml", "<TMP>/web.yml", "<TMP>/bad.yml", ""],
    "COLLECTOR_PROCESS__MATCH": ["node .*server.js", "(node", "", "python|gunicorn", "[a-"],
    "COLLECTOR_PROCESS__PID_FILE": ["<TMP>/app.pid", ""],
    "COLLECTOR_LOGS__PATHS": ["<TMP>/app.log", "<TMP>/*.log,<TMP>/b.log", '["<TMP>/x.log"]', '["a", 1]'],
    "COLLECTOR_LOGS__PRESET": ["winston", "pino-http", "winston,nope", "", "structlog"],
    "COLLECTOR_LOGS__RULES": ["<TMP>/rules.yaml", "<TMP>/missing.yaml", ""],
    "COLLECTOR_LOGS__START_AT": ["end", "beginning", "middle", "END"],
    "COLLECTOR_STRIPE__WEBHOOK_SECRETS": [
        "whsec_a",
        "whsec_a,whsec_b",
        "nope",
        '["whsec_a", "x"]',
        '["whsec_a"]',
        "[broken",
        "[1]",
    ],
    "COLLECTOR_STRIPE__API_KEY": ["sk_test_1", "rk_live_2", "pk_test_3", ""],
    "COLLECTOR_STRIPE__API_BASE": [
        "https://api.stripe.com/",
        "http://127.0.0.1:1",
        "ftp://x",
        "https://u:pw@h",
    ],
    "COLLECTOR_GITHUB__WEBHOOK_SECRET": ["gh-secret", ""],
    "COLLECTOR_GITHUB__TOKEN": ["ghp_x", ""],
    "COLLECTOR_GITHUB__API_URL": [
        "https://api.github.com/",
        "http://ghe/api/v3",
        "api.github.com",
        "https://u:pw@ghe/api",
    ],
    "COLLECTOR_GITHUB__REPOSITORIES": ["octo/shop", "octo/shop,bad", '["a/b", "c/d"]', "a/b/c"],
    "COLLECTOR_GITHUB__PRODUCTION_ENVIRONMENTS": ["^prod$", "(", "", "staging|prod"],
    "COLLECTOR_GITHUB__CHANGE_FAILURE": ["incidents", "deployments", "both", "neither"],
    "COLLECTOR_DEPLOYMENTS__CHANGE_FAILURE": ["both", "none"],
    "COLLECTOR_GITHUB__INCIDENT_ENVIRONMENT_PREFIX": ["", "env:"],
    "COLLECTOR_GITHUB__DEPLOY_WORKFLOWS": ["deploy.yml", "a,b"],
    "COLLECTOR_DEPLOYMENTS__TOKEN": ["ci-token", ""],
    "COLLECTOR_WEBSOCKET__TOKEN": ["ws-token", ""],
    "COLLECTOR_WEBSOCKET__PROBE_ALLOW": ["ws://127.0.0.1:*", "a,b"],
}
_TARGET_FIELDS: dict[str, list[Any]] = {
    "url": ["ws://127.0.0.1:1/ws", "wss://app.example.com/ws", "http://x", "ws://", "ws://h:99999", "ws://u:p@h",
            "ws://a b", "ws://h\t", 5, None],
    "name": ["a", "", "b", 3],
    "mode": ["periodic", "persistent", "sometimes"],
    "interval": [1, 0, -1, 86401, "5", "x", None],
    "timeout": [1, 0, 301, "2.5"],
    "headers": [{"X-Token": "hdr-s3cret"}, {"A": 1}, "x", {}],
    "token_env": ["WS_TOKEN_SET", "WS_TOKEN_UNSET"],
    "token_file": ["<TMP>/tok", "<TMP>/missing"],
    "token_header": ["X-Auth", 1],
    "subprotocols": [["chat"], "chat", [1]],
    "send": ["hi", {"op": "ping"}, [1, 2], 5, None],
    "expect": ["pong", "(", {"op": "pong"}, [1]],
    "ping": [True, False, "yes", "maybe"],
    "ca_file": ["<TMP>/ca.pem"],
    "verify": [False, "no"],
    "cert_file": ["<TMP>/c.pem"],
    "key_file": ["<TMP>/k.pem"],
    "server_name": ["app.example.com"],
    "backoff_max": [1, 0, 3601, "x"],
    "bogus": [1],
}  # fmt: skip
_UNKNOWN = ["COLLECTOR_LOGS__PATH", "COLLECTOR_LISTEN_PORT", "COLLECTOR_PROCES__PID", "COLLECTOR_HTTP__MAX_BODY",
            "COLLECTOR_FOO", "COLLECTOR_WEBSOCKET__TARGET", "COLLECTOR_", "COLLECTOR_LOGS__", "COLLECTOR___X",
            "COLLECTOR_LOGS__PATHS__X", "COLLECTOR_HTTP__X__Y", "COLLECTOR_STRIPE__API_KEY_FILEX",
            "COLLECTOR_LISTEN__X", "COLLECTOR_ENV_FILE"]  # fmt: skip
_SECTIONS = {
    "COLLECTOR_PROCESS": ['{"pid": 5, "interval": 2}', '{"pidd": 1}', "pid=s3cr3t", "[1]", '{"pid": "x"}', "{}", ""],
    "COLLECTOR_HTTP": ['{"max_body_bytes": 2048}', '{"max_body_bytes": "x"}', '"x"', "not json", '{"x": 1}'],
    "COLLECTOR_LOGS": ['{"paths": ["<TMP>/a.log"], "max_series": 5}', '{"paths": "a,b"}', "[", "null"],
    "COLLECTOR_STRIPE": ['{"api_key": "sk_1"}', '{"api_key_file": "<TMP>/sec"}', '{"webhook_secrets": ["x"]}'],
    "COLLECTOR_WEBSOCKET": ['{"targets": ["ws://h/a"]}', '{"targets": "ws://h/a"}', '{"interval": 0}'],
    "COLLECTOR_GITHUB": ['{"token": "t", "repositories": ["a/b"]}', '{"webhook_secret": 5}'],
}  # fmt: skip


def _flags() -> list[Any]:
    from collector.settings.flags import setting_flags

    return setting_flags()


def _value(rng: random.Random, var: str, default: str, secret: bool, hostile: bool) -> str:
    pools = [_GENERIC] if hostile or default == "" else [[default]]
    if var in _SPECIFIC:
        pools += [_SPECIFIC[var]] * 3
    numeric = default.replace(".", "", 1).isdigit() or var.endswith(("INTERVAL", "TIMEOUT", "BYTES", "PID"))
    if numeric and (hostile or rng.random() < 0.4):
        pools += [_NUMBERS] * 3
    if default in ("true", "false") or var.endswith("__ENABLED"):
        pools += [["true", "false", "True", "0", "1", "yes", "no", "maybe", ""]] * 2
    if var == "COLLECTOR_WEBSOCKET__TARGETS":
        return _targets(rng)
    if secret and var not in _SPECIFIC:
        pools += [["s3cr3t-value", "another-one"]] * 2
    return rng.choice(rng.choice(pools))


def _targets(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:
        return rng.choice(
            ["ws://127.0.0.1:1/a,ws://127.0.0.1:1/b", "ws://h/a", "http://x", "[", "{", '"x"', "5"]
        )
    targets: list[Any] = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.2:
            targets.append(rng.choice(_TARGET_FIELDS["url"]))
            continue
        target = {"url": rng.choice(_TARGET_FIELDS["url"][:2])} if rng.random() < 0.8 else {}
        for field in rng.sample(sorted(_TARGET_FIELDS), rng.randint(0, 4)):
            target[field] = rng.choice(_TARGET_FIELDS[field])
        targets.append(target)
    if len(targets) == 1 and isinstance(targets[0], dict) and rng.random() < 0.3:
        return json.dumps(targets[0])
    return json.dumps(targets)


def _mutate(rng: random.Random, name: str) -> str:
    i = rng.randrange(len("COLLECTOR_"), len(name))
    return name[:i] + name[i + 1 :] if rng.random() < 0.5 else name[:i] + "X" + name[i:]


def case(seed: int) -> dict[str, Any]:
    """The configuration of `seed`: {"env": {...}, "env_file": {...} | None, "flags": [...], "files": {...}}."""
    rng = random.Random(seed)
    flags = _flags()
    env: dict[str, str] = {}
    env_file: dict[str, str] | None = {} if rng.random() < 0.4 else None
    argv: list[str] = []
    hostile = rng.random() < 0.6  # otherwise: no generic junk, fewer unknown names (most such cases load)
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6])):
        roll = rng.random() if hostile else 0.3 + 0.7 * rng.random()
        where = rng.choice(["env", "env", "env", "file", "flag"])
        if roll < 0.08:
            name, value = rng.choice(_UNKNOWN), rng.choice(["1", "x", ""])
        elif roll < 0.14:
            f = rng.choice(flags)
            name, value = _mutate(rng, f.env), "1"
        elif roll < 0.22:
            name = rng.choice(sorted(_SECTIONS))
            value = rng.choice(_SECTIONS[name])
            where = rng.choice(["env", "file"])
        else:
            f = rng.choice(flags)
            value = _value(rng, f.env, f.default, f.secret, hostile)
            if f.secret and rng.random() < 0.3:
                # <VAR>_FILE: an existing file, a missing one, a directory, an empty name, or both set
                target = rng.choice(["<TMP>/sec", "<TMP>/sec", "<TMP>/missing", "<TMP>", ""])
                (env_file if where == "file" and env_file is not None else env)[f.env + "_FILE"] = target
                if rng.random() < 0.3:
                    env[f.env] = value
                continue
            if where == "flag":
                argv.append(f"{f.flag}={value}")
                continue
            name = f.env
        if rng.random() < 0.05:
            name = name.lower()
        if where == "file" and env_file is not None:
            env_file[name] = value
        else:
            env[name] = value
    if rng.random() < 0.1:
        env["COLLECTOR_LOGS__PATHS"] = "<TMP>/app.log"
        argv.append("--logs-paths=<TMP>/flag.log")
    secret = rng.choice(["whsec_fromfile", "sk_test_file", "plain-secret\n", "", "a,b"])
    return {"env": env, "env_file": env_file, "flags": argv, "secret": secret}


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for k in list(os.environ):
            if k.upper().startswith("COLLECTOR_") or k.startswith("WS_TOKEN"):
                del os.environ[k]
        os.environ.update(env)
        os.environ["WS_TOKEN_SET"] = "ws-env-token"
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _flat(data: Any, path: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        return {
            k: v for key, sub in data.items() for k, v in _flat(sub, f"{path}.{key}" if path else key).items()
        }
    return {path: data}


def _changed(dump: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The leaves of `dump` that differ from the defaults' (the golden file stays small and readable)."""
    flat, base = _flat(dump), _flat(defaults)
    assert set(base) <= set(flat), sorted(set(base) - set(flat))
    return {k: v for k, v in flat.items() if base.get(k, ()) != v}


_DEFAULTS: list[dict[str, Any]] = []


def _defaults() -> dict[str, Any]:
    from collector.settings import load_settings, masked_dump

    if not _DEFAULTS:
        with _environment({}):
            _DEFAULTS.append(json.loads(json.dumps(masked_dump(load_settings(None)), default=str)))
    return _DEFAULTS[0]


_PARSER: list[argparse.ArgumentParser] = []


def _run_parser() -> argparse.ArgumentParser:
    """`collector run`'s parser, built once (it keeps no state between parses: defaults are SUPPRESS)."""
    from collector.cli import _parser

    if not _PARSER:
        _PARSER.append(_parser("run"))
    return _PARSER[0]


def _quote(value: str) -> str:
    return "'" + value + "'" if "'" not in value and "\n" not in value else json.dumps(value)


def outcome(seed: int) -> dict[str, Any]:
    """What the loader makes of `seed`'s configuration, as JSON data with the temporary directory as `<TMP>`."""
    from collector.settings import ConfigError, load_settings, masked_dump, typo_warnings
    from collector.settings.flags import given_overrides

    c = case(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def fill(text: str) -> str:
            return text.replace("<TMP>", tmp)

        (root / "sec").write_text(c["secret"])
        (root / "tok").write_text("file-token\n")
        (root / "web.yml").write_text("basic_auth_users: {}\n")
        (root / "bad.yml").write_text("tls_server_config: [\n")
        (root / "rules.yaml").write_text(
            "rules:\n  - metric: hits_total\n    type: counter\n    match: {message: hit}\n"
        )
        env_file = None
        if c["env_file"] is not None:
            env_file = root / "c.env"
            lines = [f"{k}={_quote(fill(v))}" for k, v in c["env_file"].items()]
            env_file.write_text("\n".join(lines) + "\n")
        env = {k: fill(v) for k, v in c["env"].items()}
        with _environment(env), contextlib.redirect_stderr(io.StringIO()):
            args = _run_parser().parse_args(["run", *(fill(a) for a in c["flags"])])
            try:
                settings = load_settings(env_file, overrides=given_overrides(args))
            except ConfigError as exc:
                result: dict[str, Any] = {"error": exc.lines}
            else:
                changed = _changed(masked_dump(settings), _defaults())
                result = {"ok": changed, "warnings": typo_warnings(env_file)}
    return json.loads(json.dumps(result, default=str).replace(tmp, "<TMP>"))


def help_text() -> str:
    """`collector run --help` as a 100-column terminal shows it."""
    from collector.cli import _parser

    out = io.StringIO()
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            _parser("run").parse_args(["run", "--help"])
    finally:
        del os.environ["COLUMNS"]
    return out.getvalue()


def main(argv: list[str]) -> int:
    results = {"help": help_text(), "outcomes": {str(s): outcome(s) for s in SEEDS}}
    if "--write" in argv:
        GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        return 0
    golden = json.loads(GOLDEN.read_text())
    bad = [s for s, v in results["outcomes"].items() if golden["outcomes"].get(s) != v]
    for s in bad:
        print(
            f"seed {s}: {case(int(s))}\n  golden: {golden['outcomes'].get(s)}\n  now:    {results['outcomes'][s]}"
        )
    print(
        f"{len(SEEDS) - len(bad)}/{len(SEEDS)} seeds agree; help text {'agrees' if golden['help'] == results['help'] else 'DIFFERS'}"
    )
    return 1 if bad or golden["help"] != results["help"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
