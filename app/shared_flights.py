"""One upstream call per key across gateway instances, arranged in Redis.

`SingleFlight` (app/coalesce.py) shares a call among one process's requests; replicas on one
Redis would still make one call each. Here a process's flight first claims each key's lease in
Redis (`SET NX PX` with a token of its own, in a script that first looks for a value stored
meanwhile). It calls Alpaca only for the keys whose lease it won, renewing those leases while
the call lasts, and lands each one with a script that stores the entry, releases the lease if it
is still ours (compare-and-delete) and publishes a landing notice carrying the entry, or no
entry when there is nothing to share (an answer given without Alpaca: the next claimer decides
for itself). Keys another instance holds are waited for: a notice wakes the wait, and a claim
every `poll_s` is the backstop that finds a value whose notice was missed or takes the lease
over once its holder released it or died (a dead holder's lease lapses within `lease_s`).
A wait is bounded by `wait_s`; past it the key is UPSTREAM_TIMEOUT, because its holder is alive
(its lease is renewed) and still waiting for Alpaca: a call of our own would only add load to
a slow upstream, and our own call would answer no sooner than its timeout either.

Every script touches one value key and its lease, which share a Redis Cluster slot: the lease
key's hash tag is the whole value key (`gw:lease:{gw:v1:quote:iex:AAPL}`). A key with a brace
of its own cannot be tagged that way and is fetched without coordination.

Redis is an optimisation here as for the cache: while it is down, or when a call to it fails,
a flight calls Alpaca itself, exactly as a single instance does. But a miss that goes alone is
an extra call to Alpaca, and the moment many instances miss together (a cold burst) is the
moment their event loops lag: a Redis answer read late because the loop was busy parsing a few
hundred requests is not an outage. So coordination keeps its own view of Redis, apart from the
cache's fail-fast one: its own client (the lifespan's coordination client, whose socket timeout
is half a lease), each claim, renewal or landing bounded by half a lease (a slower claim would
find its lease half gone anyway), and only a failure of its own makes the next claims skip
Redis for a retry interval. A landing is always attempted: skipping it would leave
every other instance waiting out the lease and then calling again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, TypeAlias

from loguru import logger
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from app.background import cancel_and_wait
from app.cache import HELD_IS_NEWER_LUA, REDIS_ERRORS, CachedValue, RedisCache, decode, encode
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics

# How a flight's key was answered: a call of this instance, another instance's call, or a value
# stored before the lease was even claimed.
Origin = Literal["miss", "shared", "hit"]
Landed: TypeAlias = dict[str, tuple[CachedValue, Origin]]
Writes: TypeAlias = list[tuple[str, CachedValue, float]]  # (key, entry, keep_s) to store
# Calls Alpaca for these keys: every key's entry, and which of them to store.
FetchEntries: TypeAlias = Callable[[list[str]], Awaitable[tuple[dict[str, CachedValue], Writes]]]

# KEYS: the value, its lease. ARGV: token, lease ms, now, flight start (unix s). {1, entry}: an
# entry is stored that is fresh, or was fetched since this flight began, as a landing notice
# would have brought it (nothing claimed); {2}: the lease is ours; {0}: another instance holds it.
_CLAIM = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, doc = pcall(cjson.decode, raw)
  if ok and type(doc) == 'table' and type(doc['u']) == 'number' and type(doc['f']) == 'number'
      and (doc['u'] > tonumber(ARGV[3]) or doc['f'] >= tonumber(ARGV[4])) then
    return {1, raw}
  end
end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] or (not holder and redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])) then
  return {2}
end
return {0}
"""
# KEYS: the lease. ARGV: token, lease ms. Renews the lease only while it is still ours.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: the value, its lease. ARGV: token, entry ('' for none), keep ms, channel, key, observed
# ns ('' for an unordered entry), now (unix s).
# Stores the entry (ours is real even if the lease lapsed meanwhile) unless it is an ordered
# one and the entry held is fresh and observed later (app/cache.py), releases the lease if it
# is still ours, and tells every instance of the entry the key holds now:
# "<len(key)>:<key><entry>". Answers 1, or the held entry that stayed.
_LAND = (
    HELD_IS_NEWER_LUA
    + """
local entry = ARGV[2]
if entry ~= '' then
  local held = ARGV[6] ~= '' and redis.call('GET', KEYS[1])
  if held and held_is_newer(held, ARGV[6], tonumber(ARGV[7])) then
    entry = held
  else
    redis.call('SET', KEYS[1], entry, 'PX', ARGV[3])
  end
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[4], string.len(ARGV[5]) .. ':' .. ARGV[5] .. entry)
if entry ~= ARGV[2] then
  return entry
end
return 1
"""
)
_WON, _FOUND = 2, 1


