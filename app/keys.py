"""Gateway API keys: `gw_<key_id>_<secret>`, looked up by key_id, the secret checked by hash.

- `key_id` is 12 lowercase hex characters: public, indexed, safe in logs and audit rows.
- `secret` is 32 bytes from `secrets`, URL-safe base64 (43 characters, may contain `_`/`-`).
- Only SHA-256(secret) is stored. No salt or pepper is needed: salts and slow hashes defend
  low-entropy human passwords against guessing, and a 256-bit random secret cannot be guessed
  even at billions of SHA-256 per second. A fast hash also keeps verification off the request
  budget (bcrypt at cost 12 takes ~270 ms per check).

`KeyRing.authenticate` remembers what the store answered for a key_id: a row for `ttl_s` (1 s by
default), "no such key" for `miss_ttl_s` (1 s), so a flood of one unknown key costs one store
lookup per `miss_ttl_s` and a miss is answered like a hit (same cache, same hash and compare). A
revocation by the CLI in another process takes effect within `ttl_s` (at once with PostgreSQL:
its notice calls `on_revoked`); a key created meanwhile works within `miss_ttl_s`. The store is
never waited on longer than `store_timeout_s`: past it, or while it fails, a key whose row the
store confirmed within `stale_grace_s` keeps working (no revocation can be recorded meanwhile
either) and any other key raises StoreUnavailable. The plaintext key and secret are never logged
or stored.
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


@dataclass(frozen=True, slots=True)
class _Known:
    """What the store answered for one key_id: its row, or None for "no such key"."""

    row: ApiKeyRow | None
    checked_at: float  # clock() seconds


@dataclass(frozen=True, slots=True)
class _Lookup:
    task: asyncio.Task[_Known]
    started_at: float  # clock() seconds; the budget runs from here for every waiter


class KeyRing:
    """Authenticates presented keys against the store, remembering its answers briefly.

    `authenticate` returns None for a malformed, unknown, revoked or wrong key (one answer for
    all, so callers cannot tell them apart), and raises StoreUnavailable when the store cannot
    answer in time and the key's row was not confirmed within `stale_grace_s`.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = 1.0,
        miss_ttl_s: float = 1.0,
        store_timeout_s: float = 0.2,
        stale_grace_s: float = 3600.0,
        retry_interval_s: float = 1.0,
        touch_interval_s: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        """`retry_interval_s`: after the store failed or did not answer in time, how long key
        checks use what they know without asking it again (as the cache does with Redis)."""
        self._store = store
        self._ttl_s = ttl_s
        self._miss_ttl_s = miss_ttl_s
        self._store_timeout_s = store_timeout_s
        self._stale_grace_s = stale_grace_s
        self._retry_interval_s = retry_interval_s
        self._touch_interval_s = touch_interval_s
        self._clock = clock
        self._now = now
        # Rows and misses apart, each bounded: a flood of made-up key ids cannot push out the
        # rows that keep real keys working through a store outage.
        self._rows: dict[str, _Known] = {}
        self._misses: dict[str, _Known] = {}
        self._max_entries = max_entries
        self._lookups: dict[str, _Lookup] = {}
        # Bumped by every revocation notice: a lookup that started before one is not kept.
        self._epoch = 0
        self._skip_until = 0.0
        self._down_since: float | None = None
        self._touched_at: dict[str, float] = {}
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._touches: set[asyncio.Task[None]] = set()

    async def authenticate(self, presented: str) -> ApiKeyRow | None:
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = self._clock()
        known = self._rows.get(key_id) or self._misses.get(key_id)
        if known is None or not self._fresh(known, now):
            known = await self._refresh(key_id, known, now)
        row = known.row
        # The secret is checked on every call, hit or miss, cached or not: a miss is hashed and
        # compared against a dummy, so it costs what a wrong secret costs. The cache holds the
        # store's answer, never anything derived from what a client presented.
        if not verify(secret, _NO_SUCH_KEY_HASH if row is None else row.key_hash):
            return None
        if row is None or row.revoked:
            return None
        self._touch(key_id, now)
        return row

    def size(self) -> int:
        """Key ids remembered (rows and misses)."""
        return len(self._rows) + len(self._misses)

    def forget(self, key_id: str) -> None:
        """Drop what is remembered of one key (after revoking it in this process)."""
        self._epoch += 1
        self._rows.pop(key_id, None)
        self._misses.pop(key_id, None)

    def on_revoked(self, key_id: str | None) -> None:
        """The store reports a revocation (any process); None means "some may be missed"."""
        if key_id is None:
            self._epoch += 1
            self._rows.clear()
            self._misses.clear()
        else:
            self.forget(key_id)

    async def aclose(self) -> None:
        """Wait for last-used updates still in flight; stop lookups nobody waits for."""
        for lookup in list(self._lookups.values()):
            lookup.task.cancel()
        pending = {lookup.task for lookup in self._lookups.values()} | self._touches
        if pending:
            await asyncio.wait(pending)

    def _fresh(self, known: _Known, now: float) -> bool:
        ttl_s = self._miss_ttl_s if known.row is None else self._ttl_s
        return now - known.checked_at < ttl_s

    async def _refresh(self, key_id: str, known: _Known | None, now: float) -> _Known:
        """The store's answer for `key_id`, waiting at most the lookup's budget; or, when it
        cannot answer in time, `known` while within the grace; else StoreUnavailable."""
        usable = (
            known if known is not None and now - known.checked_at < self._stale_grace_s else None
        )
        lookup = self._lookups.get(key_id)
        if lookup is None:
            if now < self._skip_until:
                return _unanswered(usable, "the key store failed a moment ago")
            if len(self._lookups) >= self._max_entries:
                return _unanswered(usable, "too many key lookups waiting for the store")
            # One lookup per key_id, shared by every check that arrives while it is out.
            task = asyncio.create_task(self._lookup(key_id), name="api-key-lookup")
            task.add_done_callback(_retrieve)
            lookup = self._lookups[key_id] = _Lookup(task, now)
        # Waiting never cancels the lookup: with asyncpg a cancelled query waits on the server
        # to take the cancellation, which a hung server never does. It finishes on its own.
        remaining_s = lookup.started_at + self._store_timeout_s - now
        if not lookup.task.done() and remaining_s > 0:
            await asyncio.wait({lookup.task}, timeout=remaining_s)
        if lookup.task.done():
            try:
                return lookup.task.result()
            except StoreUnavailable:
                if usable is not None:
                    return usable
                raise
        self._failed(f"no answer within {self._store_timeout_s}s")
        return _unanswered(usable, f"the key store did not answer within {self._store_timeout_s}s")

    async def _lookup(self, key_id: str) -> _Known:
        epoch = self._epoch
        try:
            row = await self._store.get_api_key(key_id)
        except StoreUnavailable as exc:
            self._failed(str(exc))
            raise
        finally:
            self._lookups.pop(key_id, None)
        known = _Known(row, self._clock())
        self._answered()
        if epoch == self._epoch:
            self._remember(key_id, known)
        return known

    def _remember(self, key_id: str, known: _Known) -> None:
        kept, other = (
            (self._misses, self._rows) if known.row is None else (self._rows, self._misses)
        )
        other.pop(key_id, None)
        kept.pop(key_id, None)
        kept[key_id] = known
        if len(kept) > self._max_entries:
            # The key_id confirmed longest ago goes; it is read from the store again if it returns.
            del kept[next(iter(kept))]

    def _failed(self, reason: str) -> None:
        self._skip_until = self._clock() + self._retry_interval_s
        if self._down_since is None:
            self._down_since = self._clock()
            logger.bind(dependency=self._store.dependency).warning(
                "key store unavailable ({}); keys it confirmed in the last {:.0f}s keep working",
                reason,
                self._stale_grace_s,
            )

    def _answered(self) -> None:
        if self._down_since is not None:
            outage_s = self._clock() - self._down_since
            self._down_since = None
            logger.bind(dependency=self._store.dependency).info(
                "key store back after {:.1f}s", outage_s
            )

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


def _unanswered(usable: _Known | None, reason: str) -> _Known:
    if usable is None:
        raise StoreUnavailable(reason)
    return usable


def _retrieve(task: asyncio.Task[_Known]) -> None:
    """Done-callback of a lookup: its failure may have no waiter left to see it."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, StoreUnavailable):
        logger.opt(exception=exc).error("API key lookup failed")
