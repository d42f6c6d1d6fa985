"""The value cache: Redis when configured, otherwise in-process, behind one interface.

Entries keep the real value with its fetch time, and may also carry a typed failure ("negative"
entry) so a failing key does not stampede Alpaca. The last real value stays in the entry next to
a failure, because `stale_if_error_ms` may later ask for it. The cache is an optimisation: Redis
errors fail open (counted, logged once per outage) and never become an answer to the client.

Latest values are written in order: an entry that says when its value was observed
(`observed_ns`) never replaces a fresh entry observed later. Two writers race for such keys, the
REST path and Alpaca's stream (app/streams/refresh.py), and a REST answer that was in flight
while the stream pushed a newer quote must not take the cache back in time. In Redis the check
and the write are one script, so instances cannot interleave between them. A held entry past its
freshness gives way, so a REST answer always lands once the entry it would replace has aged out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from loguru import logger
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics

T = TypeVar("T")
R = TypeVar("R")
# What a failed Redis call raises: the cache fails open on these, and only these. A cluster
# client that reaches no node, or finds a slot uncovered (a failover under way), raises
# RedisClusterException, which is not a RedisError.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
# The gateway's one Redis client: a single server (or a proxy in front of one), or a Redis
# Cluster. Every key a script or a multi-key command touches together shares a hash tag, so both
# take the same calls; only MGET needs telling apart (`read_many`).
RedisClient: TypeAlias = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class CachedValue:
    """`value` is JSON-ready and exactly as parsed from Alpaca; None when never fetched."""

    value: Any
    fetched_at: float  # unix seconds when the gateway received `value`
    fresh_until: float  # unix seconds; after this the entry is only a stale candidate
    error: GatewayError | None = None  # set on a negative entry
    # The value came over Alpaca's stream (app/streams/refresh.py), not from a REST call.
    streamed: bool = False
    # Latest values only: the newest observation in `value` (Unix ns; 0 for a failure holding no
    # value), which orders writes. None: written unconditionally.
    observed_ns: int | None = None
    # What the API made of this entry once (its encoded answer), so a value served a thousand
    # times is encoded once. Lives as long as the entry object; never stored in Redis.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until


def cache_key(kind: str, feed: str, symbol: str, *params: str) -> str:
    """`v1:{kind}:{feed}:{symbol}[:params]` - feed is always part of it (plans differ)."""
    return ":".join(("v1", kind, feed, symbol, *params))


def keeps_held(held: CachedValue | None, entry: CachedValue, now: float) -> bool:
    """Whether an ordered write of `entry` must leave `held` in place: it is fresh and was
    observed later. ORDERED_PUT is the same rule in Redis."""
    return (
        held is not None
        and held.observed_ns is not None
        and entry.observed_ns is not None
        and held.observed_ns > entry.observed_ns
        and held.is_fresh(now)
    )


# A Lua function: whether the encoded entry `held` must stay against an entry observed at `ns`
# (decimal text) at unix time `now`. `encode` writes an ordered entry's observation and
# freshness first (`{"o":"<ns>","u":<unix s>,...`) so they are read without decoding the value:
# cjson would take longer and keep only 14 digits of any number it re-encodes.
HELD_IS_NEWER_LUA = """
local function held_is_newer(held, ns, now)
  local o, u = string.match(held, '^{"o":"(%d+)","u":([^,}]+)')
  if not o or (tonumber(u) or 0) <= now then
    return false
  end
  return string.len(o) > string.len(ns) or (string.len(o) == string.len(ns) and o > ns)
end
"""
# KEYS: the value. ARGV: entry, keep ms, observed ns, now (unix s). Stores the entry unless the
# one held is fresh and observed later: 1 when stored, else the held entry.
ORDERED_PUT = (
    HELD_IS_NEWER_LUA
    + """
local held = redis.call('GET', KEYS[1])
if held and held_is_newer(held, ARGV[3], tonumber(ARGV[4])) then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)


