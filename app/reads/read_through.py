"""Cache -> single-flight -> Alpaca, for any kind of keyed market value.

The one place that decides whether a value is served from cache, joined from an in-flight call
(this process's, or with Redis another instance's), fetched, or (only when the client opted in
with `stale_if_error_ms`) served stale after a failure.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from app.alpaca.wire import epoch_ns, epoch_seconds
from app.cache import Cache, CachedValue
from app.coalesce import SingleFlight, await_flight
from app.errors import (
    ALPACA_UNWELL,
    ANSWERED_WITHOUT_ALPACA,
    HELD_BACK,
    SYMBOL_FACTS,
    ErrorCode,
    GatewayError,
)
from app.metrics import DataKind, Metrics
from app.models.provenance import CacheState
from app.shared_flights import Landed, SharedFlights, Writes

# The value of one kind (a QuoteValue, a BarSeriesValue, ...): JSON-ready, exactly as parsed.
V = TypeVar("V")
# A fetch answers each requested item with a real value or a typed failure.
Fetch: TypeAlias = Callable[[list[str]], Awaitable[Mapping[str, V | GatewayError]]]
# The observation times (Alpaca's RFC 3339 text) a value carries, checked against our clock.
ObservedTimes: TypeAlias = Callable[[V], Iterable[str]]

# Failures that say "Alpaca could not answer": a stale value may stand in if the client asked.
STALE_ELIGIBLE = ALPACA_UNWELL | HELD_BACK


@dataclass(frozen=True, slots=True)
class Served(Generic[V]):
    value: V
    fetched_at: float  # unix seconds when Alpaca's answer arrived (whichever instance asked)
    cache: CacheState
    # The cache entry's memo (what the API encoded of it once); None for values not cached.
    memo: dict[Any, Any] | None = field(default=None, compare=False, repr=False)


Outcome: TypeAlias = Served[V] | GatewayError
# How an item was looked up: a value or failure from cache, a call of our own, or one joined.
Lookup = Literal["hit", "negative", "miss", "shared"]


class ReadThrough:
    def __init__(
        self,
        cache: Cache,
        metrics: Metrics,
        *,
        negative_ttl_s: float,
        stale_retention_s: float,
        clock_skew_tolerance_s: float = 1.0,
        max_flight_keys: int = 10_000,
        shared: SharedFlights | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`max_flight_keys` bounds the keys being fetched at once (the single-flight table);
        past it a miss is held back (UPSTREAM_RATE_LIMITED, retry in a second), not queued.
        `shared` (with Redis) makes a flight one call across instances, not one per instance."""
        self.cache = cache
        self._max_flight_keys = max_flight_keys
        self._metrics = metrics
        self._negative_ttl_s = negative_ttl_s
        self._stale_retention_s = stale_retention_s
        self._skew_s = clock_skew_tolerance_s
        self._clock = clock
        self._shared = shared
        # Each key's entry and how this flight got it (its own call, another instance's, a
        # value stored meanwhile).
        self._flights: SingleFlight[tuple[CachedValue, Lookup]] = SingleFlight()

    def flights(self) -> int:
        """Keys being fetched right now."""
        return len(self._flights)

    def cached(self, kind: DataKind, key: str) -> Served[Any] | None:
        """A fresh value this process already holds for `key`, answered without I/O or a task;
        None sends the caller down `read` (a miss, a remembered failure, or Redis to ask)."""
        entry = self.cache.peek(key)
        if entry is None or entry.error is not None or not entry.is_fresh(self._clock()):
            return None
        self._metrics.cache_result(kind, "hit")
        return Served(entry.value, entry.fetched_at, _hit(entry), entry.memo)

    def refused_now(
        self,
        kind: DataKind,
        key: str,
        refusal: Callable[[], GatewayError | None],
        stale_if_error_s: float | None,
    ) -> GatewayError | None:
        """A key this process has never held, whose upstream refuses calls right now (breaker
        open, rate-limit hold): the refusal, decided without I/O or a task. None when `read`
        must decide (the cache is shared, something is held, or a stale value was asked for).
        """
        if stale_if_error_s is not None or not self.cache.conclusive_peek:
            return None
        if self.cache.peek(key) is not None or self._flights.in_flight(key) is not None:
            return None
        refused = refusal()
        if refused is not None:
            self._metrics.cache_result(kind, "miss")
        return refused

    async def read(
        self,
        kind: DataKind,
        keys: Mapping[str, str],
        fetch: Fetch[V],
        *,
        fresh_ttl_s: float,
        chunk_size: int,
        stale_if_error_s: float | None = None,
        refusal: Callable[[], GatewayError | None] | None = None,
        observed: ObservedTimes[V] | None = None,
        ordered: bool = False,
    ) -> dict[str, Outcome[V]]:
        """Outcome per item of `keys` (item -> cache key), fetching only what is not fresh.

        `refusal` says whether the upstream would refuse a call right now (breaker open, rate
        limit, no credentials); if so the misses are answered at once, without a flight.
        `observed` names a fetched value's observation times: one ahead of our clock by more
        than the skew tolerance is refused (UPSTREAM_BAD_RESPONSE), never cached or served.
        `ordered` (latest values, with `observed`): the entries are ordered writes, so an answer
        never replaces a fresh entry observed later (one the stream pushed meanwhile).
        """
        order_by = observed if ordered else None
        now = self._clock()
        outcomes: dict[str, Outcome[V]] = {}
        waiting: list[tuple[str, Lookup, Any]] = []
        to_fetch: list[str] = []
        # What this process holds or is already fetching needs no I/O: only the rest is asked
        # of the cache, so a cold burst costs Redis one read per instance, not one per request.
        cached: dict[str, CachedValue] = {}
        ask: list[str] = []
        for item, key in keys.items():
            entry = self.cache.peek(key)
            if entry is not None:
                cached[key] = entry
            if entry is not None and entry.is_fresh(now):
                outcomes[item] = self._from_cache(kind, entry, now, stale_if_error_s)
            elif (flight := self._flights.in_flight(key)) is not None:
                waiting.append((item, "shared", flight))
            else:
                ask.append(item)
        if ask:
            cached |= await self.cache.get_many([keys[item] for item in ask])
        for item in ask:
            entry = cached.get(keys[item])
            if entry is not None and entry.is_fresh(now):
                outcomes[item] = self._from_cache(kind, entry, now, stale_if_error_s)
            elif (flight := self._flights.in_flight(keys[item])) is not None:
                waiting.append((item, "shared", flight))  # started while the cache answered
            else:
                to_fetch.append(item)
        refused = refusal() if to_fetch and refusal is not None else None
        if refused is not None:
            for item in to_fetch:
                failed = CachedValue(None, 0.0, 0.0, refused)
                before = cached.get(keys[item])
                outcomes[item] = self._settle(kind, failed, "miss", before, now, stale_if_error_s)
            to_fetch = []
        for start in range(0, len(to_fetch), chunk_size):
            chunk = to_fetch[start : start + chunk_size]
            if len(self._flights) + len(chunk) > self._max_flight_keys:
                held = CachedValue(None, 0.0, 0.0, _too_many_in_flight())
                for item in chunk:
                    before = cached.get(keys[item])
                    outcomes[item] = self._settle(kind, held, "miss", before, now, stale_if_error_s)
                continue
            previous = {keys[i]: cached.get(keys[i]) for i in chunk}
            work = self._fly(chunk, keys, fetch, fresh_ttl_s, previous, observed, order_by)
            flight = self._flights.start([keys[i] for i in chunk], work)
            waiting.extend((item, "miss", flight) for item in chunk)
        for item, joined, flight in waiting:
            entry, origin = (await await_flight(flight))[keys[item]]
            # A joiner shares whatever its flight got; the request that started it says how.
            state: Lookup = "shared" if joined == "shared" else origin
            if state == "hit" and entry.error is not None:
                state = "negative"
            outcomes[item] = self._settle(
                kind, entry, state, cached.get(keys[item]), now, stale_if_error_s
            )
        return outcomes

    def _from_cache(
        self, kind: DataKind, entry: CachedValue, now: float, stale_if_error_s: float | None
    ) -> Outcome[Any]:
        if entry.error is not None:
            # A remembered failure is still a failure: the client's stale opt-in applies.
            return self._settle(kind, entry, "negative", None, now, stale_if_error_s)
        self._metrics.cache_result(kind, "hit")
        return Served(entry.value, entry.fetched_at, _hit(entry), entry.memo)

    def _settle(
        self,
        kind: DataKind,
        entry: CachedValue,
        state: Lookup,
        before: CachedValue | None,
        now: float,
        stale_if_error_s: float | None,
    ) -> Outcome[Any]:
        """The answer for one looked-up item, counted once under the result it ended with."""
        error = entry.error
        if error is None:
            counted = "hit" if state == "negative" else state
            self._metrics.cache_result(kind, counted)
            served_as = _hit(entry) if counted == "hit" else counted
            return Served(entry.value, entry.fetched_at, served_as, entry.memo)
        if stale_if_error_s is not None and error.code in STALE_ELIGIBLE:
            # The newest real value we hold, with its true fetch time; never a made-up one.
            for candidate in (entry, before):
                if (
                    candidate is not None
                    and candidate.value is not None
                    and now - candidate.fetched_at <= stale_if_error_s
                ):
                    self._metrics.cache_result(kind, "stale")
                    return Served(candidate.value, candidate.fetched_at, "stale", candidate.memo)
        self._metrics.cache_result(kind, state)
        # A copy per answer: the remembered failure is shared by every request that meets it.
        return error.fresh()

    async def _fly(
        self,
        chunk: list[str],
        keys: Mapping[str, str],
        fetch: Fetch[V],
        fresh_ttl_s: float,
        previous: Mapping[str, CachedValue | None],
        observed: ObservedTimes[V] | None,
        order_by: ObservedTimes[V] | None,
    ) -> Landed:
        """The flight of one chunk: with shared flights, Alpaca is called only for the keys no
        other instance is fetching; without, for all of them."""
        items = {keys[item]: item for item in chunk}

        async def call(wanted: list[str]) -> tuple[dict[str, CachedValue], Writes]:
            asked = [items[key] for key in wanted]
            return await self._fetch(asked, keys, fetch, fresh_ttl_s, previous, observed, order_by)

        if self._shared is not None:
            return await self._shared.fly(list(items), call)
        entries, writes = await call(list(items))
        await self.cache.put_many(writes)
        return {key: (entry, "miss") for key, entry in entries.items()}

    async def _fetch(
        self,
        chunk: list[str],
        keys: Mapping[str, str],
        fetch: Fetch[V],
        fresh_ttl_s: float,
        previous: Mapping[str, CachedValue | None],
        observed: ObservedTimes[V] | None,
        order_by: ObservedTimes[V] | None,
    ) -> tuple[dict[str, CachedValue], Writes]:
        """One upstream call for `chunk`: each key's entry, and the entries to store (ordered
        by `order_by`'s newest time when given)."""
        try:
            results: Mapping[str, V | GatewayError] = await fetch(chunk)
        except GatewayError as exc:
            results = dict.fromkeys(chunk, exc)
        fetched_at = self._clock()
        entries: dict[str, CachedValue] = {}
        writes: Writes = []
        for item in chunk:
            key, result = keys[item], results[item]
            if observed is not None and not isinstance(result, GatewayError):
                result = self._ahead_of_clock(item, result, observed, fetched_at) or result
            if isinstance(result, GatewayError):
                before = previous.get(key)
                entry, keep_s = self._negative(result, before, fetched_at, fresh_ttl_s)
                if order_by is not None:
                    # A failure orders as the value it keeps beside it (none: before any value),
                    # so it never hides a value the stream pushed meanwhile.
                    kept_ns = (
                        0 if before is None or before.value is None else before.observed_ns or 0
                    )
                    entry = replace(entry, observed_ns=kept_ns)
                if result.code not in ANSWERED_WITHOUT_ALPACA:
                    writes.append((key, entry, keep_s))
            else:
                observed_ns = None
                if order_by is not None:
                    # Never below 0: Go's zero time (year 1) is a time, and Lua reads digits.
                    observed_ns = max((max(0, epoch_ns(t)) for t in order_by(result)), default=None)
                entry = CachedValue(
                    result, fetched_at, fetched_at + fresh_ttl_s, observed_ns=observed_ns
                )
                writes.append((key, entry, fresh_ttl_s + self._stale_retention_s))
            entries[key] = entry
        return entries, writes

    def _ahead_of_clock(
        self, item: str, value: V, observed: ObservedTimes[V], fetched_at: float
    ) -> GatewayError | None:
        """A value observed in our future cannot be given a true age, so it is not data.

        Exchange and Alpaca clocks differ from ours by a little; past the tolerance the time is
        wrong (theirs or ours) and an age computed from it would be a fiction (negative, and
        passing any max_age_ms).
        """
        newest = max((epoch_seconds(t) for t in observed(value)), default=None)
        if newest is None or newest - fetched_at <= self._skew_s:
            return None
        ahead_ms = int((newest - fetched_at) * 1000)
        return GatewayError(
            ErrorCode.UPSTREAM_BAD_RESPONSE,
            f"Alpaca's value for {item} is observed {ahead_ms} ms after the gateway's clock "
            f"(tolerance {int(self._skew_s * 1000)} ms); not served as data",
            symbol=item,
            extensions={"ahead_ms": ahead_ms},
        )

    def _negative(
        self, error: GatewayError, before: CachedValue | None, now: float, fresh_ttl_s: float
    ) -> tuple[CachedValue, float]:
        ttl_s = fresh_ttl_s if error.code in SYMBOL_FACTS else self._negative_ttl_s
        # Keep the last real value beside the failure: stale_if_error may still ask for it.
        value, fetched_at = (before.value, before.fetched_at) if before else (None, 0.0)
        keep_s = ttl_s + (self._stale_retention_s if value is not None else 0.0)
        # Remembered without the traceback of the call that failed: it may live for an hour.
        return CachedValue(value, fetched_at, now + ttl_s, error.fresh()), keep_s


def _hit(entry: CachedValue) -> CacheState:
    """A value served from the cache: a hit, or `stream` when Alpaca's stream put it there."""
    return "stream" if entry.streamed else "hit"


def _too_many_in_flight() -> GatewayError:
    return GatewayError(
        ErrorCode.UPSTREAM_RATE_LIMITED,
        "Too many values are being fetched from Alpaca at once; retry in a moment",
        retry_after_s=1,
    )
