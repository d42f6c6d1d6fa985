"""Cache -> single-flight -> Alpaca, for any kind of keyed market value.

The one place that decides whether a value is served from cache, joined from an in-flight call,
fetched, or (only when the client opted in with `stale_if_error_ms`) served stale after a failure.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.cache import Cache, CachedValue
from app.coalesce import SingleFlight, await_flight
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics
from app.models.provenance import CacheState

# A fetch answers each requested item with a real value (JSON-ready) or a typed failure.
Result = Any
Fetch = Callable[[list[str]], Awaitable[Mapping[str, Result]]]

# Failures that say "Alpaca could not answer": a stale value may stand in if the client asked.
STALE_ELIGIBLE = frozenset(
    {
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.UPSTREAM_TIMEOUT,
        ErrorCode.UPSTREAM_BAD_RESPONSE,
        ErrorCode.UPSTREAM_RATE_LIMITED,
        ErrorCode.CIRCUIT_OPEN,
    }
)
# Answers about the symbol itself live as long as a value would.
_FACTS = frozenset({ErrorCode.NO_DATA, ErrorCode.SYMBOL_NOT_FOUND, ErrorCode.CONTRACT_NOT_FOUND})
# Produced locally without calling Alpaca: caching them would only blur their Retry-After.
_LOCAL = frozenset(
    {ErrorCode.CIRCUIT_OPEN, ErrorCode.UPSTREAM_RATE_LIMITED, ErrorCode.UPSTREAM_NOT_CONFIGURED}
)


@dataclass(frozen=True, slots=True)
class Served:
    value: Any
    fetched_at: float
    cache: CacheState


Outcome = Served | GatewayError


class ReadThrough:
    def __init__(
        self,
        cache: Cache,
        metrics: Metrics,
        *,
        negative_ttl_s: float,
        stale_retention_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self._metrics = metrics
        self._negative_ttl_s = negative_ttl_s
        self._stale_retention_s = stale_retention_s
        self._clock = clock
        self._flights: SingleFlight[CachedValue] = SingleFlight()

    async def read(
        self,
        kind: str,
        keys: Mapping[str, str],
        fetch: Fetch,
        *,
        fresh_ttl_s: float,
        chunk_size: int,
        stale_if_error_s: float | None = None,
        refusal: Callable[[], GatewayError | None] | None = None,
    ) -> dict[str, Outcome]:
        """Outcome per item of `keys` (item -> cache key), fetching only what is not fresh.

        `refusal` says whether the upstream would refuse a call right now (breaker open, rate
        limit, no credentials); if so the misses are answered at once, without a flight.
        """
        now = self._clock()
        cached = await self.cache.get_many(list(keys.values()))
        outcomes: dict[str, Outcome] = {}
        waiting: list[tuple[str, CacheState, Any]] = []
        to_fetch: list[str] = []
        for item, key in keys.items():
            entry = cached.get(key)
            if entry is not None and entry.is_fresh(now):
                outcomes[item] = self._from_cache(kind, entry, now, stale_if_error_s)
            elif (flight := self._flights.in_flight(key)) is not None:
                waiting.append((item, "shared", flight))
            else:
                to_fetch.append(item)
        refused = refusal() if to_fetch and refusal is not None else None
        if refused is not None:
            for item in to_fetch:
                self._metrics.cache_result(kind, "miss")
                failed = CachedValue(None, 0.0, 0.0, refused)
                before = cached.get(keys[item])
                outcomes[item] = self._settle(kind, failed, "miss", before, now, stale_if_error_s)
            to_fetch = []
        for start in range(0, len(to_fetch), chunk_size):
            chunk = to_fetch[start : start + chunk_size]
            previous = {keys[i]: cached.get(keys[i]) for i in chunk}
            work = self._fly(chunk, keys, fetch, fresh_ttl_s, previous)
            flight = self._flights.start([keys[i] for i in chunk], work)
            waiting.extend((item, "miss", flight) for item in chunk)
        for item, state, flight in waiting:
            entry = (await await_flight(flight))[keys[item]]
            self._metrics.cache_result(kind, state)
            outcomes[item] = self._settle(
                kind, entry, state, cached.get(keys[item]), now, stale_if_error_s
            )
        return outcomes

    def _from_cache(
        self, kind: str, entry: CachedValue, now: float, stale_if_error_s: float | None
    ) -> Outcome:
        if entry.error is not None:
            self._metrics.cache_result(kind, "negative")
            # A remembered failure is still a failure: the client's stale opt-in applies.
            return self._settle(kind, entry, "hit", None, now, stale_if_error_s)
        self._metrics.cache_result(kind, "hit")
        return Served(entry.value, entry.fetched_at, "hit")

    def _settle(
        self,
        kind: str,
        entry: CachedValue,
        state: CacheState,
        before: CachedValue | None,
        now: float,
        stale_if_error_s: float | None,
    ) -> Outcome:
        error = entry.error
        if error is None:
            return Served(entry.value, entry.fetched_at, state)
        if stale_if_error_s is not None and error.code in STALE_ELIGIBLE:
            # The newest real value we hold, with its true fetch time; never a made-up one.
            for candidate in (entry, before):
                if (
                    candidate is not None
                    and candidate.value is not None
                    and now - candidate.fetched_at <= stale_if_error_s
                ):
                    self._metrics.cache_result(kind, "stale")
                    return Served(candidate.value, candidate.fetched_at, "stale")
        return error

    async def _fly(
        self,
        chunk: list[str],
        keys: Mapping[str, str],
        fetch: Fetch,
        fresh_ttl_s: float,
        previous: Mapping[str, CachedValue | None],
    ) -> dict[str, CachedValue]:
        try:
            results: Mapping[str, Result] = await fetch(chunk)
        except GatewayError as exc:
            results = dict.fromkeys(chunk, exc)
        fetched_at = self._clock()
        entries: dict[str, CachedValue] = {}
        writes: list[tuple[str, CachedValue, float]] = []
        for item in chunk:
            key, result = keys[item], results[item]
            if isinstance(result, GatewayError):
                entry, keep_s = self._negative(result, previous.get(key), fetched_at, fresh_ttl_s)
                if result.code not in _LOCAL:
                    writes.append((key, entry, keep_s))
            else:
                entry = CachedValue(result, fetched_at, fetched_at + fresh_ttl_s)
                writes.append((key, entry, fresh_ttl_s + self._stale_retention_s))
            entries[key] = entry
        await self.cache.put_many(writes)
        return entries

    def _negative(
        self, error: GatewayError, before: CachedValue | None, now: float, fresh_ttl_s: float
    ) -> tuple[CachedValue, float]:
        ttl_s = fresh_ttl_s if error.code in _FACTS else self._negative_ttl_s
        # Keep the last real value beside the failure: stale_if_error may still ask for it.
        value, fetched_at = (before.value, before.fetched_at) if before else (None, 0.0)
        keep_s = ttl_s + (self._stale_retention_s if value is not None else 0.0)
        return CachedValue(value, fetched_at, now + ttl_s, error), keep_s
