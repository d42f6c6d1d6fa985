"""The one template for latest values: quotes, trades, snapshots and option quotes.

Each kind says how Alpaca is asked (a multi-symbol endpoint), why a symbol it omitted is missing,
and where its observation times are; the template does the rest the same way for all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic

from app.cache import cache_key
from app.errors import ErrorCode, GatewayError
from app.metrics import DataKind
from app.reads.read_through import ObservedTimes, Outcome, ReadThrough, V

# (symbols, feed) -> each symbol's value, or None where Alpaca had none (one upstream call).
LatestFetch = Callable[[Sequence[str], str], Awaitable[Mapping[str, V | None]]]
# The symbols Alpaca had no value for -> why (NO_DATA, SYMBOL_NOT_FOUND, or the lookup's error).
Explain = Callable[[Sequence[str]], Awaitable[dict[str, GatewayError]]]


@dataclass(frozen=True, slots=True)
class LatestKind(Generic[V]):
    kind: DataKind
    fetch: LatestFetch[V]
    explain: Explain
    # Whether the upstream would refuse a call right now (breaker, rate limit, no credentials).
    refusal: Callable[[], GatewayError | None]
    observed: ObservedTimes[V]
    ttl_s: float
    symbols_per_call: int


class LatestReads(Generic[V]):
    def __init__(self, read_through: ReadThrough, kind: LatestKind[V]) -> None:
        self._reads = read_through
        self._kind = kind

    def answer_now(
        self, symbol: str, feed: str, stale_if_error_s: float | None
    ) -> Outcome[V] | None:
        """The hot paths, without a task or a flight: a fresh value this process holds, or the
        refusal of an upstream that takes no calls now for a symbol it never held. None: ask
        `read`."""
        kind = self._kind
        key = cache_key(kind.kind, feed, symbol)
        return self._reads.cached(kind.kind, key) or self._reads.refused_now(
            kind.kind, key, kind.refusal, stale_if_error_s
        )

    async def read(
        self, symbols: Sequence[str], feed: str, stale_if_error_s: float | None
    ) -> dict[str, Outcome[V]]:
        """Each symbol's latest value or typed failure; `feed` is part of every cache key."""
        kind = self._kind

        async def one(symbol: str) -> V | GatewayError:
            try:
                return (await fetch([symbol]))[symbol]
            except GatewayError as exc:
                return exc.for_symbol(symbol)

        async def fetch(chunk: list[str]) -> dict[str, V | GatewayError]:
            try:
                found = await kind.fetch(chunk, feed)
            except GatewayError as exc:
                if exc.code is not ErrorCode.VALIDATION_ERROR or len(chunk) == 1:
                    raise
                # Alpaca refused one symbol and failed them all: ask for each on its own so
                # only the symbol it refuses gets the error.
                singles = await asyncio.gather(*(one(s) for s in chunk))
                return dict(zip(chunk, singles, strict=True))
            values: dict[str, V | GatewayError] = {s: v for s, v in found.items() if v is not None}
            explained = await kind.explain([s for s in chunk if s not in values])
            return values | explained

        return await self._reads.read(
            kind.kind,
            {s: cache_key(kind.kind, feed, s) for s in symbols},
            fetch,
            fresh_ttl_s=kind.ttl_s,
            chunk_size=kind.symbols_per_call,
            stale_if_error_s=stale_if_error_s,
            refusal=kind.refusal,
            observed=kind.observed,
            ordered=True,
        )
