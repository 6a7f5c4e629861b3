"""GitHub test support: fixture payloads, signing as GitHub signs, posting webhooks and CI reports."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import Running

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "github"
SECRET = "It's a Secret to Everybody"
REPO = "Codertocat/Hello-World"
H = 3600.0


def fixture(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_text())


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_event(
    run: Running,
    event: str,
    payload: dict[str, Any] | bytes,
    delivery: str | None = None,
    signature: str | bool | None = True,
) -> tuple[int, dict[str, Any]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "User-Agent": "GitHub-Hookshot/test",
    }
    if signature is True:
        headers["X-Hub-Signature-256"] = sign(body)
    elif isinstance(signature, str):
        headers["X-Hub-Signature-256"] = signature
    async with (
        aiohttp.ClientSession() as session,
        session.post(run.url + "/webhooks/github", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def status_payload(dep_id: int, sha: str, state: str, at: float, env: str = "production") -> dict[str, Any]:
    p = fixture("deployment_status/payload.json")
    p["deployment"].update(id=dep_id, sha=sha, environment=env, created_at=iso(at - 300))
    p["deployment_status"].update(state=state, environment=env, created_at=iso(at), updated_at=iso(at))
    return p


def issue(number: int, opened: float, closed: float | None, labels: list[str], action: str) -> dict[str, Any]:
    return {
        "action": action,
        "issue": {
            "number": number,
            "state": "closed" if closed else "open",
            "created_at": iso(opened),
            "closed_at": iso(closed) if closed else None,
            "labels": [{"name": n} for n in labels],
        },
        "repository": {"full_name": REPO},
    }


# -- POST /deployments ---------------------------------------------------------------------------------
async def post_ci(run: Running, body: Any, token: str | None = "ci-token") -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(run.url + "/deployments", data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json()
