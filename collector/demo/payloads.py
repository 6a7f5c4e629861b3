"""Synthetic traffic as pure data: winston log lines, signed Stripe events and signed GitHub events (no I/O)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import time
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "GitHubScript",
    "StripeScript",
    "github_signature",
    "log_lines",
    "stripe_signature",
    "template",
]

# Routes the original Express app serves (bench/genlogs.py), with ids already templated.
ROUTES = [
    "/",
    "/health",
    "/api/videos/:id",
    "/api/markdown/:slug",
    "/auth/login",
    "/api/profile",
    "/api/rooms/:id",
]
# Mostly healthy traffic with a few 4xx and 5xx, like genlogs.py.
STATUS = [200] * 85 + [201] * 3 + [304] * 4 + [401] * 2 + [404] * 3 + [500] * 2 + [503]


@cache
def template(kind: str, name: str) -> dict[str, Any]:
    """A webhook payload template shipped in `collector/demo/data/<kind>/<name>.json`."""
    text = resources.files("collector.demo").joinpath("data", kind, f"{name}.json").read_text("utf-8")
    payload: dict[str, Any] = json.loads(text)  # our own shipped files: always a JSON object
    return payload


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def log_lines(rnd: random.Random, now: float, n: int) -> list[str]:
    """`n` winston-style JSON log events (field names of bench/genlogs.py), some of them two lines.

    The mix covers every catalog metric of the `winston` and `app-events` presets: HTTP requests (with
    a `request_start` line first, so the in-flight gauge moves), auth, sessions, registrations, security
    events, rate limiting, WebSocket activity, content and video streams.
    """
    ts = _iso(now)
    out: list[dict[str, Any]] = []
    for i in range(n):
        r = rnd.random()
        base = {"level": "info", "timestamp": ts}
        if r < 0.70:
            route, method = rnd.choice(ROUTES), rnd.choice(["GET"] * 8 + ["POST"] * 2)
            status = rnd.choice(STATUS)
            out.append({**base, "message": "request_start", "method": method, "route": route})
            out.append(
                {
                    **base,
                    "level": "error" if status >= 500 else "info",
                    "message": "http_request",
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(rnd.expovariate(1 / 40), 2),
                    "content_length": rnd.randrange(200, 200_000),
                    "request_id": f"req-{int(now)}-{i}",
                }
            )
        elif r < 0.76:
            outcome = rnd.choice(["success"] * 8 + ["failed"] * 2)
            out.append(
                {
                    **base,
                    "message": "auth_attempt",
                    "method": rnd.choice(["login", "jwt"]),
                    "outcome": outcome,
                }
            )
            if outcome == "success":
                out.append({**base, "message": rnd.choice(["session_created"] * 3 + ["session_destroyed"])})
        elif r < 0.78:
            out.append(
                {**base, "message": "user_registered", "source": rnd.choice(["direct", "google", "github"])}
            )
        elif r < 0.80:
            out.append(
                {
                    **base,
                    "level": "warn",
                    "message": "security_event",
                    "event_type": rnd.choice(
                        ["directory_traversal", "sql_injection", "webhook_verification_failed"]
                    ),
                    "severity": rnd.choice(["critical", "high", "medium"]),
                }
            )
        elif r < 0.82:
            out.append({**base, "level": "warn", "message": "rate_limit_hit", "route": rnd.choice(ROUTES)})
        elif r < 0.83:
            out.append(
                {
                    **base,
                    "level": "warn",
                    "message": "suspicious_activity",
                    "activity_type": "credential_stuffing",
                }
            )
        elif r < 0.93:
            kind = rnd.choice(["ws_connect", "ws_message", "ws_message", "ws_disconnect"])
            line: dict[str, Any] = {**base, "message": kind}
            if kind == "ws_message":
                line |= {
                    "direction": rnd.choice(["inbound", "outbound"]),
                    "message_type": rnd.choice(["auth", "ping", "chat", "avatar_action"]),
                }
            if kind == "ws_disconnect":
                line["duration_ms"] = round(rnd.expovariate(1 / 60000), 1)
            out.append(line)
        else:
            ctype = rnd.choice(["video", "markdown", "markdown_raw"])
            quality = rnd.choice(["hd", "sd"])
            out.append(
                {
                    **base,
                    "message": "content_access",
                    "content_type": ctype,
                    "access_level": rnd.choice(["public", "premium"]),
                    "quality": quality,
                }
            )
            if ctype == "video":
                out.append(
                    {
                        **base,
                        "message": "video_stream_end",
                        "duration_ms": round(rnd.expovariate(1 / 300000), 1),
                    }
                )
    return [json.dumps(d, separators=(",", ":")) for d in out]


def stripe_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `Stripe-Signature` header Stripe sends: `t=<ts>,v1=HMAC_SHA256(secret, "<ts>.<body>")`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def github_signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` header GitHub sends: `sha256=HMAC_SHA256(secret, body)`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class StripeScript:
    """A cycle of realistic Stripe events with unique ids (so de-duplication never hides them).

    Args:
        run_id: distinguishes this demo run's ids from an earlier run's (the collector keeps seen ids).
    """

    #: One cycle: payments (most succeed), subscriptions coming and going, a refund, a dispute.
    CYCLE = [
        "payment_intent.succeeded",
        "customer.subscription.created",
        "payment_intent.succeeded",
        "checkout.session.completed",
        "payment_intent.payment_failed",
        "customer.subscription.created",
        "invoice.payment_failed",
        "charge.refunded",
        "invoice.paid",
        "charge.dispute.created",
        "customer.subscription.deleted",
        "payment_intent.succeeded",
    ]

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seq = 0
        self.subs_created = 0
        self.subs_deleted = 0

    def next_event(self, now: float) -> dict[str, Any]:
        """The next event of the cycle, its ids made unique and its times set to `now`."""
        name = self.CYCLE[self.seq % len(self.CYCLE)]
        self.seq += 1
        ev = copy.deepcopy(template("stripe", name))
        uid = f"demo{self.run_id}x{self.seq}"
        ev["id"] = f"evt_{uid}"
        ev["created"] = int(now)
        obj = ev["data"]["object"]
        prefix = str(obj.get("id", "obj_")).split("_", 1)[0]
        obj["id"] = f"{prefix}_{uid}"
        obj["created"] = int(now)
        if name == "customer.subscription.created":
            self.subs_created += 1
            obj["id"] = f"sub_demo{self.run_id}x{self.subs_created}"
            obj["status"] = "active"
        elif name == "customer.subscription.deleted":
            # cancel the oldest subscription still active, so the active count moves both ways
            self.subs_deleted += 1
            obj["id"] = f"sub_demo{self.run_id}x{self.subs_deleted}"
            obj["status"] = "canceled"
        elif name == "payment_intent.succeeded":
            obj["amount"] = obj["amount_received"] = random.Random(self.seq).choice([900, 1500, 2000, 4900])
        return ev


class GitHubScript:
    """Pushes, deployments and deployment statuses of one repository's production environment.

    The last deployment of every `fail_every` fails and the next one recovers it: a 10% change failure
    rate, inside the DORA "elite" band and below HighChangeFailureRate's 15%, so the healthy demo
    fires no alert, and (a release every 4 s) all four DORA keys move within the first minute.
    """

    def __init__(self, run_id: str, repository: str = "demo/shop", fail_every: int = 10) -> None:
        self.run_id = run_id
        self.repository = repository
        self.fail_every = fail_every
        self.n = 0
        self.head = "0" * 40

    def _repo(self, ev: dict[str, Any]) -> None:
        owner, name = self.repository.split("/")
        ev["repository"]["full_name"] = self.repository
        ev["repository"]["name"] = name
        ev["repository"]["owner"]["login"] = owner

    def next_release(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """One release: `(event name, payload)` for a push of 2 commits, its deployment and its status."""
        self.n += 1
        sha = hashlib.sha1(f"{self.run_id}-{self.n}".encode()).hexdigest()
        push = copy.deepcopy(template("github", "push"))
        self._repo(push)
        commit = push["commits"][0]
        # commits written 40 and 15 minutes before the deploy: lead times the histogram can show
        first = {**commit, "id": hashlib.sha1(f"{sha}-a".encode()).hexdigest(), "timestamp": _iso(now - 2400)}
        push["commits"] = [first, {**commit, "id": sha, "timestamp": _iso(now - 900)}]
        push["head_commit"] = push["commits"][-1]
        push |= {"before": self.head, "after": sha, "created": False, "deleted": False, "forced": False}
        self.head = sha
        dep_id = int(hashlib.sha1(f"{self.run_id}-dep-{self.n}".encode()).hexdigest()[:12], 16)
        deployment = copy.deepcopy(template("github", "deployment"))
        self._repo(deployment)
        deployment["deployment"] |= {
            "id": dep_id,
            "sha": sha,
            "environment": "production",
            "created_at": _iso(now - 60),
        }
        status = copy.deepcopy(template("github", "deployment_status"))
        self._repo(status)
        status["deployment"] |= deployment["deployment"]
        failed = self.n % self.fail_every == 0
        status["deployment_status"] |= {
            "state": "failure" if failed else "success",
            "environment": "production",
            "created_at": _iso(now),
            "updated_at": _iso(now),
        }
        return [("push", push), ("deployment", deployment), ("deployment_status", status)]