def encode(entry: CachedValue) -> bytes:
    error = entry.error
    doc: dict[str, Any] = {}
    if entry.observed_ns is not None:
        doc["o"] = str(entry.observed_ns)  # first, with "u": see HELD_IS_NEWER_LUA
    doc |= {"u": entry.fresh_until, "v": entry.value, "f": entry.fetched_at}
    if entry.streamed:
        doc["s"] = True
    if error is not None:
        doc["e"] = {
            "code": error.code.name,
            "detail": error.detail,
            "upstream": error.upstream,
            "symbol": error.symbol,
            "retry_after_s": error.retry_after_s,
            "extensions": error.extensions,
        }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(raw: bytes | str) -> CachedValue:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a cache entry")
    error = None
    if (e := doc.get("e")) is not None:
        error = GatewayError(
            ErrorCode[e["code"]],
            e["detail"],
            upstream=e["upstream"],
            symbol=e["symbol"],
            retry_after_s=e["retry_after_s"],
            extensions=e["extensions"],
        )
    observed = doc.get("o")
    return CachedValue(
        doc["v"],
        doc["f"],
        doc["u"],
        error,
        streamed=doc.get("s") is True,
        observed_ns=int(observed) if isinstance(observed, str) else None,
    )


class Cache(Protocol):
    backend: str

    async def get_many(self, keys: Sequence[str]) -> dict[str, CachedValue]: ...

    def peek(self, key: str) -> CachedValue | None:
        """The entry this process holds for `key` right now, without any I/O; None if it holds
        none (which says nothing about Redis)."""
        ...

    # True when `peek` answering None means the cache holds nothing for the key anywhere.
    conclusive_peek: bool

    async def put_many(self, entries: Sequence[tuple[str, CachedValue, float]]) -> set[str]:
        """Store (key, entry, keep_s); `keep_s` is the hard expiry, past any stale use. An entry
        with `observed_ns` is an ordered write (`keeps_held`): the keys whose held entry stayed
        are answered."""
        ...

    def status(self) -> str: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class Bounded(Generic[T]):
    """Insertion-ordered entries capped by count and by size (the entry's encoded bytes, which
    the caller knows or measures); past either cap the oldest entries go first."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._items: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.bytes = 0

    def get(self, key: str) -> T | None:
        found = self._items.get(key)
        return None if found is None else found[0]

    def put(self, key: str, item: T, size: int) -> None:
        self.pop(key)
        self._items[key] = (item, size)
        self.bytes += size
        while self._items and (
            len(self._items) > self._max_entries or self.bytes > self._max_bytes
        ):
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped

    def pop(self, key: str) -> None:
        found = self._items.pop(key, None)
        if found is not None:
            self.bytes -= found[1]

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


class MemoryCache:
    """Process-local cache with the same contract; bounded by entries and by bytes so neither a
    symbol scan nor a few wide bar ranges can grow it."""

    backend = "memory"
    conclusive_peek = True

    def __init__(
        self,
        max_entries: int = 100_000,
        max_bytes: int = 32 * 2**20,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # (hard expiry on `clock`, entry)
        self._entries: Bounded[tuple[float, CachedValue]] = Bounded(max_entries, max_bytes)
        self._clock = clock
        self._wall_clock = wall_clock

    async def get_many(self, keys: Sequence[str]) -> dict[str, CachedValue]:
        found: dict[str, CachedValue] = {}
        for key in keys:
            entry = self.peek(key)
            if entry is not None:
                found[key] = entry
        return found

    def peek(self, key: str) -> CachedValue | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            self._entries.pop(key)
            return None
        return item[1]

    async def put_many(self, entries: Sequence[tuple[str, CachedValue, float]]) -> set[str]:
        now, wall_now = self._clock(), self._wall_clock()
        kept: set[str] = set()
        for key, entry, keep_s in entries:
            if keeps_held(self.peek(key), entry, wall_now):
                kept.add(key)
                continue
            # Measured as Redis would store it: what the entry costs, within a small factor.
            self._entries.put(key, (now + keep_s, entry), len(encode(entry)))
        return kept

    def sizes(self) -> tuple[int, int]:
        """(entries, bytes) held now."""
        return len(self._entries), self._entries.bytes

    def status(self) -> str:
        return "up"

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()


def fail_fast_redis(url: str, *, timeout_s: float, cluster: bool = False) -> RedisClient:
    """The gateway's Redis client: short timeouts, no retries (built once, in the lifespan).

    redis-py retries 10 times with backoff by default: a hung Redis would stall requests that
    the cache is only meant to speed up. `url` may be `redis://` or `rediss://` (TLS; redis-py
    reads `ssl_ca_certs`, `ssl_cert_reqs`... from its query string) and may carry an ACL user
    (`redis://user:password@host`). With `cluster` it names one node of a Redis Cluster; the
    client learns the others and sends each key to the node that owns its slot.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


