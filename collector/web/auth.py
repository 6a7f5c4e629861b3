"""HTTP basic auth against bcrypt hashes, the way exporter-toolkit checks `basic_auth_users`, made so a
flood of wrong passwords cannot starve the server or tell which user names exist.

- Verified credentials are cached (as exporter-toolkit does), keyed on a SHA-256 of user, hash and
  password: no plaintext password is kept, and a changed hash (a reload) misses the cache. Failures
  are cached apart, so a flood of random passwords cannot evict a real scraper's entry.
- bcrypt runs on its own small thread pool (`COLLECTOR_HTTP__AUTH_CONCURRENCY` threads, off the event
  loop and off asyncio's default executor, at a lower CPU priority than the loop), and at most `COLLECTOR_HTTP__AUTH_QUEUE` checks wait for
  it: beyond that the answer is "busy" at once instead of a queue that grows with the flood.
- Constant cost: an unknown user is checked against a dummy hash made at the highest cost any
  configured user has, and every failed check is padded (by sleeping, not by hashing) to the measured
  time of a check at that cost. A user hashed at cost 5 or 12 and an unknown user look the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

__all__ = ["DUMMY_HASH", "BasicAuth", "parse_basic_header"]

#: exporter-toolkit's dummy hash (cost 10, like the hashes operators generate); used when no user is set.
DUMMY_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
_COST = re.compile(rb"^\$2[aby]\$(\d\d)\$")


def _cost(hashed: bytes) -> int:
    match = _COST.match(hashed)
    return int(match.group(1)) if match else 10


def parse_basic_header(header: str | None) -> tuple[str, bytes] | None:
    """`Authorization: Basic <b64(user:password)>` -> (user, password bytes); None when absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # at the first check: a collector without basic auth never loads it

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. a NUL byte in the password: bcrypt refuses it, so it cannot match
        return False


#: Niceness added to the bcrypt threads: when CPU is short, the event loop (health, scrapes) wins.
BCRYPT_NICENESS = 10


def _lower_priority() -> None:
    """Lower this worker thread's CPU priority (Linux applies setpriority per thread id)."""
    import threading

    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + BCRYPT_NICENESS)


class _Lru:
    """A small LRU set of digests; lookups compare in constant time per candidate."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.keys: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: bytes) -> bool:
        # compare_digest over the candidates keeps the lookup from leaking which key prefix matched.
        for known in self.keys:
            if hmac.compare_digest(known, key):
                self.keys.move_to_end(known)
                return True
        return False

    def add(self, key: bytes) -> None:
        self.keys[key] = None
        self.keys.move_to_end(key)
        while len(self.keys) > self.size:
            self.keys.popitem(last=False)


class BasicAuth:
    """Checks credentials against `users` (user -> bcrypt hash).

    Args:
        users: user name -> bcrypt hash.
        cache_size: verified credentials remembered (oldest evicted first); as many failures apart.
        concurrency: bcrypt checks at once (threads of its own pool).
        queue: uncached checks that may wait for a thread; `check` answers None beyond that.
        on_result: called with `cached`, `verified`, `failed` or `busy` per check (metrics).
        clock: monotonic seconds (tests).
    """

    def __init__(
        self,
        users: Mapping[str, bytes],
        cache_size: int = 100,
        concurrency: int = 1,
        queue: int = 32,
        on_result: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = dict(users)
        self.cache_size = cache_size
        self._ok = _Lru(cache_size)
        self._bad = _Lru(cache_size)
        self.concurrency = concurrency
        self.queue = queue
        self.on_result = on_result or (lambda _result: None)
        self.clock = clock
        #: The highest cost among the users: the dummy hash and the padding are made for it.
        self.max_cost = max((_cost(h) for h in self.users.values()), default=_cost(DUMMY_HASH))
        # Made on the first unknown user (hashpw costs what checkpw costs, so that check is not cheaper).
        self._dummy: bytes | None = None if self.users else DUMMY_HASH
        #: Seconds a check at max_cost takes here (a moving average): every failure lasts at least this.
        self.target = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._sem: asyncio.Semaphore | None = None
        self._waiting = 0

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def close(self) -> None:
        """Let the bcrypt threads end (a reload replaced this object)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        h = hashlib.sha256()
        for part in (user.encode("utf-8", "surrogateescape"), hashed, password):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        return h.digest()

    def _verify(self, password: bytes, hashed: bytes | None) -> bool:
        """The blocking part: bcrypt against the user's hash, or the dummy at max_cost for an unknown
        user; times checks at max_cost for the padding. Runs in a worker thread."""
        began = self.clock()
        if hashed is None:
            if self._dummy is None:
                import bcrypt

                self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(self.max_cost))
                matched = False
            else:
                matched = _checkpw(password, self._dummy)
            cost = self.max_cost
        else:
            matched = _checkpw(password, hashed)
            cost = _cost(hashed)
        if cost == self.max_cost:
            took = self.clock() - began
            self.target = took if not self.target else 0.8 * self.target + 0.2 * took
        return matched and hashed is not None

    def check_sync(self, user: str, password: bytes) -> bool:
        """Blocking check without padding (bcrypt when not cached); for tests and threads."""
        hashed = self.users.get(user)
        key = self._key(user, hashed or b"", password)
        if hashed is not None and key in self._ok:
            return True
        if key in self._bad:
            return False
        ok = self._verify(password, hashed)
        (self._ok if ok else self._bad).add(key)
        return ok

    async def check(self, user: str, password: bytes) -> bool | None:
        """True when `user` exists and `password` matches its hash; False otherwise (after the constant
        delay); None when too many uncached checks are already waiting for bcrypt."""
        began = self.clock()
        hashed = self.users.get(user)
        key = self._key(user, hashed or b"", password)
        if hashed is not None and key in self._ok:
            self.on_result("cached")
            return True
        if key not in self._bad:
            if self._waiting >= self.concurrency + self.queue:
                self.on_result("busy")
                # Answered after the same delay as a failure: a flooding client waits for each answer
                # like everyone else instead of looping on instant refusals.
                await self._pad(began)
                return None
            if self._pool is None or self._sem is None:
                self._pool = ThreadPoolExecutor(
                    self.concurrency, thread_name_prefix="bcrypt", initializer=_lower_priority
                )
                self._sem = asyncio.Semaphore(self.concurrency)
            loop = asyncio.get_running_loop()
            self._waiting += 1
            try:
                async with self._sem:
                    began = self.clock()  # the padding covers the check, not the queue before it
                    if not self.target and hashed is not None and _cost(hashed) != self.max_cost:
                        # Nothing measured at max_cost yet: measure once, or this first failure is quick.
                        await loop.run_in_executor(self._pool, self._verify, b"", None)
                        began = self.clock()
                    ok = await loop.run_in_executor(self._pool, self._verify, password, hashed)
            finally:
                self._waiting -= 1
            if ok:
                self._ok.add(key)
                self.on_result("verified")
                return True
            self._bad.add(key)
        self.on_result("failed")
        await self._pad(began)
        return False

    async def _pad(self, began: float) -> None:
        delay = began + self.target - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)
