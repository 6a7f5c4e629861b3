"""The Stripe source: webhook route and Events API poller feeding one exactly-once pipeline.

A thin I/O shell. Pipeline per event: decode (`payload.py`) -> pure effects (`events.py`) -> one
store transaction (`writer.py` -> `state.py`, which asks the I/O-free `ledger.step` what the event
changes: event id + counter deltas + subscription state) -> mirror the committed result in memory
(`ledger.Mirror`) and publish the metric changes it returns. Only then does the webhook answer 200,
so a crash at any point is either "not recorded, Stripe retries" or "recorded and counted". Events
arriving together share one transaction (group commit, `writer.py`); each is still all-or-nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Iterable, Mapping
from typing import ClassVar

from aiohttp import web

from collector.logsetup import LogFirst
from collector.metrics import Family
from collector.routes import Answer, Route
from collector.settings import StripeSettings
from collector.source import SourceBase, SourceContext
from collector.sources.http import read_limited
from collector.sources.storage import Migration
from collector.sources.stripe import ledger, state
from collector.sources.stripe.events import Event, EventError, SubState, decode_event, effects
from collector.sources.stripe.ledger import MetricChange, Mirror
from collector.sources.stripe.poller import Poller
from collector.sources.stripe.signature import SigningKeys, verify
from collector.sources.stripe.writer import GroupCommitter, Job

__all__ = ["WEBHOOK_PATH", "StripeSource"]

WEBHOOK_PATH = "/webhooks/stripe"
# Stripe retries a delivery for up to 3 days and the Events API keeps 30: ids older than this can
# never come back.
DEDUPE_RETENTION_S = 35 * 86400
# Refunds are possible for months after a charge; keep each charge's refunded mark for a year.
CHARGE_RETENTION_S = 400 * 86400
PRUNE_INTERVAL_S = 3600.0

# Webhook answers encoded once: the same few bodies on every delivery.
_ANSWERS = {
    st: json.dumps({"received": True, "status": st}).encode()
    for st in ("processed", "duplicate", "ignored", "invalid", "rejected")
}
_NOT_RECORDED = Answer(500, json.dumps({"error": "could not record the event"}).encode())
# What `web.json_response` labels its answers (the refusals' type since the first release).
_JSON_UTF8 = "application/json; charset=utf-8"
_STARTING = Answer(503, json.dumps({"error": "starting"}).encode(), _JSON_UTF8)


class StripeSource(SourceBase):
    """Stripe payments, refunds, disputes and subscriptions from webhooks and/or the Events API."""

    name = "stripe"
    #: The tables and migrations this source owns (registered with the store, applied when it opens).
    storage: ClassVar[tuple[Migration, ...]] = state.MIGRATIONS
    #: `collector_source_errors_total{reason}` values, at 0 from start-up.
    error_reasons = (
        "signature_missing", "signature_mismatch", "signature_expired", "signature_malformed",
        "signature_no_v1", "body_not_utf8", "body_too_large", "invalid_json", "invalid_event", "store",
        "api_unreachable", "api_4xx", "api_5xx", "api_rate_limited", "api_bad_response", "cursor_expired",
        "stored_state_invalid",
    )  # fmt: skip

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.settings: StripeSettings = ctx.settings
        # Each secret's HMAC key work done once, not per webhook (a sequence of the secrets all the same).
        self.secrets = SigningKeys(s.get_secret_value() for s in self.settings.webhook_secrets)
        self._log_first = LogFirst(ctx.log)
        # Set once the store's state is loaded into memory; webhooks get 503 before that.
        self.ready = asyncio.Event()
        # What is committed, in memory (pure: it returns the metric changes this shell publishes).
        self.mirror = Mirror()
        m = ctx.metrics
        self.webhooks = m.counter(
            "stripe_webhooks_total",
            "Stripe webhook deliveries by event type and outcome "
            "(processed, duplicate, ignored, invalid, signature_failed, error).",
            ("event_type", "status"),
            max_series=2000,
        )
        self.polled = m.counter(
            "stripe_polled_events_total",
            "Events read from the Stripe Events API by event type and outcome.",
            ("event_type", "status"),
            max_series=2000,
        )
        persisted = [
            m.counter("stripe_payments_total", "Successful payments (PaymentIntents).", ("currency",)),
            m.counter(
                "stripe_payment_value_total",
                "Value of successful payments in major currency units (PaymentIntent amount_received).",
                ("currency",),
            ),
            m.counter(
                "stripe_payment_failures_total",
                "Failed payment attempts by currency and documented decline code.",
                ("currency", "decline_code"),
            ),
            m.counter(
                "stripe_refund_value_total",
                "Refunded value in major currency units (change in charge amount_refunded).",
                ("currency",),
            ),
            m.counter(
                "stripe_refunds_total",
                "Refunds, each counted once (by refund id, or by the charge total it brought).",
                ("currency",),
            ),
            m.counter("stripe_disputes_total", "Disputes opened and closed, by dispute status.", ("status",)),
            m.counter(
                "stripe_checkout_sessions_completed_total",
                "Completed Checkout Sessions by mode (payment, subscription, setup).",
                ("mode",),
            ),
            m.counter("stripe_subscriptions_created_total", "Subscriptions created."),
            m.counter("stripe_subscriptions_canceled_total", "Subscriptions canceled (each once)."),
            m.counter(
                "stripe_invoice_payment_failures_total",
                "Failed invoice payment attempts; kind is subscription or one_off.",
                ("kind",),
            ),
        ]
        self.persisted = {f.name: f for f in persisted}
        self.active = m.gauge("stripe_subscriptions_active", "Subscriptions with status active.")
        self.by_status = m.gauge("stripe_subscriptions", "Known subscriptions by status.", ("status",))
        self.mrr = m.gauge(
            "stripe_monthly_recurring_revenue",
            "Active subscriptions' price x quantity per month, in major currency units.",
            ("currency",),
        )
        self.last_event = m.gauge(
            "stripe_last_event_timestamp_seconds", "Creation time of the newest event processed."
        )
        self._families: dict[str, Family] = {
            **self.persisted,
            **{f.name: f for f in (self.active, self.by_status, self.mrr, self.last_event)},
        }
        self.poller = (
            Poller(ctx, self.settings, self, self._log_first) if self.settings.api_key is not None else None
        )
        self.writer = GroupCommitter(ctx.store, ctx.clock, self._committed, self._failed, self._rejected)
        #: Prune passes run (for tests: the first runs as the source starts, and a test that breaks
        #: the store on purpose waits for it, or its failure would be counted with the test's own).
        self.prunes = 0

    def routes(self) -> list[Route]:
        if not self.secrets:
            return []
        # Signed: the handler checks Stripe-Signature against the raw body (no basic auth, which
        # Stripe cannot send); an ingest route, so the public webhook listener serves it.
        return [
            Route(
                "POST",
                WEBHOOK_PATH,
                self.handle_webhook,
                auth="signed",
                kind="ingest",
                raw=self.answer_webhook,
            )
        ]

    def held_families(self) -> list[str]:
        """Counters restored from the store: not served before the restore (see `durable_render`)."""
        return list(self.persisted)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def run(self) -> None:
        self.writer.open()
        if not self.ready.is_set():
            # Its tables exist: the store applied `storage` (`state.MIGRATIONS`) when it opened.
            loaded = await self.ctx.store.call(state.load)
            self._restore(loaded)
            self.ready.set()
        self.ctx.started()
        tasks = [asyncio.create_task(self._prune_loop(), name="stripe-prune")]
        if self.poller is not None:
            tasks.append(asyncio.create_task(self.poller.run(), name="stripe-poll"))
            if self.settings.reconcile_interval > 0:
                tasks.append(asyncio.create_task(self.poller.reconcile_loop(), name="stripe-reconcile"))
        try:
            done, _pending = await asyncio.wait(
                [*tasks, asyncio.create_task(self.ctx.stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                exc = t.exception() if t in tasks else None
                if exc is not None:
                    raise exc
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self.poller is not None:
                await self.poller.close()
            if self.ctx.stop.is_set():
                # Only when stopping: a restart after a poller failure keeps webhooks flowing.
                await self.writer.close()

    async def _prune_loop(self) -> None:
        while True:
            now = self.ctx.clock()
            try:
                await self.ctx.store.transaction(
                    functools.partial(
                        state.prune,
                        events_before=now - DEDUPE_RETENTION_S,
                        charges_before=now - CHARGE_RETENTION_S,
                    )
                )
            except Exception as exc:
                self.ctx.error("store", f"prune: {exc}")
            self.prunes += 1
            if await self.ctx.sleep(PRUNE_INTERVAL_S):
                return

    def _restore(self, loaded: state.Loaded) -> None:
        """Set (never add) the in-memory view to the stored one: a restarted run shows the same totals."""
        for fam in self.persisted.values():
            fam.clear()
        self._publish(self.mirror.restore(loaded.counters, loaded.last_event_created))
        for sub in loaded.subscriptions:
            self.mirror.subscription(sub)
        for row in loaded.bad_rows:
            # Skipped, not fatal: one unreadable row must not keep the source from ever starting.
            self.ctx.error("stored_state_invalid", row[:200])
            self._log_first("stored_state_invalid", "unreadable stored stripe state skipped", row=row[:200])
        self._publish_subscriptions()

    # -- the pipeline ----------------------------------------------------------------------------------
    async def process(self, ev: Event, cursor: str | None = None, counter: Family | None = None) -> str:
        """Apply one decoded event exactly once (queued for the next group commit).

        Args:
            cursor: the poll cursor to store in the same transaction.
            counter: a `(event_type, status)` family bumped when the outcome is known (also when the
                caller was cancelled meanwhile).

        Returns:
            processed, duplicate, ignored, invalid or error (the store failed; nothing was applied).
        """
        result = await self.writer.submit(ev, effects(ev), cursor, counter)
        return "error" if result is None else result

    def _committed(self, job: Job, applied: state.Applied) -> str:
        """Mirror one committed event in memory; runs on the loop, in commit order."""
        ev, eff = job.ev, job.eff
        status = ledger.outcome(applied, eff)
        if status == "invalid":
            assert eff.problem is not None
            self.ctx.error(eff.reason, eff.problem[:200])
            self._log_first(
                eff.reason,
                "stripe event lacks fields it needs or holds values out of range; counted as invalid",
                event_id=ev.id,
                event_type=ev.type,
                problem=eff.problem[:200],
            )
        if not applied.duplicate:
            self._publish(self.mirror.applied(applied, ev.created))
            if applied.tied is not None and self.poller is not None and self.settings.refetch_on_tie:
                self.poller.refetch_soon(applied.tied)
        if job.extra is not None:
            job.extra.inc((ev.type, status))
        return status

    def _rejected(self, job: Job, reason: str, exc: Exception) -> str:
        """The store refused this one event alone (a value it cannot hold): nothing of it is stored.

        Answered like an invalid event (200, so Stripe does not retry a poison event for 3 days);
        the events committed with it are unaffected (`writer.py` isolates it).
        """
        self.ctx.error(reason, str(exc)[:200])
        self._log_first(
            reason, "stripe event rejected by the store; not recorded", event_id=job.ev.id, error=str(exc)
        )
        if job.extra is not None:
            job.extra.inc((job.ev.type, "invalid"))
        return "invalid"

    def _failed(self, jobs: list[Job], exc: Exception) -> None:
        """A group commit failed: nothing of it is applied; each event is an error its sender retries."""
        for job in jobs:
            self.ctx.error("store", str(exc))
            self._log_first(
                "store", "cannot record stripe event; not acknowledged", event_id=job.ev.id, error=str(exc)
            )
            if job.extra is not None:
                job.extra.inc((job.ev.type, "error"))

    def _publish(self, changes: Iterable[MetricChange]) -> None:
        """Apply the mirror's metric changes to the families (the only place that writes them)."""
        families = self._families
        for family, labels, value, add in changes:
            fam = families.get(family)
            if fam is None:
                continue
            if add:
                fam.inc(labels, value)
            else:
                fam.set(labels, value)

    def _publish_subscriptions(self) -> None:
        self._publish(self.mirror.subscription_gauges())

    # -- what the poller may use (`poller.Ledger`) -------------------------------------------------------
    def count_polled(self, event_type: str, status: str) -> None:
        """Count one event read from the Events API by its outcome."""
        self.polled.inc((event_type, status))

    def subscriptions_written(self, states: Iterable[SubState]) -> None:
        """Mirror and publish subscription snapshots the poller committed (reconcile, re-read)."""
        for st in states:
            self.mirror.subscription(st)
        self._publish_subscriptions()

    # -- webhook ---------------------------------------------------------------------------------------
    async def handle_webhook(self, request: web.Request) -> web.Response:
        """The webhook on aiohttp's path (the guard's lean path calls `answer_webhook` itself)."""
        if not self.ready.is_set():
            return _STARTING.response()
        limit = self.settings.max_body_bytes
        body = await read_limited(request, limit)
        if body is None:
            return self._too_large().response()
        answer = self.answer_webhook(request.headers, body)
        if not isinstance(answer, Answer):
            answer = await answer
        return answer.response()

    def answer_webhook(self, headers: Mapping[str, str], body: bytes) -> Answer | asyncio.Future[Answer]:
        """Check, decode and queue one delivery: the answer, or a future of it once committed."""
        if not self.ready.is_set():
            return _STARTING
        if len(body) > self.settings.max_body_bytes:
            return self._too_large()
        reason = verify(body, headers.get("Stripe-Signature"), self.secrets, self.settings.tolerance)
        if reason is not None:
            return self._reject("signature_failed", reason, 400, "signature verification failed")
        try:
            ev = decode_event(body)
        except EventError as exc:
            # Signed by Stripe, so resending cannot fix it, and Stripe retries every non-2xx answer
            # (4xx too) for 3 days, then disables the endpoint: rejected here, answered 200.
            return self._reject("invalid", exc.reason, 200, str(exc)[:200], signed=True)
        # The writer mirrors and counts the event even if nobody waits for the answer any more.
        job = self.writer.submit(ev, effects(ev), None, self.webhooks)
        answer: asyncio.Future[Answer] = job.get_loop().create_future()
        job.add_done_callback(functools.partial(self._delivered, ev, answer))
        return answer

    def _delivered(self, ev: Event, answer: asyncio.Future[Answer], job: asyncio.Future[str | None]) -> None:
        status = job.result() or "error"
        if status == "error":
            self.ctx.record(
                "deliveries", type=ev.type, status="error", code=500, id=ev.id, reason="store failed"
            )
            result = _NOT_RECORDED
        else:
            self.ctx.record("deliveries", type=ev.type, status=status, code=200, id=ev.id, reason="")
            result = Answer(200, _ANSWERS[status])
        if not answer.done():  # aiohttp's path: its handler may have been cancelled meanwhile
            answer.set_result(result)

    def _too_large(self) -> Answer:
        limit = self.settings.max_body_bytes
        return self._reject("invalid", "body_too_large", 413, f"body larger than {limit} bytes")

    def _reject(self, status: str, reason: str, code: int, detail: str, signed: bool = False) -> Answer:
        self.ctx.record(
            "deliveries", type="unknown", status=status, code=code, id="", reason=f"{reason}: {detail}"
        )
        self.webhooks.inc(("unknown", status))
        self.ctx.error(reason)
        self._log_first(reason, "stripe webhook rejected", reason=reason, http_status=code, detail=detail)
        data = {"received": True, "status": "rejected", "reason": reason} if signed else {"error": reason}
        return Answer(code, json.dumps(data).encode(), _JSON_UTF8)
