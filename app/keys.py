"""Gateway API keys: `gw_<key_id>_<secret>`, looked up by key_id, the secret checked by hash.

- `key_id` is 12 lowercase hex characters: public, indexed, safe in logs and audit rows.
- `secret` is 32 bytes from `secrets`, URL-safe base64 (43 characters, may contain `_`/`-`).
- Only SHA-256(secret) is stored. No salt or pepper is needed: salts and slow hashes defend
  low-entropy human passwords against guessing, and a 256-bit random secret cannot be guessed
  even at billions of SHA-256 per second. A fast hash also keeps verification off the request
  budget (bcrypt at cost 12 takes ~270 ms per check).

`KeyRing.authenticate` caches positive lookups for `ttl_s` (1 s by default). A revocation made by
the CLI in another process therefore takes effect within `ttl_s`; inside the gateway process
`forget(key_id)` makes it immediate. The plaintext key and secret are never logged or stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from loguru import logger

from app.storage.records import ApiKeyRow, utc_now
from app.storage.store import Store, StoreUnavailable

KEY_PREFIX = "gw"
KEY_ID_CHARS = 12
SECRET_BYTES = 32
# key_id: 12 lowercase hex; secret: token_urlsafe(32) = 43 unpadded base64url characters.
_KEY_FORMAT = re.compile(r"gw_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})")
# Compared against when the key_id is unknown, so an unknown id costs the same hash and compare
# as a wrong secret.
_NO_SUCH_KEY_HASH = hashlib.sha256(b"no such key").hexdigest()


class Scope(StrEnum):
    DATA_READ = "data:read"
    TRADING_READ = "trading:read"
    TRADING_WRITE = "trading:write"


def parse_scopes(text: str | Iterable[str]) -> tuple[Scope, ...]:
    """`"data:read,trading:read"` (or an iterable of names) -> scopes, in order, no duplicates.
    ValueError naming the unknown scope otherwise."""
    names = list(text) if not isinstance(text, str) else text.split(",") if text.strip() else []
    scopes: list[Scope] = []
    for name in (n.strip() for n in names):
        try:
            scope = Scope(name)
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {name!r} (known: {known})") from None
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise ValueError("at least one scope is required")
    return tuple(scopes)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of the secret. Unsalted on purpose: see the module docstring."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_prefix(key_id: str) -> str:
    """The public part of a key, shown by `keys list`: everything before the secret."""
    return f"{KEY_PREFIX}_{key_id}"


def generate_key() -> tuple[str, str, str]:
    """A new key: (full key to show once, key_id, hash of the secret to store)."""
    key_id = secrets.token_hex(KEY_ID_CHARS // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{key_prefix(key_id)}_{secret}", key_id, hash_secret(secret)


def parse_key(presented: str) -> tuple[str, str] | None:
    """`gw_<key_id>_<secret>` -> (key_id, secret); None for anything not exactly that shape."""
    match = _KEY_FORMAT.fullmatch(presented)
    if match is None:
        return None
    return match["key_id"], match["secret"]


def verify(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of the secret's hash with the stored one."""
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


@dataclass(slots=True)
class _Cached:
    row: ApiKeyRow
    expires_at: float  # clock() seconds


class KeyRing:
    """Authenticates presented keys against the store, with a short positive cache.

    `authenticate` returns None for a malformed, unknown, revoked or wrong key (one answer for
    all, so callers cannot tell them apart), and raises StoreUnavailable when the key is not
    cached and the store cannot be asked.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = 1.0,
        touch_interval_s: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._touch_interval_s = touch_interval_s
        self._clock = clock
        self._now = now
        self._cache: dict[str, _Cached] = {}
        self._max_entries = max_entries
        self._touched_at: dict[str, float] = {}
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._touches: set[asyncio.Task[None]] = set()

    async def authenticate(self, presented: str) -> ApiKeyRow | None:
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached.expires_at > now:
            row: ApiKeyRow | None = cached.row
        else:
            try:
                row = await self._store.get_api_key(key_id)
            except StoreUnavailable:
                if cached is None:
                    raise
                # No revocation can be recorded while the store is down either, so the last
                # row read stays the truth until it answers again (data keeps flowing).
                row = cached.row
            else:
                self._cache.pop(key_id, None)
        # The secret is checked on every call, cached row or not: the cache holds the stored
        # hash, never anything derived from what a client presented.
        if not verify(secret, _NO_SUCH_KEY_HASH if row is None else row.key_hash):
            return None
        if row is None or row.revoked:
            return None
        if key_id not in self._cache or self._cache[key_id].expires_at <= now:
            self._cache.pop(key_id, None)
            self._cache[key_id] = _Cached(row, now + self._ttl_s)
            if len(self._cache) > self._max_entries:
                # The key seen longest ago goes; it is read from the store again if it returns.
                del self._cache[next(iter(self._cache))]
        self._touch(key_id, now)
        return row

    def size(self) -> int:
        return len(self._cache)

    def forget(self, key_id: str) -> None:
        """Drop one cached key (after revoking it in this process)."""
        self._cache.pop(key_id, None)

    def on_revoked(self, key_id: str | None) -> None:
        """The store reports a revocation (any process); None means "some may be missed"."""
        if key_id is None:
            self._cache.clear()
        else:
            self.forget(key_id)

    async def aclose(self) -> None:
        """Wait for last-used updates still in flight."""
        if self._touches:
            await asyncio.wait(set(self._touches))

    def _touch(self, key_id: str, now: float) -> None:
        last = self._touched_at.get(key_id)
        if last is not None and now - last < self._touch_interval_s:
            return
        self._touched_at.pop(key_id, None)
        self._touched_at[key_id] = now
        if len(self._touched_at) > self._max_entries:
            del self._touched_at[next(iter(self._touched_at))]
        task = asyncio.create_task(self._record_use(key_id, self._now()))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _record_use(self, key_id: str, when: datetime) -> None:
        try:
            await self._store.touch_api_key(key_id, when)
        except StoreUnavailable as exc:
            # last_used_at is bookkeeping: losing one update is fine, failing a request is not.
            logger.bind(dependency=self._store.dependency, key_id=key_id).debug(
                "last-used time not recorded: {}", exc
            )
