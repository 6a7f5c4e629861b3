"""Basic auth that cannot starve the server or name its users: a wrong password costs what an unknown user
costs whatever the stored hash's cost, bcrypt runs on its own bounded pool off the event loop, and a
flood of wrong passwords neither evicts nor delays a cached scraper."""

from __future__ import annotations

import asyncio
import statistics
import time

import bcrypt
import pytest

from collector.settings import ConfigError, load_settings
from collector.web.auth import BasicAuth

CHEAP = bcrypt.hashpw(b"cheap-pass", bcrypt.gensalt(4))
DEAR = bcrypt.hashpw(b"dear-pass", bcrypt.gensalt(8))


async def _median_failure(auth: BasicAuth, user: str, n: int = 7) -> float:
    times = []
    for i in range(n):
        began = time.perf_counter()
        assert await auth.check(user, f"wrong-{i}".encode()) is False
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def test_a_wrong_password_costs_the_same_as_an_unknown_user_whatever_the_hash_cost() -> None:
    auth = BasicAuth({"cheap": CHEAP, "dear": DEAR})
    assert auth.max_cost == 8
    unknown = await _median_failure(auth, "nobody")
    cheap = await _median_failure(auth, "cheap")
    dear = await _median_failure(auth, "dear")
    # Without padding a cost-4 failure takes 1/16 of a cost-8 one; padded, they are within noise.
    # (A ratio measured in one run, not a speed target: the machine may be loaded.)
    print(
        f"median failure: unknown {unknown * 1e3:.1f} ms, cost 4 {cheap * 1e3:.1f} ms, cost 8 {dear * 1e3:.1f} ms"
    )
    assert cheap >= 0.6 * unknown and unknown >= 0.6 * dear and dear >= 0.6 * unknown
    assert await auth.check("cheap", b"cheap-pass") is True
    assert await auth.check("dear", b"dear-pass") is True
    auth.close()


async def test_the_first_failure_of_a_cheap_hash_is_padded_before_anything_was_measured() -> None:
    auth = BasicAuth({"cheap": CHEAP, "dear": DEAR})
    began = time.perf_counter()
    assert await auth.check("cheap", b"wrong") is False
    took = time.perf_counter() - began
    began = time.perf_counter()
    assert bcrypt.checkpw(b"x", DEAR) is False
    cost8 = time.perf_counter() - began
    assert took >= 0.6 * cost8
    auth.close()


async def test_a_flood_of_wrong_passwords_is_bounded_and_never_delays_a_cached_scraper() -> None:
    results: list[str] = []
    auth = BasicAuth({"prometheus": DEAR}, concurrency=1, queue=4, on_result=results.append)
    assert await auth.check("prometheus", b"dear-pass") is True  # the scraper, verified before the flood
    flood = [asyncio.ensure_future(auth.check("prometheus", f"guess-{i}".encode())) for i in range(70)]
    await asyncio.sleep(0)
    lags = []
    for _ in range(10):
        began = time.perf_counter()
        assert await auth.check("prometheus", b"dear-pass") is True
        lags.append(time.perf_counter() - began)
        # The event loop keeps turning while bcrypt runs: bcrypt is in threads.
        began = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - began - 0.005)
    answers = await asyncio.gather(*flood)
    assert answers.count(None) == 70 - 5  # one running plus four waiting; the rest refused at once
    assert answers.count(False) == 5 and True not in answers
    assert results.count("busy") == 65 and results.count("cached") == 10
    assert max(lags) < 0.5, lags  # generous: a bcrypt at cost 8 on the loop would be ~20 ms each x 5
    # A reload's new object gets its threads; the old one lets its threads go.
    auth.close()


async def test_failures_are_cached_apart_so_random_guesses_cannot_evict_the_scraper() -> None:
    auth = BasicAuth({"prometheus": CHEAP}, cache_size=3)
    assert await auth.check("prometheus", b"cheap-pass") is True
    for i in range(10):
        assert await auth.check("prometheus", f"guess-{i}".encode()) is False
    assert len(auth._ok) == 1 and len(auth._bad) == 3
    assert auth.check_sync("prometheus", b"cheap-pass") is True
    auth.close()


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.quick
@pytest.mark.parametrize(
    ("var", "bad"),
    [
        ("COLLECTOR_HTTP__MAX_CONCURRENT_SCRAPES", "0"),
        ("COLLECTOR_HTTP__MAX_CONCURRENT_HEALTH", "-1"),
        ("COLLECTOR_HTTP__MAX_CONCURRENT_PROBES", "x"),
        ("COLLECTOR_HTTP__MAX_CONCURRENT_OTHER", "0"),
        ("COLLECTOR_HTTP__MAX_CLIENT_SHARE", "0"),
        ("COLLECTOR_HTTP__MAX_CLIENT_SHARE", "1.5"),
        ("COLLECTOR_HTTP__MIN_BODY_RATE", "-1"),
        ("COLLECTOR_HTTP__AUTH_CONCURRENCY", "0"),
        ("COLLECTOR_HTTP__AUTH_QUEUE", "-1"),
    ],
)
def test_each_http_budget_setting_rejects_nonsense_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, bad: str
) -> None:
    monkeypatch.setenv(var, bad)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert any(line.startswith(f"invalid setting {var}=") for line in info.value.lines), info.value.lines


@pytest.mark.quick
@pytest.mark.parametrize(
    "value",
    [
        '[{"url": "ws://h/", "headers": {"X-Key": "hdr-SECRET-1"}}',  # broken JSON
        '[{"url": "ws://h/", "interval": -1, "headers": {"X-Key": "hdr-SECRET-1"}}]',  # a bad field
        '{"url": "ws://h/", "headers": {"X-Key": "hdr-SECRET-1"}, "oops": 1}',
        "ws://h/a b,hdr-SECRET-1",
    ],
)
def test_a_malformed_target_list_is_named_but_never_echoed(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("COLLECTOR_WEBSOCKET__TARGETS", value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    text = "\n".join(info.value.lines)
    assert "COLLECTOR_WEBSOCKET__TARGETS" in text and "SECRET" not in text, text


@pytest.mark.quick
def test_url_passwords_are_masked_in_errors_and_in_check_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.settings import masked_dump

    monkeypatch.setenv("COLLECTOR_STRIPE__API_BASE", "ftp://u:pw-SECRET-2@stripe.test")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert "pw-SECRET-2" not in "\n".join(info.value.lines) and "u:***@" in "\n".join(info.value.lines)
    monkeypatch.setenv("COLLECTOR_STRIPE__API_BASE", "https://u:pw-SECRET-2@stripe.test")
    dump = str(masked_dump(load_settings(None)))
    assert "pw-SECRET-2" not in dump and "https://u:***@stripe.test" in dump
