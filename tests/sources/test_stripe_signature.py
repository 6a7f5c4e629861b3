"""The signature check agrees with the stripe library's `verify_header` on random and hostile headers."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import time

import pytest
import stripe

from collector.sources.stripe.signature import SigningKeys, verify

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

_REASONS = {
    "Timestamp outside the tolerance zone": "signature_expired",
    "Unable to extract timestamp": "signature_malformed",
    "No signatures found with expected scheme": "signature_no_v1",
    "No Stripe-Signature header": "signature_missing",
}
_RANK = [
    "signature_missing",
    "signature_malformed",
    "signature_no_v1",
    "signature_mismatch",
    "signature_expired",
]


def _library(payload: bytes, header: str, secrets: list[str], tolerance: int) -> str | None:
    """What the stripe library says, reduced to our reasons (the most informative over secrets)."""
    best = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload.decode(), header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            msg = exc.user_message or str(exc)
            reason = next((r for p, r in _REASONS.items() if msg.startswith(p)), "signature_mismatch")
            if best is None or _RANK.index(reason) > _RANK.index(best):
                best = reason
            continue
        return None
    return best or "signature_mismatch"


def _sig(secret: str, t: int | str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("seed", range(40))
def test_random_headers_get_the_libraries_verdict(seed: int) -> None:
    rnd = random.Random(seed)
    now = int(time.time())
    secrets = ["whsec_a", "whsec_b", " ", "whsec_c"]
    for _ in range(50):
        body = rnd.choice([b'{"id":"evt_1"}', b"{}", '{"n":"caf\u00e9"}'.encode()])
        mine = rnd.sample(secrets, rnd.randint(1, 3))
        t: int | str = rnd.choice([now, now - 10, now - 400, now + 50, "x", "", " 12", "+5"])
        parts = []
        if rnd.random() < 0.9:
            parts.append(f"t={t}")
        for _ in range(rnd.randint(0, 3)):
            secret = rnd.choice(secrets)
            kind = rnd.random()
            ts = t if isinstance(t, int) else now
            if kind < 0.5:
                parts.append(f"v1={_sig(secret, ts, body)}")
            elif kind < 0.7:
                parts.append(f"v0={_sig(secret, ts, body)}")
            elif kind < 0.8:
                parts.append("v1")
            elif kind < 0.9:
                parts.append("v1=deadbeef")
            else:
                parts.append("garbage")
        rnd.shuffle(parts)
        header = ",".join(parts)
        tolerance = rnd.choice([300, 0])
        if not header:
            assert verify(body, header, mine, tolerance) == "signature_missing"
            continue
        assert verify(body, header, mine, tolerance) == _library(body, header, mine, tolerance), (
            header,
            mine,
        )


def test_a_non_ascii_header_is_malformed_not_an_error() -> None:
    # Stripe's header is ASCII; the library's compare would raise TypeError on a non-ASCII candidate.
    now = int(time.time())
    assert verify(b"{}", f"t={now},v1=\u00e9", ["whsec_a"], 300) == "signature_malformed"


def test_invalid_utf8_bodies_are_refused_by_name() -> None:
    assert verify(b"\xff", "t=1,v1=00", ["whsec_a"], 300) == "body_not_utf8"


# -- hostile headers: the shapes the one-regex fast path reads, and every near miss of it ---------------
#
# The fast path reads `t=<digits>,v1=<signature>` itself and leaves the rest to the library's parsing;
# this campaign builds headers around that shape (and just outside it) and checks every verdict, with
# the secrets as a list and as `SigningKeys`, against the library under a frozen clock.

_NOW = 1_700_000_000.25  # fractional: the tolerance compares an integer timestamp with a float clock
_TOLERANCE = 300
_SECRETS = [
    "whsec_a",
    "whsec_b",
    "",  # empty and blank: the library refuses them before reading the header
    " \t",
    "whsec_caf\u00e9",  # non-ASCII: its UTF-8 bytes are the key
    "whsec_" + "k" * 58,  # exactly one SHA-256 block (64 bytes)
    "whsec_" + "k" * 59,  # one byte over: HMAC hashes the key first
    "whsec_" + "\u00e9" * 200,
    "whsec_a\0",  # HMAC pads keys with zeros: the same key as "whsec_a", for the library too
]
_BODIES = [b'{"id":"evt_1"}', b"{}", b"", '{"n":"caf\u00e9"}'.encode(), b"\xff{}", b"x" * 5000]
# The library's `%d` of int(stamp): what it signs for a stamp int() accepts.
_INT = re.compile(r"\s*[+-]?[0-9_]+\s*")
# The fast path's shape, as this test sees it (to make sure both paths get exercised).
_FAST = re.compile(r"t=[0-9]{1,19},v1=[0-9A-Za-z]+")


def _stamps(now: int) -> list[str]:
    return [
        str(now),
        str(now - _TOLERANCE),  # a quarter second too old: the clock is _NOW, not int(_NOW)
        str(now - _TOLERANCE + 1),  # the oldest accepted
        str(now - _TOLERANCE - 1),
        str(now + 10_000),
        "0" + str(now),  # leading zero: the library signs int()'s `%d`, without it
        "000",
        "0",
        "+" + str(now),
        "-" + str(now),
        " " + str(now),
        str(now) + " ",
        "\t" + str(now),
        "1_700_000_000",
        str(now)[:4] + "_" + str(now)[4:],
        "\u0661\u0662\u0663",  # Arabic-Indic digits: int() reads 123; not ASCII
        "\uff11\uff12",  # fullwidth digits, int() reads them too
        "9" * 19,
        "9" * 20,
        "1" * 5000,  # more digits than int() converts (4,300): unreadable
        "",
        "x",
        "1e9",
        "0x10",
        str(now) + "=5",
    ]


def _signature(rnd: random.Random, secrets: list[str], t: str, body: bytes) -> str:
    secret = rnd.choice(secrets)
    if _INT.fullmatch(t) and len(t) < 4000:
        # what the library signs (its `%d` of int(t)), or the text as sent
        signed = str(int(t)) if rnd.random() < 0.7 else t
    else:
        signed = str(int(_NOW))
    good = hmac.new(secret.encode(), signed.encode() + b"." + body, hashlib.sha256)
    hexdigest = good.hexdigest()
    if rnd.random() < 0.5:
        return hexdigest
    return rnd.choice(
        [
            hexdigest.upper(),
            hexdigest[:-1],
            hexdigest + "0",
            hexdigest + " ",
            " " + hexdigest,
            hexdigest + "=",
            hexdigest[:32] + "=" + hexdigest[32:],
            "=" + hexdigest,
            "",
            "deadbeef",
            "\u00e9" + hexdigest,
            good.digest().hex(":"),
        ]
    )


def _hostile_header(rnd: random.Random, secrets: list[str], body: bytes) -> str:
    stamps = _stamps(int(_NOW))
    t = stamps[0] if rnd.random() < 0.4 else rnd.choice(stamps)
    if rnd.random() < 0.5:  # the common shape, or nearly it
        return f"t={t},v1={_signature(rnd, secrets, t, body)}"
    parts = []
    for _ in range(rnd.choice([0, 1, 1, 1, 2, 5])):
        parts.append(rnd.choice(["t=", "t=", " t=", "t =", "T=", "t=="]) + rnd.choice([t, *stamps]))
    for _ in range(rnd.choice([0, 1, 1, 2, 3, 30])):
        scheme = rnd.choice(["v1=", "v1=", "v1=", "v0=", " v1=", "v1 =", "V1=", "v1==", "v1"])
        parts.append(scheme + _signature(rnd, secrets, t, body))
    if rnd.random() < 0.3:
        parts.append(rnd.choice(["", " ", "garbage", "=", ",", "x=y=z", "\u00e9=1"]))
    if rnd.random() < 0.7:
        rnd.shuffle(parts)
    return rnd.choice([",", ",", ", ", " ,"]).join(parts)


def _expected(payload: bytes, header: str, secrets: list[str], tolerance: int) -> str | None:
    """The library's verdict, with the three answers `verify` gives before asking it (by design)."""
    if not header:
        return "signature_missing"
    if not header.isascii():
        return "signature_malformed"  # see test_a_non_ascii_header_is_malformed_not_an_error
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return "body_not_utf8"  # the library raises UnicodeDecodeError
    return _library(payload, header, secrets, tolerance)


