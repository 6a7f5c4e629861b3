"""Settings: defaults, parsing, one readable error per bad value, secrets from <VAR>_FILE."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.settings import (
    ConfigError,
    SecretList,
    Settings,
    load_settings,
    masked_dump,
    unknown_env_vars,
)
from collector.settings.model import Secret, setting

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


def _errors(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    return info.value.lines


def test_defaults() -> None:
    s = load_settings(env_file=None)
    assert (s.listen_host, s.listen_port) == ("0.0.0.0", 9464)
    assert s.effective_state_path == Path("data/state.db")
    assert s.log_level == "INFO"
    assert not s.process.is_enabled()


def test_nested_env_vars_and_auto_enable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_PROCESS__PID", "42")
    monkeypatch.setenv("COLLECTOR_LOG_LEVEL", "debug")
    monkeypatch.setenv("COLLECTOR_LISTEN", "[::1]:9000")
    s = load_settings(env_file=None)
    assert s.process.pid == 42 and s.process.is_enabled()
    assert s.log_level == "DEBUG"
    assert (s.listen_host, s.listen_port) == ("::1", 9000)


def test_a_source_can_be_switched_off_even_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_PROCESS__PID", "42")
    monkeypatch.setenv("COLLECTOR_PROCESS__ENABLED", "false")
    assert not load_settings(env_file=None).process.is_enabled()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"COLLECTOR_LISTEN": "9464"}, "invalid setting COLLECTOR_LISTEN='9464': expected host:port"),
        ({"COLLECTOR_LISTEN": "h:99999"}, "invalid setting COLLECTOR_LISTEN='h:99999': expected host:port"),
        (
            {"COLLECTOR_LOG_LEVEL": "loud"},
            "invalid setting COLLECTOR_LOG_LEVEL='LOUD': Input should be 'DEBUG'",
        ),
        (
            {"COLLECTOR_PROCESS__PID": "abc"},
            "invalid setting COLLECTOR_PROCESS__PID='abc': Input should be a valid integer",
        ),
        (
            {"COLLECTOR_PROCESS__PID": "-3"},
            "invalid setting COLLECTOR_PROCESS__PID='-3': Input should be greater than 0",
        ),
        (
            {"COLLECTOR_PROCESS__MATCH": "(node"},
            "invalid setting COLLECTOR_PROCESS__MATCH='(node': not a valid regular expression",
        ),
        (
            {"COLLECTOR_PROCESS__INTERVAL": "0"},
            "invalid setting COLLECTOR_PROCESS__INTERVAL='0': Input should be greater than 0",
        ),
        ({"COLLECTOR_SHUTDOWN_TIMEOUT": "x"}, "invalid setting COLLECTOR_SHUTDOWN_TIMEOUT='x'"),
        (
            {"COLLECTOR_PROCESS__ENABLED": "true"},
            "invalid settings: COLLECTOR_PROCESS__ENABLED=true but COLLECTOR_PROCESS__PID or "
            "COLLECTOR_PROCESS__PID_FILE or COLLECTOR_PROCESS__MATCH is not set",
        ),
    ],
)
def test_each_bad_value_gives_one_line_naming_the_variable(monkeypatch, env, expected) -> None:
    lines = _errors(monkeypatch, **env)
    assert len(lines) == 1
    assert lines[0].startswith(expected), lines[0]


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _errors(monkeypatch, COLLECTOR_LISTEN="x", COLLECTOR_PROCESS__PID="y")
    assert [line.split("=")[0] for line in lines] == [
        "invalid setting COLLECTOR_LISTEN",
        "invalid setting COLLECTOR_PROCESS__PID",
    ]


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "c.env"
    env_file.write_text("COLLECTOR_LISTEN=127.0.0.1:1000\nCOLLECTOR_PROCESS__PID=7\n")
    monkeypatch.setenv("COLLECTOR_PROCESS__PID", "8")
    s = load_settings(env_file=env_file)
    assert s.listen == "127.0.0.1:1000"
    assert s.process.pid == 8


class _WithSecrets(Settings):
    api_token: Secret | None = setting(default=None)
    tokens: SecretList = setting(default_factory=list)


def test_secret_is_read_from_var_file_and_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")  # trailing newline as `echo` or a k8s secret would leave it
    monkeypatch.setenv("COLLECTOR_API_TOKEN_FILE", str(secret))
    s = load_settings(env_file=None, cls=_WithSecrets)
    assert s.api_token is not None and s.api_token.get_secret_value() == "s3cr3t"
    dumped = masked_dump(s)
    assert dumped["api_token"] == "**********"
    assert "s3cr3t" not in repr(dumped)


def test_secret_file_that_cannot_be_read_names_the_file_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR_API_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, cls=_WithSecrets)
    assert info.value.lines[0].startswith(
        f"invalid setting COLLECTOR_API_TOKEN_FILE='{tmp_path / 'missing'}'"
    )


def test_secret_and_its_file_together_are_ambiguous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("a")
    monkeypatch.setenv("COLLECTOR_API_TOKEN", "b")
    monkeypatch.setenv("COLLECTOR_API_TOKEN_FILE", str(secret))
    with pytest.raises(ConfigError, match="both COLLECTOR_API_TOKEN and COLLECTOR_API_TOKEN_FILE"):
        load_settings(env_file=None, cls=_WithSecrets)


def test_unknown_collector_variables_are_reported() -> None:
    env = {"COLLECTOR_PROCES__PID": "1", "COLLECTOR_LISTEN": "x", "HOME": "/"}
    assert unknown_env_vars(env) == ["COLLECTOR_PROCES__PID"]


def test_secret_list_reads_comma_separated_values_from_its_file(tmp_path: Path, monkeypatch) -> None:
    secret = tmp_path / "tokens"
    secret.write_text("whsec_old,whsec_new\n")
    monkeypatch.setenv("COLLECTOR_TOKENS_FILE", str(secret))
    s = load_settings(env_file=None, cls=_WithSecrets)
    assert [t.get_secret_value() for t in s.tokens] == ["whsec_old", "whsec_new"]
    assert masked_dump(s)["tokens"] == ["**********", "**********"]


def test_list_settings_accept_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_TOKENS", '["a,b", "c"]')
    assert [t.get_secret_value() for t in load_settings(env_file=None, cls=_WithSecrets).tokens] == [
        "a,b",
        "c",
    ]
    monkeypatch.setenv("COLLECTOR_TOKENS", "[broken")
    with pytest.raises(ConfigError, match=r"COLLECTOR_TOKENS='\*\*\*': not a valid JSON list"):
        load_settings(env_file=None, cls=_WithSecrets)


def test_precedence_is_flags_then_environment_then_secret_files_then_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "c.env"
    env_file.write_text(
        "COLLECTOR_LISTEN=127.0.0.1:1\nCOLLECTOR_PROCESS__PID=1\nCOLLECTOR_API_TOKEN=from-env-file\n"
        "COLLECTOR_LOG_LEVEL=error\n"
    )
    secret = tmp_path / "token"
    secret.write_text("from-secret-file")
    monkeypatch.setenv("COLLECTOR_API_TOKEN_FILE", str(secret))
    monkeypatch.setenv("collector_process__pid", "2")  # names are case-insensitive
    monkeypatch.setenv("COLLECTOR_LISTEN", "127.0.0.1:2")
    s = load_settings(env_file=env_file, cls=_WithSecrets, overrides={"listen": "127.0.0.1:3"})
    assert s.listen == "127.0.0.1:3"
    assert s.process.pid == 2
    assert s.api_token is not None and s.api_token.get_secret_value() == "from-secret-file"
    assert s.log_level == "ERROR"


def test_a_whole_section_as_json_merges_under_its_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_PROCESS", '{"pid": 5, "interval": 2}')
    monkeypatch.setenv("COLLECTOR_PROCESS__INTERVAL", "3")
    s = load_settings(env_file=None)
    assert (s.process.pid, s.process.interval) == (5, 3.0)


def test_a_section_that_is_not_json_names_the_field_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _errors(monkeypatch, COLLECTOR_PROCESS="pid=s3cr3t")
    assert lines == ['invalid settings: error parsing value for field "process"']


def test_the_variables_read_beside_the_settings_are_known() -> None:
    # COLLECTOR_LEAN_IMPORTS is read by collector/importpolicy.py, COLLECTOR_ENV_FILE by the loader:
    # setting either must not warn "not a known setting"
    env = {"COLLECTOR_LEAN_IMPORTS": "false", "COLLECTOR_ENV_FILE": "x.env", "COLLECTOR_LEAN_IMPORT": "false"}
    assert unknown_env_vars(env) == ["COLLECTOR_LEAN_IMPORT"]


def test_an_unknown_name_in_a_section_is_an_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _errors(monkeypatch, COLLECTOR_PROCESS__PIDD="1")
    assert lines == [
        "invalid setting COLLECTOR_PROCESS__PIDD: unknown setting; did you mean COLLECTOR_PROCESS__PID?"
    ]


def test_an_unknown_top_level_name_is_ignored_by_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_LISTEN_PORT", "1")  # typo_warnings reports it; loading does not fail
    assert load_settings(env_file=None).listen == "0.0.0.0:9464"


def test_building_settings_in_code_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_LISTEN", "127.0.0.1:7")
    assert Settings().listen == "0.0.0.0:9464"


def test_a_secret_never_shows_in_repr_str_or_a_dump() -> None:
    s = load_settings(env_file=None, cls=_WithSecrets, overrides={"api_token": "s3cr3t-tok"})
    assert s.api_token is not None and s.api_token.get_secret_value() == "s3cr3t-tok"
    for text in (repr(s), str(s), repr(s.api_token), str(s.api_token), repr(masked_dump(s))):
        assert "s3cr3t-tok" not in text
    assert str(Secret("")) == ""  # an empty secret dumps as empty (as pydantic's did): nothing to hide


def test_settings_built_in_code_are_validated_and_coerced() -> None:
    from collector.settings import GitHubSettings, HttpSettings, ProcessSettings
    from collector.settings.model import ValidationError

    gh = GitHubSettings(webhook_secret="s", api_url="https://ghe.example.com/api/v3/")
    assert isinstance(gh.webhook_secret, Secret) and gh.api_url == "https://ghe.example.com/api/v3"
    assert ProcessSettings(pid="42", match="node").pid == 42
    with pytest.raises(ValidationError) as info:
        HttpSettings(max_body_bytes=10, nope=1, header_timeout="x")
    assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [
        (("max_body_bytes",), "Input should be greater than or equal to 1024"),
        (("header_timeout",), "Input should be a valid number, unable to parse string as a number"),
        (("nope",), "Extra inputs are not permitted"),
    ]
    base = HttpSettings()
    copy = base.model_copy(update={"max_body_bytes": 4096})
    assert (copy.max_body_bytes, base.max_body_bytes, copy.header_timeout) == (4096, 5 * 1024 * 1024, 10.0)
    assert copy != base and base == HttpSettings() and copy.model_fields_set == set(HttpSettings.model_fields)


@pytest.mark.parametrize("order", ["value first", "section first"])
def test_a_variable_below_another_ones_value_is_an_error_in_either_order(
    monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    # found by the settings campaign (seed 3229): a TypeError traceback when the value came first
    names = ["COLLECTOR_LOGS__PATHS", "COLLECTOR_LOGS__PATHS__X"]
    for name in names if order == "value first" else reversed(names):
        monkeypatch.setenv(name, "1")
    assert _errors(monkeypatch) == [
        "invalid setting COLLECTOR_LOGS__PATHS__X: unknown setting (COLLECTOR_LOGS__PATHS is a value, not a section)"
    ]
