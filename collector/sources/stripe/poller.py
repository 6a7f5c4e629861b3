"""Stripe Events API poller and subscription reconciliation, over aiohttp (never blocks the loop).

`GET /v1/events` lists newest first. Reading forward from a persisted cursor uses
`ending_before=<cursor>`: each page holds the events just newer than the cursor (newest first), so
the page is applied oldest first and the cursor moves with each event, in the same store
transaction as its effects. The first start begins at the newest event (or `BACKFILL` seconds back);
after downtime the cursor catches up through every page; an expired cursor (older than Stripe's 30
days) restarts from 30 days back, and event ids de-duplicate the overlap.
aiohttp is used directly rather than stripe-python's client: the same lean decoder then serves both
delivery paths, and no StripeObject tree is built per event.

The poller knows the source only through the narrow `Ledger` protocol (apply an event exactly once,
count a polled outcome, take committed subscription snapshots), never its internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any, Protocol

import aiohttp
import msgspec

from collector.logsetup import LogFirst
from collector.settings import StripeSettings
from collector.source import SourceContext
from collector.sources.stripe import state
from collector.sources.stripe.events import (
    Event,
    EventError,
    SubState,
    decode_event,
    decode_object,
    subscription_state,
)

__all__ = ["ApiError", "Ledger", "Poller"]

PAGE = 100
EVENTS_RETENTION_S = 30 * 86400  # Stripe keeps events for 30 days
MAX_BACKOFF_S = 60.0
#: Subscriptions waiting for a re-read at most (each tie adds one; more ties are left to reconciliation).
MAX_REFETCH = 1000


class Ledger(Protocol):
    """What the poller needs from its source (`StripeSource` is one)."""

    async def process(self, ev: Event, cursor: str | None = None) -> str:
        """Apply one event exactly once, storing `cursor` with it; returns its outcome."""
        ...

    def count_polled(self, event_type: str, status: str) -> None:
        """Count one event read from the Events API by its outcome."""
        ...

    def subscriptions_written(self, states: Iterable[SubState]) -> None:
        """Show subscription snapshots the poller has committed."""
        ...


class ApiError(Exception):
    """A failed API call; `reason` is a bounded label value."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None, status: int = 0) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


class _Page(msgspec.Struct):
    data: list[msgspec.Raw]
    has_more: bool = False


class _IdOnly(msgspec.Struct):
    id: str
    type: str = "unknown"


class _ErrorBody(msgspec.Struct):
    error: dict[str, Any] = {}


_page = msgspec.json.Decoder(_Page)