@pytest.mark.parametrize("seed", range(30))
def test_hostile_headers_get_the_libraries_verdict(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: _NOW)  # the library reads time.time()
    rnd = random.Random(seed)
    fast = verdicts = 0
    for _ in range(200):
        body = rnd.choice(_BODIES)
        secrets = rnd.sample(_SECRETS, rnd.choice([1, 1, 2, 3, 4]))
        header = _hostile_header(rnd, secrets, body)
        tolerance = rnd.choice([_TOLERANCE, _TOLERANCE, 0])
        want = _expected(body, header, secrets, tolerance)
        keys = SigningKeys(secrets)
        assert verify(body, header, secrets, tolerance, lambda: _NOW) == want, (header, secrets, tolerance)
        assert verify(body, header, keys, tolerance, lambda: _NOW) == want, (header, secrets, tolerance)
        fast += bool(_FAST.fullmatch(header))
        verdicts += want is None
    # Both paths exercised, and enough headers that verify: the verdicts are not all one failure.
    assert fast >= 20 and verdicts >= 10, (fast, verdicts)


def test_the_tolerance_edge_is_the_libraries() -> None:
    body = b'{"id":"evt_1"}'
    clock = lambda: _NOW  # noqa: E731
    oldest = int(_NOW) - _TOLERANCE + 1  # _NOW - 300 itself is a quarter second too old
    assert verify(body, f"t={oldest},v1={_sig('whsec_a', oldest, body)}", ["whsec_a"], 300, clock) is None
    late = f"t={oldest - 1},v1={_sig('whsec_a', oldest - 1, body)}"
    assert verify(body, late, ["whsec_a"], 300, clock) == "signature_expired"
    assert verify(body, late, ["whsec_a"], 0, clock) is None  # 0: no limit