def lease_key(value_key: str) -> str:
    """The lease of a value key (`gw:v1:quote:iex:AAPL` -> `gw:lease:{gw:v1:quote:iex:AAPL}`):
    in the value's namespace, and hash-tagged to the value's own Cluster slot."""
    namespace = value_key.partition(":")[0]
    return f"{namespace}:lease:{{{value_key}}}"


def coordinated(key: str) -> bool:
    """Whether `key` can be coordinated: a brace in it would break the lease's hash tag."""
    return "{" not in key and "}" not in key


def notice(key: str, raw: bytes) -> bytes:
    """A landing notice, as the landing script publishes it (tests and the parser use it)."""
    encoded = key.encode()
    return b"%d:%s%s" % (len(encoded), encoded, raw)


def parse_notice(message: bytes) -> tuple[str, bytes]:
    """(key, encoded entry or b"" when the key was released without one)."""
    length, _, rest = message.partition(b":")
    size = int(length)
    return rest[:size].decode(), rest[size:]


class _Watch:
    """The landing notices one flight is waiting for, delivered by the listener."""

    def __init__(self) -> None:
        self.notices: dict[str, bytes] = {}
        self.arrived = asyncio.Event()

    async def next(self, keys: Sequence[str], timeout_s: float) -> dict[str, bytes]:
        """Notices for `keys`, waiting up to `timeout_s` for the first when none is here."""
        if not any(key in self.notices for key in keys):
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.arrived.wait()
        return {key: self.notices.pop(key) for key in keys if key in self.notices}


