"""HTTP basic auth against bcrypt hashes, the way exporter-toolkit checks `basic_auth_users`.

- Unknown users are checked against a dummy hash, so a wrong user name costs the same bcrypt time as a
  wrong password (no user enumeration by timing).
- bcrypt runs in a worker thread, one check at a time (a flood of bad passwords cannot take every
  CPU), and successful checks are cached so a scrape every few seconds does not pay ~100 ms each time.
- The cache key is a SHA-256 of user, hash and password: no plaintext password is kept in memory, and
  a changed hash (a reload) misses the cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

__all__ = ["DUMMY_HASH", "BasicAuth", "parse_basic_header"]

#: exporter-toolkit's dummy hash (cost 10, like the hashes operators generate).
DUMMY_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"


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
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. a NUL byte in the password: bcrypt refuses it, so it cannot match
        return False


class BasicAuth:
    """Checks credentials against `users` (user -> bcrypt hash).

    Args:
        users: user name -> bcrypt hash.
        cache_size: successful checks remembered (oldest evicted first).
    """

    def __init__(self, users: Mapping[str, bytes], cache_size: int = 100) -> None:
        self.users = dict(users)
        self.cache_size = cache_size
        # digest(user, hash, password) of recent successes; OrderedDict as a small LRU.
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        # One bcrypt at a time, as exporter-toolkit's mutex: bounds the CPU an attacker can burn.
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def _key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        h = hashlib.sha256()
        for part in (user.encode(), hashed, password):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        return h.digest()

    def check_sync(self, user: str, password: bytes) -> bool:
        """Blocking check (bcrypt when not cached); for tests and threads."""
        hashed = self.users.get(user)
        key = self._key(user, hashed or DUMMY_HASH, password)
        if hashed is not None and self._cached(key):
            return True
        ok = _checkpw(password, hashed or DUMMY_HASH) and hashed is not None
        if ok:
            self._remember(key)
        return ok

    async def check(self, user: str, password: bytes) -> bool:
        """True when `user` exists and `password` matches its hash; bcrypt runs off the event loop."""
        hashed = self.users.get(user)
        key = self._key(user, hashed or DUMMY_HASH, password)
        if hashed is not None and self._cached(key):
            return True
        async with self._lock:
            matched = await asyncio.to_thread(_checkpw, password, hashed or DUMMY_HASH)
        ok = matched and hashed is not None
        if ok:
            self._remember(key)
        return ok

    def _cached(self, key: bytes) -> bool:
        # compare_digest over the candidates keeps the lookup from leaking which key prefix matched.
        for known in self._ok:
            if hmac.compare_digest(known, key):
                self._ok.move_to_end(known)
                return True
        return False

    def _remember(self, key: bytes) -> None:
        self._ok[key] = None
        self._ok.move_to_end(key)
        while len(self._ok) > self.cache_size:
            self._ok.popitem(last=False)
