"""Group commit for Stripe events: many events in ONE store transaction, each acknowledged after it.

One SQLite commit per event capped webhooks at a few hundred per second (the commit and the hop to
the store thread dominate). Here handlers queue their decoded event and await a future; one writer
task takes everything queued (up to `MAX_BATCH`), applies it in one transaction, then runs the
source's in-memory mirror for each event in queue order and resolves the futures. The transaction
runs on the loop when the store thread is idle (`StateStore.transaction_inline`: it waits for no
lock and no disk), else on the store thread (`store.transaction`). So:

- an event's dedupe row, counter changes and subscription row are committed before its waiter wakes
  (before the webhook's 200);
- duplicates are never applied twice, also within a batch (the second of the same id is a duplicate,
  see `state.apply_batch`);
- a failed transaction is retried one event per transaction, so one poison event cannot fail the
  events committed with it; an event the store refuses alone for its data (`sqlite3.IntegrityError`,
  an integer it cannot hold) is rejected (`rejected` callback, nothing stored); one that fails alone
  for any other reason (disk, I/O) wakes its waiter with `None`: its webhook answers 500 and Stripe
  redelivers;
- the writer task survives a failing mirror callback (counted, logged) and is restarted on the next
  submit if it ever ends;
- no timer: while one transaction runs the next batch fills, so batches grow with the load and a
  lone event waits for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.sources.stripe import state
from collector.sources.stripe.events import Effects, Event
from collector.store import StateStore, StoreBusy

__all__ = ["MAX_BATCH", "GroupCommitter", "Job"]

#: Upper bound of events per transaction: bounds the time one commit holds the store thread.
MAX_BATCH = 512
#: Errors that say "this data", not "this disk": the event is refused, never retried forever.
DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, ValueError, TypeError)

log = logging.getLogger("collector.sources.stripe")


@dataclass(slots=True)
class Job:
    """One queued event and what its waiter needs back."""

    ev: Event
    eff: Effects
    cursor: str | None
    future: asyncio.Future[Any]
    extra: Any = None  # passed through to the commit callback (e.g. the delivery counter to bump)


class GroupCommitter:
    """The single writer of Stripe state.

    Args:
        store: the state store.
        clock: wall clock for `seen_at` (dedupe retention).
        committed: called on the loop for each job after its batch committed, in queue order, with
            the job and its `state.Applied`; its return value resolves the job's future.
        failed: called with the jobs of a failed transaction and the exception; their futures then
            resolve to None (the sender retries).
        rejected: called with a job the store refused alone for its data, a bounded reason and the
            exception; its return value resolves the job's future. Without it such a job is failed.
    """

    def __init__(
        self,
        store: StateStore,
        clock: Callable[[], float],
        committed: Callable[[Job, state.Applied], Any],
        failed: Callable[[list[Job], Exception], None],
        rejected: Callable[[Job, str, Exception], Any] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.store = store
        self.clock = clock
        self.committed = committed
        self.failed = failed
        self.rejected = rejected
        self.max_batch = max_batch
        self._jobs: list[Job] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._in_flight = 0
        #: Transactions committed and events in the last one (for tests and debugging).
        self.commits = 0
        self.last_batch = 0

    @property
    def pending(self) -> int:
        """Events queued or in the transaction being committed."""
        return len(self._jobs) + self._in_flight

    def submit(
        self, ev: Event, eff: Effects, cursor: str | None = None, extra: Any = None
    ) -> asyncio.Future[Any]:
        """Queue one event; the future resolves to the commit callback's result, or None on failure."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        job = Job(ev, eff, cursor, fut, extra)
        if self._closed:
            # Stopping: not recorded, reported like a failed commit; the sender retries.
            self.failed([job], RuntimeError("stripe source is stopping"))
            fut.set_result(None)
            return fut
        self._jobs.append(job)
        if self._task is None or self._task.done():
            # Started on first use so webhooks, the poller and tests need no lifecycle of their own.
            self._task = asyncio.create_task(self._run(), name="stripe-writer")
        self._wake.set()
        return fut

    def open(self) -> None:
        """Accept events again after `close` (the source's `run` was restarted)."""
        self._closed = False

    async def close(self) -> None:
        """Finish the batch in flight, refuse the rest (their senders retry), stop the writer."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._resolve_all(self._jobs)
        self._jobs = []

    async def _run(self) -> None:
        try:
            while True:
                if not self._jobs:
                    self._wake.clear()
                    await self._wake.wait()
                # One turn of the loop: handlers already woken by their data queue up too.
                await asyncio.sleep(0)
                batch, self._jobs = self._jobs[: self.max_batch], self._jobs[self.max_batch :]
                commit = asyncio.ensure_future(self._commit(batch))
                try:
                    await asyncio.shield(commit)
                except asyncio.CancelledError:
                    # The transaction runs on to its end on the store thread: wait for it, so what
                    # committed is mirrored and answered, then stop.
                    await asyncio.wait([commit])
                    raise
        finally:
            jobs, self._jobs = self._jobs, []
            self._resolve_all(jobs)

    async def _commit(self, batch: list[Job]) -> None:
        now = self.clock()
        self._in_flight = len(batch)
        try:
            results = await self._transaction(batch, now)
        except Exception as exc:
            if len(batch) == 1:
                self._fail_alone(batch[0], exc)
                return
            # One event may be poison: commit each alone, so only it fails (in queue order, as before).
            for job in batch:
                await self._commit_alone(job, now)
            return
        finally:
            self._in_flight = 0
        self._mirror(batch, results)

    async def _transaction(self, batch: list[Job], now: float) -> list[state.Applied]:
        items = [(j.ev.id, j.ev.type, j.ev.created, j.eff, j.cursor) for j in batch]

        def apply(conn: sqlite3.Connection) -> list[state.Applied]:
            return state.apply_batch(conn, items, now)

        try:
            # On the loop when the store thread is idle (`StateStore.transaction_inline`: no waiting
            # for it, a lock or a disk); committed either way before anyone is answered.
            return self.store.transaction_inline(apply)
        except StoreBusy:
            return await self.store.transaction(apply)

    async def _commit_alone(self, job: Job, now: float) -> None:
        try:
            results = await self._transaction([job], now)
        except Exception as exc:
            self._fail_alone(job, exc)
            return
        self._mirror([job], results)

    def _fail_alone(self, job: Job, exc: Exception) -> None:
        try:
            if self.rejected is not None and isinstance(exc, DATA_ERRORS):
                result = self.rejected(job, "store_rejected", exc)
                if not job.future.done():
                    job.future.set_result(result)
            else:
                self.failed([job], exc)
        finally:
            self._resolve_all([job])

    def _mirror(self, batch: list[Job], results: list[state.Applied]) -> None:
        self.commits += 1
        self.last_batch = len(batch)
        # Mirror in queue order before anyone is answered: memory never runs ahead of the store.
        try:
            for job, applied in zip(batch, results, strict=True):
                try:
                    result = self.committed(job, applied)
                except Exception:
                    # Committed but not mirrored: a bug, not the sender's fault (it must not retry);
                    # the writer lives on and the next start reloads memory from the store.
                    log.exception("stripe event committed but not mirrored", extra={"event_id": job.ev.id})
                    result = "processed"
                if not job.future.done():  # a waiter that went away still had its event applied
                    job.future.set_result(result)
        finally:
            self._resolve_all(batch)  # only reached with work left by a bug: never leave a waiter hanging

    @staticmethod
    def _resolve_all(jobs: list[Job]) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_result(None)