class SharedFlights:
    def __init__(
        self,
        client: Redis | RedisCluster,
        cache: RedisCache,
        metrics: Metrics,
        *,
        owner: str,
        lease_s: float,
        wait_s: float,
        poll_s: float,
        channel: str,
        retry_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`client` and `cache` are the lifespan's (a failure met here is reported to the cache
        too, which then skips Redis for its own reads; the cache's view never stops a claim).
        `owner` names this instance in its lease tokens, so an operator reading a lease sees
        who is fetching."""
        self._redis = client
        self._cache = cache
        self._metrics = metrics
        self._owner = owner
        self._lease_ms = max(1, int(lease_s * 1000))
        self._renew_s = lease_s / 3
        # Half a lease: a claim answered later than that would find its lease half gone.
        self._timeout_s = lease_s / 2
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._channel = channel
        self._retry_interval_s = retry_interval_s
        self._skip_until: float | None = None  # claims skip Redis until then, after a failure
        self._clock = clock
        self._wall_clock = wall_clock
        self._watches: dict[str, list[_Watch]] = {}
        self._listener: asyncio.Task[None] | None = None

    # --- the lifespan's part ------------------------------------------------------------------
    def start(self) -> None:
        """Start listening for landing notices (until `aclose`)."""
        self._listener = asyncio.create_task(self._listen(), name="shared-flights")

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        await cancel_and_wait([listener])

    async def _listen(self) -> None:
        lost = False
        while True:
            try:
                if isinstance(self._redis, RedisCluster):
                    # A cluster's pubsub picks its node from the slot map, which redis-py
                    # fills only on a first command; without it SUBSCRIBE fails (KeyError).
                    await self._redis.initialize()
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    if lost:
                        lost = False
                        logger.bind(dependency="redis").info("landing notices resumed")
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        if message is not None and message["type"] == "message":
                            self._deliver(message["data"])
            except REDIS_ERRORS as exc:
                # Waits fall back on polling meanwhile; the cache counts the outage itself.
                if not lost:
                    lost = True
                    logger.bind(dependency="redis").warning(
                        "landing notices lost ({}); flights poll Redis until they resume",
                        type(exc).__name__,
                    )
                await asyncio.sleep(self._retry_interval_s)

    def _deliver(self, message: bytes) -> None:
        try:
            key, raw = parse_notice(message)
        except (ValueError, UnicodeDecodeError):
            return  # not a notice of ours (another version): the poll still finds the value
        for watch in self._watches.get(key, ()):
            watch.notices[key] = raw
            watch.arrived.set()

    @contextlib.contextmanager
    def _watching(self, keys: Sequence[str]) -> Iterator[_Watch]:
        # Registered before the first claim: a notice published after it is never missed.
        watch = _Watch()
        for key in keys:
            self._watches.setdefault(key, []).append(watch)
        try:
            yield watch
        finally:
            for key in keys:
                watches = self._watches[key]
                watches.remove(watch)
                if not watches:
                    del self._watches[key]

    # --- a flight -----------------------------------------------------------------------------
    async def fly(self, keys: Sequence[str], fetch: FetchEntries) -> Landed:
        """Each key's entry: fetched here for the keys whose lease this flight wins, another
        instance's for the keys it holds, or UPSTREAM_TIMEOUT when that took over `wait_s`."""
        landed: Landed = {}
        calls: list[asyncio.Task[None]] = []
        alone = [key for key in keys if not coordinated(key)]
        if alone:
            calls.append(asyncio.create_task(self._alone(alone, fetch, landed)))
        try:
            shared = [key for key in keys if coordinated(key)]
            if shared:
                await self._coordinate(shared, fetch, landed, calls)
        finally:
            # Our calls run to the end whatever happened here: they hold leases others wait on.
            done = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome  # a bug, not an answer: every joiner gets it, as in-process
        return landed

    async def _coordinate(
        self,
        keys: Sequence[str],
        fetch: FetchEntries,
        landed: Landed,
        calls: list[asyncio.Task[None]],
    ) -> None:
        token = f"{self._owner}:{secrets.token_hex(8)}"
        started = self._clock()
        since = repr(self._wall_clock())
        deadline = started + self._wait_s
        pending = list(keys)
        first = True
        with self._watching(keys) as watch:
            while pending:
                claim = await self._claim(pending, token, since)
                if claim is None:  # Redis is down or failed: as a single instance does
                    calls.append(asyncio.create_task(self._alone(pending, fetch, landed)))
                    return
                found, won, pending = claim
                for key, entry in found.items():
                    landed[key] = (entry, "hit" if first else "shared")
                    if not first:
                        self._counted("followed", started)
                if won:
                    lead = self._lead(won, token, fetch, landed, first, started)
                    calls.append(asyncio.create_task(lead))
                first = False
                if not pending:
                    return
                if self._clock() >= deadline:
                    for key in pending:
                        landed[key] = (CachedValue(None, 0.0, 0.0, self._timed_out()), "shared")
                        self._counted("timed_out", started)
                    return
                pending = await self._await_notices(watch, pending, landed, deadline, started)

    async def _await_notices(
        self,
        watch: _Watch,
        pending: list[str],
        landed: Landed,
        deadline: float,
        started: float,
    ) -> list[str]:
        """Wait for landings until the next poll is due or a lease is released; the keys still
        to claim again."""
        next_poll = min(self._clock() + self._poll_s, deadline)
        while pending:
            remaining_s = next_poll - self._clock()
            if remaining_s <= 0:
                break
            notices = await watch.next(pending, remaining_s)
            released = False
            for key, raw in notices.items():
                entry = self._readable(key, raw) if raw else None
                if entry is None:
                    released = True  # nothing to share: claim it again now
                    continue
                landed[key] = (entry, "shared")
                pending.remove(key)
                self._counted("followed", started)
            if released:
                break
        return pending

    def _readable(self, key: str, raw: bytes) -> CachedValue | None:
        try:
            entry = decode(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # another version's entry: claim again, as for a release
        self._cache.hold(key, entry, len(raw))
        return entry

    async def _claim(
        self, keys: Sequence[str], token: str, since: str
    ) -> tuple[dict[str, CachedValue], list[str], list[str]] | None:
        """(entries found, keys won, keys held elsewhere), or None if Redis failed."""
        if self._skip_until is not None and self._clock() < self._skip_until:
            return None  # failed a moment ago: no round trip until the retry interval is up
        now = repr(self._wall_clock())
        calls = []
        for key in keys:
            value_key = self._cache.redis_key(key)
            calls.append(((value_key, lease_key(value_key)), (token, self._lease_ms, now, since)))
        answers = await self._run(_CLAIM, calls)
        if answers is None:
            return None
        found: dict[str, CachedValue] = {}
        won: list[str] = []
        held: list[str] = []
        for key, answer in zip(keys, answers, strict=True):
            if answer[0] == _WON:
                won.append(key)
            elif answer[0] == _FOUND and (entry := self._readable(key, answer[1])) is not None:
                found[key] = entry
            else:
                held.append(key)
        return found, won, held

    async def _lead(
        self,
        keys: list[str],
        token: str,
        fetch: FetchEntries,
        landed: Landed,
        first: bool,
        started: float,
    ) -> None:
        async with self._renewing(keys, token):
            try:
                entries, writes = await fetch(keys)
            except Exception:
                await self._land(keys, token, [])  # let the next claimer try at once
                raise
        await self._land(keys, token, writes)
        for key in keys:
            landed[key] = (entries[key], "miss")
            if first:
                self._metrics.shared_flight("led")
            else:
                self._counted("took_over", started)

    @contextlib.asynccontextmanager
    async def _renewing(self, keys: Sequence[str], token: str) -> AsyncIterator[None]:
        """Keep the leases alive while the call lasts: however long Alpaca takes, nobody else
        calls, and if this process dies they lapse within one lease."""
        renewer = asyncio.create_task(self._renew(keys, token))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, keys: Sequence[str], token: str) -> None:
        while True:
            await asyncio.sleep(self._renew_s)
            leases = [lease_key(self._cache.redis_key(key)) for key in keys]
            await self._run(_EXTEND, [((lease,), (token, self._lease_ms)) for lease in leases])

    async def _land(self, keys: Sequence[str], token: str, writes: Writes) -> None:
        """Store, release and announce; the entries stay in the near cache whatever Redis does."""
        stored: dict[str, tuple[bytes, float, int | None]] = {}
        for key, entry, keep_s in writes:
            raw = encode(entry)
            self._cache.hold(key, entry, len(raw))
            stored[key] = (raw, keep_s, entry.observed_ns)
        # Tried even while claims skip Redis: the leases were won, so Redis answered lately,
        # and every instance waiting on them would otherwise wait out the lease and call again.
        calls = []
        now = self._wall_clock()
        for key in keys:
            raw, keep_s, observed_ns = stored.get(key, (b"", 0.0, None))
            value_key = self._cache.redis_key(key)
            keep_ms = max(1, int(keep_s * 1000))
            ordered = "" if observed_ns is None else observed_ns
            args = (token, raw, keep_ms, self._channel, key, ordered, now)
            calls.append(((value_key, lease_key(value_key)), args))
        answers = await self._run(_LAND, calls)
        for key, answer in zip(keys, answers or (), strict=False):
            if isinstance(answer, bytes):  # a newer entry stayed (ordered writes): hold it
                self._cache.hold_encoded(key, answer)

    async def _run(
        self, script: str, calls: Sequence[tuple[tuple[str, ...], tuple[Any, ...]]]
    ) -> list[Any] | None:
        """One pipeline of `script` over (keys, args) calls, bounded by half a lease: the
        answers, or None when Redis failed (claims then skip Redis for a retry interval, and
        the cache is told)."""

        async def execute() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.eval(script, len(keys), *keys, *args)
            return await pipe.execute()

        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    answers = await execute()
                except (RedisConnectionError, ConnectionError):
                    # A pooled connection Redis closed (a restart): once more, on a fresh one.
                    answers = await execute()
        except REDIS_ERRORS as exc:
            self._skip_until = self._clock() + self._retry_interval_s
            self._cache.report_failure(exc)
            return None
        self._skip_until = None
        self._cache.report_success()
        return answers

    async def _alone(self, keys: list[str], fetch: FetchEntries, landed: Landed) -> None:
        entries, writes = await fetch(keys)
        await self._cache.put_many(writes)
        for key in keys:
            landed[key] = (entries[key], "miss")
            self._metrics.shared_flight("unshared")

    def _counted(self, result: Literal["followed", "took_over", "timed_out"], since: float) -> None:
        self._metrics.shared_flight(result, waited_s=self._clock() - since)

    def _timed_out(self) -> GatewayError:
        return GatewayError(
            ErrorCode.UPSTREAM_TIMEOUT,
            "Another gateway instance is fetching this value from Alpaca and it did not arrive"
            f" within {self._wait_s:g} s",
        )