class Poller:
    """Polls `/v1/events` and optionally reconciles `/v1/subscriptions` into one `Ledger`.

    Args:
        ctx: the source's context (store, clock, metrics, stop, errors).
        settings: the Stripe settings (an API key is required).
        ledger: where events and subscription snapshots go.
        log_first: the source's bounded logger.
    """

    def __init__(
        self, ctx: SourceContext, settings: StripeSettings, ledger: Ledger, log_first: LogFirst
    ) -> None:
        self.ledger = ledger
        self.ctx = ctx
        self.settings = s = settings
        self._log_first = log_first
        assert s.api_key is not None
        self._auth = {"Authorization": f"Bearer {s.api_key.get_secret_value()}"}
        self.base = s.api_base.rstrip("/")
        self.session: aiohttp.ClientSession | None = None
        m = self.ctx.metrics
        self.requests = m.counter(
            "stripe_api_requests_total",
            "Stripe API requests by endpoint and HTTP status (error: no response).",
            ("endpoint", "code"),
            max_series=200,
        )
        self.last_success = m.gauge(
            "stripe_poll_last_success_timestamp_seconds", "When the last Events API poll succeeded."
        )
        # Subscriptions whose last two states shared a `created` second: re-read from the API, as
        # Stripe advises when order matters (the lifecycle order is kept until the answer arrives).
        self._refetch: set[str] = set()
        self._refetch_task: asyncio.Task[None] | None = None

    def refetch_soon(self, sub_id: str) -> None:
        """Queue a re-read of one subscription (`GET /v1/subscriptions/{id}`), in the background."""
        if len(self._refetch) < MAX_REFETCH:
            self._refetch.add(sub_id)
        if self._refetch_task is None or self._refetch_task.done():
            self._refetch_task = asyncio.create_task(self._refetch_all(), name="stripe-refetch")

    async def _refetch_all(self) -> None:
        while self._refetch:
            sub_id = self._refetch.pop()
            try:
                await self.refetch(sub_id)
            except ApiError as exc:
                self.ctx.error(exc.reason, str(exc))
                self._log_first("refetch", "stripe subscription re-read failed", error=str(exc))

    async def refetch(self, sub_id: str) -> bool:
        """Re-read one subscription and store it as a snapshot taken now; True when it changed state."""
        started = int(self.ctx.clock())
        body = await self._get("subscription", f"/v1/subscriptions/{sub_id}", {})
        try:
            st = subscription_state(decode_object(body), started)
        except (msgspec.MsgspecError, RecursionError) as exc:
            self.ctx.error("invalid_subscription", str(exc)[:200])
            return False
        if st is None or st.id != sub_id:
            return False
        try:
            written = await self.ctx.store.transaction(lambda c: state.apply_snapshot(c, [st]))
        except Exception as exc:
            raise ApiError("store", f"refetch: {exc}") from None
        self.ledger.subscriptions_written(written)
        return bool(written)

    async def close(self) -> None:
        if self._refetch_task is not None:
            self._refetch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refetch_task
            self._refetch_task = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- HTTP ------------------------------------------------------------------------------------------
    async def _get(self, endpoint: str, path: str, params: dict[str, str]) -> bytes:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                headers=self._auth, timeout=aiohttp.ClientTimeout(total=30, connect=10)
            )
        try:
            async with self.session.get(self.base + path, params=params) as resp:
                body = await resp.read()
                self.requests.inc((endpoint, str(resp.status)))
                if resp.status == 200:
                    return body
                retry = resp.headers.get("Retry-After")
                code = _error_code(body)
                reason = (
                    "api_rate_limited"
                    if resp.status == 429
                    else "cursor_expired"
                    if resp.status == 404 and code == "resource_missing"
                    else f"api_{resp.status // 100}xx"
                )
                raise ApiError(
                    reason,
                    f"GET {path} -> {resp.status} {code}",
                    float(retry) if retry and retry.isdigit() else None,
                    resp.status,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.requests.inc((endpoint, "error"))
            raise ApiError("api_unreachable", f"GET {path}: {type(exc).__name__}: {exc}") from None

    async def _list_events(self, **params: str) -> _Page:
        body = await self._get("events", "/v1/events", {"limit": str(PAGE), **params})
        try:
            return _page.decode(body)
        except msgspec.MsgspecError as exc:
            raise ApiError("api_bad_response", f"/v1/events: {exc}") from None

    # -- polling ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        backoff = 1.0
        interval = self.settings.poll_interval
        failing_since: float | None = None
        failures = 0
        while True:
            try:
                more = await self.poll_once()
            except ApiError as exc:
                self.ctx.error(exc.reason, str(exc))
                failures += 1
                failing_since = failing_since or self.ctx.clock()
                what = "unreachable" if exc.reason == "api_unreachable" else f"failing ({exc.reason})"
                self.ctx.degraded(
                    "api",
                    f"Stripe API {what} since {_hms(failing_since)} ({failures} "
                    f"failure{'s' if failures > 1 else ''}): {exc}",
                )
                self._log_first(
                    exc.reason, "stripe events poll failed; backing off", error=str(exc), retry_in_s=backoff
                )
                wait = min(max(backoff, exc.retry_after or 0), MAX_BACKOFF_S)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                if await self.ctx.sleep(wait):
                    return
                continue
            backoff = 1.0
            failing_since, failures = None, 0
            self.ctx.recovered("api")
            self.last_success.set((), self.ctx.clock())
            if more:
                continue  # catching up: the next page now
            if await self.ctx.sleep(interval):
                return

    async def poll_once(self) -> bool:
        """Read one step of new events.

        Returns:
            True when more events are known to be waiting.
        """
        cursor = await self.ctx.store.call(state.read_kv, "cursor")
        if cursor is None:  # very first start
            backfill = self.settings.backfill
            if backfill > 0:
                return await self._start_from_oldest(int(self.ctx.clock() - backfill))
            page = await self._list_events(limit="1")
            first = msgspec.json.decode(page.data[0], type=_IdOnly).id if page.data else ""
            await self.ctx.store.put(state.OWNER, [("cursor", first)])
            return False
        if cursor == "":  # the account had no events yet: everything listed is new
            return await self._start_from_oldest(None)
        try:
            page = await self._list_events(ending_before=cursor)
        except ApiError as exc:
            if exc.reason != "cursor_expired":
                raise
            self.ctx.error("cursor_expired", f"event {cursor} is gone; re-reading the last 30 days")
            self.ctx.log.warning(
                "stripe events cursor expired; re-reading the last 30 days", extra={"cursor": cursor}
            )
            return await self._start_from_oldest(int(self.ctx.clock() - EVENTS_RETENTION_S))
        for raw in reversed(page.data):
            await self._apply(raw)
        return page.has_more

    async def _start_from_oldest(self, created_gte: int | None) -> bool:
        """Walk back to the oldest event (since `created_gte`), apply it and make it the cursor."""
        params = {} if created_gte is None else {"created[gte]": str(created_gte)}
        oldest: msgspec.Raw | None = None
        after: str | None = None
        while True:
            page = await self._list_events(**params, **({"starting_after": after} if after else {}))
            if not page.data:
                break
            oldest = page.data[-1]
            after = msgspec.json.decode(oldest, type=_IdOnly).id
            if not page.has_more:
                break
        if oldest is None:
            await self.ctx.store.put(state.OWNER, [("cursor", "")])
            return False
        await self._apply(oldest)
        return True

    async def _apply(self, raw: msgspec.Raw) -> None:
        body = bytes(raw)
        try:
            ev = decode_event(body)
        except EventError as exc:
            try:
                ident = msgspec.json.decode(body, type=_IdOnly)  # without an id the cursor cannot move on
            except (msgspec.MsgspecError, RecursionError):
                raise ApiError("api_bad_response", f"event without a readable id: {exc}") from None
            self.ledger.count_polled("unknown", "invalid")
            self.ctx.error(exc.reason, str(exc)[:200])
            self._log_first(exc.reason, "invalid event from the Events API", event_id=ident.id)
            await self.ctx.store.put(state.OWNER, [("cursor", ident.id)])
            return
        status = await self.ledger.process(ev, cursor=ev.id)
        self.ledger.count_polled(ev.type, status)
        if status == "invalid":
            # A poison event the store refused alone took its cursor move with it: move on anyway,
            # or the next poll would read it again forever.
            await self.ctx.store.put(state.OWNER, [("cursor", ev.id)])
        if status == "error":
            raise ApiError("store", f"cannot record event {ev.id}")

    # -- reconciliation --------------------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except ApiError as exc:
                self.ctx.error(exc.reason, str(exc))
                self._log_first("reconcile", "stripe subscription reconciliation failed", error=str(exc))
            if await self.ctx.sleep(self.settings.reconcile_interval):
                return

    async def reconcile(self) -> int:
        """Overwrite subscription state with the API's current view where it is newer.

        Returns:
            How many subscriptions changed.
        """
        started = int(self.ctx.clock())
        snapshots = []
        after: str | None = None
        while True:
            params = {"status": "all", "limit": str(PAGE), **({"starting_after": after} if after else {})}
            body = await self._get("subscriptions", "/v1/subscriptions", params)
            try:
                page = _page.decode(body)
            except msgspec.MsgspecError as exc:
                raise ApiError("api_bad_response", f"/v1/subscriptions: {exc}") from None
            for raw in page.data:
                try:
                    st = subscription_state(decode_object(raw), started)
                except (msgspec.MsgspecError, RecursionError) as exc:
                    self.ctx.error("invalid_subscription", str(exc)[:200])
                    continue
                if st is not None:
                    snapshots.append(st)
                    after = st.id
            if not page.has_more or not page.data:
                break
        try:
            written = await self.ctx.store.transaction(lambda c: state.apply_snapshot(c, snapshots))
        except Exception as exc:
            raise ApiError("store", f"reconcile: {exc}") from None
        self.ledger.subscriptions_written(written)
        return len(written)


def _hms(t: float) -> str:
    """UTC wall time of day, as the status page and /health show "since" times."""
    return time.strftime("%H:%M:%S", time.gmtime(t))


def _error_code(body: bytes) -> str:
    try:
        err = msgspec.json.decode(body, type=_ErrorBody).error
    except msgspec.MsgspecError:
        return ""
    code = err.get("code")
    return code if isinstance(code, str) else ""