async def read_many(client: RedisClient, keys: list[str]) -> list[Any]:
    """MGET `keys`, values in their order. A cluster refuses one MGET over several slots
    (CROSSSLOT), and a batch's symbols hash all over: there it is one MGET per slot, pipelined."""
    if isinstance(client, RedisCluster):
        return await client.mget_nonatomic(keys)
    return await client.mget(keys)


class RedisCache:
    """Redis-backed cache that fails open: a Redis outage costs speed, never an answer."""

    backend = "redis"
    conclusive_peek = False

    def __init__(
        self,
        client: RedisClient,
        metrics: Metrics,
        *,
        timeout_s: float,
        namespace: str = "gw",
        retry_interval_s: float = 1.0,
        near_max_entries: int = 10_000,
        near_max_bytes: int = 8 * 2**20,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`client` is shared (the per-key quotas use it too); its owner closes it.

        A small in-process near cache sits in front of Redis: an entry read or written here is
        answered from memory while it is fresh (by its own fetch time, whichever instance
        fetched it), so a hot key costs one Redis read per TTL instead of one per request. It
        also keeps this instance's own fetches while Redis is away.
        """
        self._redis = client
        self._near: Bounded[CachedValue] = Bounded(near_max_entries, near_max_bytes)
        self._wall_clock = wall_clock
        self._metrics = metrics
        self._prefix = f"{namespace}:"
        self._timeout_s = timeout_s
        self._retry_interval_s = retry_interval_s
        self._clock = clock
        self._down_since: float | None = None
        self._skip_until = 0.0
        metrics.dependency("redis", up=True)

    async def get_many(self, keys: Sequence[str]) -> dict[str, CachedValue]:
        found: dict[str, CachedValue] = {}
        ask: list[str] = []
        for key in keys:
            near = self.peek(key)
            if near is not None:
                found[key] = near
            else:
                ask.append(key)
        if not ask or not self.reachable():
            return found
        try:
            raw = await self.bounded(
                lambda: read_many(self._redis, [self._prefix + k for k in ask])
            )
        except REDIS_ERRORS as exc:
            self.report_failure(exc)
            return found
        self.report_success()
        for key, item in zip(ask, raw, strict=True):
            if item is None:
                continue
            try:
                entry = decode(item)
            except (ValueError, KeyError, TypeError, AttributeError):
                # An entry this version cannot read (another version wrote it) is just a miss.
                continue
            found[key] = entry
            self._near.put(key, entry, len(item))
        return found

    def peek(self, key: str) -> CachedValue | None:
        entry = self._near.get(key)
        if entry is None:
            return None
        if not entry.is_fresh(self._wall_clock()):
            # Past its freshness it is Redis's to answer (a newer value, or a stale candidate).
            self._near.pop(key)
            return None
        return entry

    def sizes(self) -> tuple[int, int]:
        """(entries, bytes) the near cache holds now."""
        return len(self._near), self._near.bytes

    async def put_many(self, entries: Sequence[tuple[str, CachedValue, float]]) -> set[str]:
        now = self._wall_clock()
        kept: set[str] = set()
        encoded = []
        for key, entry, keep_s in entries:
            if keeps_held(self._near.get(key), entry, now):
                kept.add(key)  # this instance knows of a newer one: Redis holds it or newer
                continue
            raw = encode(entry)
            self._near.put(key, entry, len(raw))
            encoded.append((key, entry, keep_s, raw))
        if not encoded or not self.reachable():
            return kept

        async def store() -> Any:
            pipe = self._redis.pipeline(transaction=False)
            for key, entry, keep_s, raw in encoded:
                redis_key, keep_ms = self._prefix + key, max(1, int(keep_s * 1000))
                if entry.observed_ns is None:
                    pipe.set(redis_key, raw, px=keep_ms)
                else:
                    pipe.eval(ORDERED_PUT, 1, redis_key, raw, keep_ms, entry.observed_ns, now)
            return await pipe.execute()

        try:
            answers = await self.bounded(store)
        except REDIS_ERRORS as exc:
            self.report_failure(exc)
            return kept
        self.report_success()
        for (key, _, _, _), answer in zip(encoded, answers, strict=True):
            if isinstance(answer, bytes):  # another writer's newer entry stayed: hold it
                kept.add(key)
                self.hold_encoded(key, answer)
        return kept

    async def ping(self) -> bool:
        try:
            await self.bounded(self._redis.ping)
        except REDIS_ERRORS as exc:
            self.report_failure(exc)
            return False
        self.report_success()
        return True

    def status(self) -> str:
        return "down" if self._down_since is not None else "up"

    async def close(self) -> None:
        """Nothing of its own to close: the client belongs to whoever built it."""

    async def bounded(self, call: Callable[[], Awaitable[R]]) -> R:
        """One Redis call (a command, a script, a pipeline: idempotent), bounded in time.

        A pooled connection closed under us (Redis restarted, an idle timeout) is dropped by
        redis-py, so the call is made once more on a fresh one; a Redis that is really away
        refuses that one too, at once, and a hung one times out and is not retried.
        """

        async def once() -> R:
            async with asyncio.timeout(self._timeout_s * 2):
                return await call()

        try:
            return await once()
        except (RedisConnectionError, ConnectionError):
            return await once()

    def redis_key(self, key: str) -> str:
        """Where `key`'s entry lives in Redis (this cache's namespace)."""
        return self._prefix + key

    def hold(self, key: str, entry: CachedValue, size: int) -> None:
        """Keep an entry this instance got without reading Redis (another instance's landing
        notice) in the near cache, as if it had been read."""
        self._near.put(key, entry, size)

    def hold_encoded(self, key: str, raw: bytes) -> None:
        """`hold` for an entry as Redis stores it; one this version cannot read is left out."""
        try:
            entry = decode(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        self._near.put(key, entry, len(raw))

    def reachable(self) -> bool:
        """False while Redis is known to be down and not yet due for a retry: skip it."""
        # While Redis is down, try it again only once per interval instead of on every request.
        return self._down_since is None or self._clock() >= self._skip_until

    def report_failure(self, exc: BaseException) -> None:
        """A Redis call failed (here or in a user of the same client): fail open, say so once."""
        self._metrics.cache_backend_error()
        self._skip_until = self._clock() + self._retry_interval_s
        if self._down_since is None:
            self._down_since = self._clock()
            self._metrics.dependency("redis", up=False)
            logger.bind(dependency="redis").warning(
                "redis unavailable ({}); serving without the cache", type(exc).__name__
            )

    def report_success(self) -> None:
        if self._down_since is not None:
            outage_s = self._clock() - self._down_since
            self._down_since = None
            self._metrics.dependency("redis", up=True)
            logger.bind(dependency="redis").info(
                "redis back after {:.1f}s; cache resumed", outage_s
            )
