"""Stripe pure logic without servers: currency units, decoding, effects, MRR, ordering, signatures, settings."""

from __future__ import annotations

import json
import sqlite3
import time
from fractions import Fraction

import pytest

from collector.settings import ConfigError, load_settings
from collector.sources.stripe import state
from collector.sources.stripe.currency import currency_label, divisor, to_major
from collector.sources.stripe.events import (
    EventError,
    SubState,
    decode_event,
    effects,
    monthly_amount,
)
from collector.sources.stripe.signature import verify
from tests.sources.stripe_helpers import OLD_SECRET, SECRET, body_of, event, fixture, sign

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes


@pytest.mark.parametrize(
    ("currency", "amount", "major"),
    [
        ("usd", 1999, 19.99),
        ("jpy", 500, 500.0),
        ("krw", 10000, 10000.0),
        ("kwd", 12345, 12.345),
        ("bhd", 1000, 1.0),
        ("tnd", 5, 0.005),
        ("isk", 500, 5.0),  # Stripe: two-decimal for backwards compatibility
        ("ugx", 5000, 5000.0),  # Stripe: zero-decimal
        ("eur", 0, 0.0),
    ],
)
def test_minor_units_convert_to_major_units(currency: str, amount: int, major: float) -> None:
    assert to_major(amount, currency) == major


def test_currency_label_is_bounded() -> None:
    assert currency_label("USD") == "usd"
    assert currency_label("us dollars") == "other"
    assert currency_label("usd\n") == "other"  # `^...$` let a trailing newline through
    assert currency_label("\nusd") == "other"
    assert currency_label(None) == "other"
    assert divisor("other") == 100


def test_decoder_reads_pre_and_post_basil_invoices() -> None:
    old = decode_event(body_of(event("invoice.payment_failed", subscription="sub_1")))
    new = decode_event(body_of(fixture("invoice.created", "openapi-fixtures3-wrapped")))
    assert old.obj is not None and old.obj.subscription == "sub_1"
    assert new.obj is not None and new.obj.parent is not None
    assert new.obj.parent.subscription_details is not None
    assert new.obj.parent.subscription_details.subscription == "subscription"


def test_decoder_rejects_non_events() -> None:
    with pytest.raises(EventError) as exc:
        decode_event(b"{not json")
    assert exc.value.reason == "invalid_json"
    with pytest.raises(EventError) as exc:
        decode_event(
            json.dumps(
                {"id": "x", "object": "charge", "type": "t", "created": 1, "data": {"object": {}}}
            ).encode()
        )
    assert exc.value.reason == "invalid_event"


def test_payment_value_has_one_source_of_truth() -> None:
    pi = effects(decode_event(body_of(event("payment_intent.succeeded"))))
    assert pi.counters == [
        ("stripe_payments_total", ("usd",), 1),
        ("stripe_payment_value_total", ("usd",), 2000),
    ]
    for name in ("invoice.paid", "invoice.payment_succeeded", "checkout.session.completed"):
        eff = effects(decode_event(body_of(event(name))))
        assert eff.handled and not any(n.startswith("stripe_payment") for n, _l, _d in eff.counters)
    with_pi = event("charge.refunded", payment_intent="pi_1")
    with_pi["type"] = "charge.succeeded"
    assert effects(decode_event(body_of(with_pi))).counters == []
    legacy = event("charge.refunded", payment_intent=None)
    legacy["type"] = "charge.succeeded"
    assert ("stripe_payments_total", ("usd",), 1) in effects(decode_event(body_of(legacy))).counters


def test_decline_codes_are_bounded() -> None:
    ev = event("payment_intent.payment_failed")
    ev["data"]["object"]["last_payment_error"]["decline_code"] = "cus_12345_custom"
    assert effects(decode_event(body_of(ev))).counters == [
        ("stripe_payment_failures_total", ("usd", "other"), 1)
    ]
    ev["data"]["object"]["last_payment_error"] = None
    assert effects(decode_event(body_of(ev))).counters[0][1] == ("usd", "none")


def test_unknown_event_types_are_not_handled() -> None:
    ev = event("invoice.paid")
    ev["type"] = "radar.early_fraud_warning.created"
    assert not effects(decode_event(body_of(ev))).handled


def _sub(interval: str, count: int, amount: int, quantity: int, usage: str = "licensed") -> Fraction:
    ev = event("customer.subscription.created")
    item = ev["data"]["object"]["items"]["data"][0]
    item["quantity"] = quantity
    item["price"].update(
        unit_amount=amount, recurring={"interval": interval, "interval_count": count, "usage_type": usage}
    )
    obj = decode_event(body_of(ev)).obj
    assert obj is not None
    return monthly_amount(obj)[0]


def test_mrr_normalises_intervals_to_a_month() -> None:
    assert _sub("month", 1, 1500, 2) == 3000
    assert _sub("month", 3, 3000, 1) == 1000
    assert _sub("year", 1, 12000, 1) == 1000
    assert _sub("week", 1, 1200, 1) == 5200
    assert _sub("day", 1, 100, 1) == Fraction(36500, 12)
    assert _sub("month", 1, 1500, 2, usage="metered") == 0