def test_a_leading_zero_timestamp_is_signed_as_the_library_reads_it() -> None:
    body, now = b"{}", int(time.time())
    assert verify(body, f"t=0{now},v1={_sig('whsec_a', now, body)}", ["whsec_a"], 300) is None
    assert verify(body, f"t=0{now},v1={_sig('whsec_a', f'0{now}', body)}", ["whsec_a"], 300) == (
        "signature_mismatch"
    )


def test_more_timestamp_digits_than_int_reads_is_malformed() -> None:
    assert verify(b"{}", "t=" + "1" * 5000 + ",v1=" + "0" * 64, ["whsec_a"], 300) == "signature_malformed"


def test_a_secret_utf8_cannot_encode_raises_where_the_library_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: _NOW)
    body, bad = b"{}", "whsec_\udc80"  # a lone surrogate, as os.environ gives for a non-UTF-8 byte
    good = f"t={int(_NOW)},v1={_sig('whsec_a', int(_NOW), body)}"
    keys = SigningKeys([bad])  # made at start-up: it must not raise before a request reaches the HMAC
    clock = lambda: _NOW  # noqa: E731
    with pytest.raises(UnicodeEncodeError):
        stripe.WebhookSignature.verify_header(body.decode(), good, bad, 300)
    for secrets in ([bad], keys):
        with pytest.raises(UnicodeEncodeError):
            verify(body, good, secrets, 300, clock)
        assert verify(body, "t=x,v1=00", secrets, 300, clock) == "signature_malformed"  # never reached
        assert verify(body, good, ["whsec_a", *secrets], 300, clock) is None  # an earlier one verified


def test_signing_keys_are_the_secrets_and_never_show_them() -> None:
    keys = SigningKeys(iter(["whsec_a", "whsec_b"]))
    assert list(keys) == ["whsec_a", "whsec_b"] and len(keys) == 2 and keys[1] == "whsec_b"
    assert list(keys[:1]) == ["whsec_a"] and "whsec_b" in keys and not SigningKeys([])
    assert "whsec" not in repr(keys) and repr(keys) == "SigningKeys(<2 secrets>)"