def test_mrr_of_post_basil_subscription_reads_items() -> None:
    obj = decode_event(body_of(fixture("customer.subscription.updated", "openapi-fixtures3-wrapped"))).obj
    assert obj is not None
    assert monthly_amount(obj) == (Fraction(2000), "usd")


def test_subscription_ordering_by_created_and_terminal_status() -> None:
    active = SubState("s", "active", "usd", Fraction(1), 100)
    canceled_earlier = SubState("s", "canceled", "usd", Fraction(0), 50)
    assert SubState("s", "past_due", "usd", Fraction(1), 101).supersedes(active)
    assert not SubState("s", "past_due", "usd", Fraction(1), 99).supersedes(active)
    assert canceled_earlier.supersedes(active)  # canceled is final whatever its timestamp
    assert not SubState("s", "active", "usd", Fraction(1), 500).supersedes(canceled_earlier)


def _conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE kv (owner TEXT, key TEXT, value BLOB, PRIMARY KEY (owner, key))")
    state.create_tables(conn)
    return conn


def test_apply_event_is_exactly_once_and_refund_marks_work_without_previous_attributes() -> None:
    conn = _conn()
    ev = event("charge.refunded", id="ch_1", amount_refunded=300)
    del ev["data"]["previous_attributes"]
    e1 = decode_event(body_of(ev))
    first = state.apply_event(conn, e1.id, e1.type, e1.created, effects(e1), 1.0, cursor="evt_c")
    assert first.counters == [
        ("stripe_refund_value_total", ("usd",), 300),
        ("stripe_refunds_total", ("usd",), 1),
    ]
    assert state.apply_event(conn, e1.id, e1.type, e1.created, effects(e1), 2.0).duplicate
    ev2 = event("charge.refunded", id="ch_1", amount_refunded=1000)
    del ev2["data"]["previous_attributes"]
    e2 = decode_event(body_of(ev2))
    assert state.apply_event(conn, e2.id, e2.type, e2.created, effects(e2), 3.0).counters[0][2] == 700
    loaded = state.load(conn)
    assert ("stripe_refund_value_total", ("usd",), 1000) in loaded.counters
    assert state.read_kv(conn, "cursor") == "evt_c"
    assert state.prune(conn, events_before=2.5, charges_before=0) == 1


def test_signature_reasons() -> None:
    body = b'{"id": "evt_1"}'
    now = int(time.time())
    assert verify(body, sign(body, SECRET), [SECRET], 300) is None
    assert verify(body, sign(body, [OLD_SECRET, SECRET]), [SECRET], 300) is None
    assert verify(body, sign(body, OLD_SECRET), [SECRET, OLD_SECRET], 300) is None
    assert verify(body, sign(body, SECRET, t=now - 301), [SECRET], 300) == "signature_expired"
    assert verify(body, sign(body, "whsec_other"), [SECRET, OLD_SECRET], 300) == "signature_mismatch"
    assert verify(body + b" ", sign(body, SECRET), [SECRET], 300) == "signature_mismatch"
    assert verify(body, f"t={now}", [SECRET], 300) == "signature_no_v1"
    assert verify(body, "nonsense", [SECRET], 300) == "signature_malformed"
    assert verify(body, None, [SECRET], 300) == "signature_missing"
    assert verify(b"\xff", sign(b"\xff", SECRET), [SECRET], 300) == "body_not_utf8"


@pytest.mark.parametrize(
    ("var", "val", "message"),
    [
        ("COLLECTOR_STRIPE__WEBHOOK_SECRETS", "whsec_ok,sk_wrong", "start with whsec_"),
        ("COLLECTOR_STRIPE__API_KEY", "pk_live_publishable", "secret key"),
        ("COLLECTOR_STRIPE__API_BASE", "api.stripe.com", "http(s) URL"),
        ("COLLECTOR_STRIPE__TOLERANCE", "0", "greater than or equal to 1"),
        ("COLLECTOR_STRIPE__POLL_INTERVAL", "-1", "greater than or equal"),
        ("COLLECTOR_STRIPE__BACKFILL", "99999999", "less than or equal"),
        ("COLLECTOR_STRIPE__MAX_BODY_BYTES", "10", "greater than or equal"),
        (
            "COLLECTOR_STRIPE__ENABLED",
            "true",
            "COLLECTOR_STRIPE__WEBHOOK_SECRETS or COLLECTOR_STRIPE__API_KEY",
        ),
    ],
)
def test_each_rejected_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, val: str, message: str
) -> None:
    monkeypatch.setenv(var, val)
    with pytest.raises(ConfigError) as exc:
        load_settings(env_file=None)
    text = str(exc.value)
    assert message in text
    assert var in text or "COLLECTOR_STRIPE__ENABLED" in text
    assert "sk_wrong" not in text and "pk_live_publishable" not in text  # secrets never printed


def test_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "whsec"  # type: ignore[operator]
    path.write_text("whsec_a,whsec_b\n")
    monkeypatch.setenv("COLLECTOR_STRIPE__WEBHOOK_SECRETS_FILE", str(path))
    settings = load_settings(env_file=None)
    assert [s.get_secret_value() for s in settings.stripe.webhook_secrets] == ["whsec_a", "whsec_b"]
    assert settings.stripe.is_enabled()
