"""Quotes and trades from Alpaca's stream refresh the REST cache, so `/v1/stocks/{symbol}/quote`
(and the face's latest quote and trade) for a streamed symbol is served from what the stream
pushed, with no upstream call, marked `cache: "stream"` with its true times.

A streamed message becomes exactly the entry the REST path would have made of the same Alpaca
fields: the same pure parse functions read them, once they are in REST's form (`t` as its
RFC 3339 text, which is what Alpaca's REST writes; an integral float64 as the integer its JSON
writes). An entry is written only when its value is at least as new as the one the cache holds,
so an older streamed value never replaces a newer one. Values observed ahead of the gateway's
clock are refused, as on the REST path: their age would be a fiction.

The hot path only notes the newest quote and trade per symbol of each frame; a task writes them
in batches (one cache read and one write per batch), after the frame went to the clients. Only
the instance holding the feed's connection writes: the others read the shared cache.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import msgpack  # type: ignore[import-untyped]  # ships no type information
from loguru import logger

from app.alpaca.market_data import parse_quote, parse_trade, quote_is_empty
from app.background import cancel_and_wait
from app.cache import Cache, CachedValue, cache_key
from app.errors import GatewayError
from app.metrics import DataKind, Metrics
from app.models.market_data import QuoteValue
from app.streams.feeds import Feed
from app.streams.wire import Element, WireError, rfc3339

# Stream feeds whose REST twin has the same name (the cache keys' feed); `test` has none.
REST_FEEDS = frozenset({"iex", "sip", "delayed_sip"})
# Go writes an integral float64 without a fraction below this (`229`), with an exponent above.
_GO_PLAIN_INTEGER_LIMIT = 1e21
REFUSAL_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class StreamedKind:
    """How one stream message type refreshes the cache: its /v1 and face kinds, its parser."""

    v1: DataKind
    face: DataKind
    parse: Callable[[str, Any], Mapping[str, Any]]


KINDS: dict[str, StreamedKind] = {
    "q": StreamedKind("quote", "alpaca_quote", parse_quote),
    "t": StreamedKind("trade", "alpaca_trade", parse_trade),
}


def rest_fields(message: Mapping[str, Any]) -> dict[str, Any]:
    """A stream message's fields as Alpaca's REST JSON carries them: without `T` and `S`
    (REST keys objects by symbol), `t` as its RFC 3339 text, numbers as JSON reads them back.
    WireError for a number no JSON can carry (NaN, infinity)."""
    fields: dict[str, Any] = {}
    for name, value in message.items():
        if name in ("T", "S"):
            continue
        if isinstance(value, msgpack.Timestamp):
            value = rfc3339(value)
        elif isinstance(value, float):
            value = json_number(value)
        fields[name] = value
    return fields


def json_number(value: float) -> int | float:
    """A float64 as Python reads Alpaca's JSON text of it: Go writes an integral float64 below
    1e21 with no fraction (`229`), which reads back as the int 229; any other, the same float.
    The value is never changed, only its Python type."""
    if not math.isfinite(value):
        raise WireError(f"{value} is no JSON number")
    if value.is_integer() and abs(value) < _GO_PLAIN_INTEGER_LIMIT:
        return int(value)
    return value


def unix_ns(rfc3339_text: str) -> int:
    """An already validated RFC 3339 text as Unix nanoseconds, all nine digits kept (a float
    of seconds would blur two quotes a few hundred nanoseconds apart)."""
    head, dot, rest = rfc3339_text.partition(".")
    if not dot:
        return int(datetime.fromisoformat(rfc3339_text).timestamp()) * 1_000_000_000
    digits = len(rest) - len(rest.lstrip("0123456789"))
    seconds = int(datetime.fromisoformat(head + rest[digits:]).timestamp())
    return seconds * 1_000_000_000 + int(rest[:digits].ljust(9, "0"))


def observed_ns(value: Any) -> int | None:
    """When a cached value (a /v1 item or a face object) was observed; None if it says not."""
    if not isinstance(value, Mapping):
        return None
    text = value.get("timestamp", value.get("t"))
    if not isinstance(text, str):
        return None
    try:
        return unix_ns(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Offer:
    kind: DataKind
    entry: CachedValue
    keep_s: float
    observed_ns: int


class LatestRefresh:
    """Writes the stream's newest quote and trade per symbol into the REST cache."""

    def __init__(
        self,
        cache: Cache,
        metrics: Metrics,
        *,
        quote_ttl_s: float,
        trade_ttl_s: float,
        stale_retention_s: float,
        clock_skew_tolerance_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """The TTLs and retention are the REST path's own, so a streamed entry lives exactly
        as a fetched one would."""
        self._cache = cache
        self._metrics = metrics
        self._ttl_s = {"q": quote_ttl_s, "t": trade_ttl_s}
        self._stale_retention_s = stale_retention_s
        self._skew_s = clock_skew_tolerance_s
        self._clock = clock
        # (message type, feed, symbol) -> the newest message and when its frame arrived.
        self._pending: dict[tuple[str, str, str], tuple[Element, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._warned_at: dict[DataKind, float] = {}  # a refusal per kind logged each minute

    def note(self, feed: Feed, elements: Sequence[Element]) -> None:
        """A frame's market-data messages, just received: remember the last quote and trade
        of each symbol (Alpaca sends a symbol's messages in order) for the writer."""
        if feed.name not in REST_FEEDS:
            return
        received_at: float | None = None
        for element in elements:
            if element.type in KINDS and element.symbol is not None:
                if received_at is None:
                    received_at = self._clock()
                self._pending[element.type, feed.name, element.symbol] = (element, received_at)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._write(), name="stream-cache-refresh")
            self._task.add_done_callback(_report_failure)

    async def drained(self) -> None:
        """Until everything noted so far is written (or its writer failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def aclose(self) -> None:
        await cancel_and_wait([self._task])

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            await self._store(self._offers(batch))

    def _offers(
        self, batch: Mapping[tuple[str, str, str], tuple[Element, float]]
    ) -> dict[str, _Offer]:
        offers: dict[str, _Offer] = {}
        for (code, feed, symbol), (element, received_at) in batch.items():
            kind = KINDS[code]
            try:
                fields = rest_fields(element.value)
                value = kind.parse(symbol, fields)  # REST's own check: raises on a bad shape
            except (GatewayError, WireError) as exc:
                self._refused(kind, f"{symbol} on {feed}: {exc}")
                continue
            observed = unix_ns(value["timestamp"])
            if observed / 1e9 - received_at > self._skew_s:
                self._refused(kind, f"{symbol} on {feed}: observed ahead of the gateway's clock")
                continue
            ttl_s = self._ttl_s[code]
            # REST answers NO_DATA for a quote with neither side: /v1 keeps what it has. The
            # face passes Alpaca's object on as it is, so it takes it.
            targets: list[tuple[DataKind, Mapping[str, Any]]] = [(kind.face, fields)]
            if code != "q" or not quote_is_empty(cast(QuoteValue, value)):
                targets.append((kind.v1, value))
            for kind_name, cached in targets:
                entry = CachedValue(cached, received_at, received_at + ttl_s, streamed=True)
                offers[cache_key(kind_name, feed, symbol)] = _Offer(
                    kind_name, entry, ttl_s + self._stale_retention_s, observed
                )
        return offers

    async def _store(self, offers: Mapping[str, _Offer]) -> None:
        if not offers:
            return
        held = await self._cache.get_many(list(offers))
        writes = []
        for key, offer in offers.items():
            before = held.get(key)
            before_ns = None if before is None else observed_ns(before.value)
            if before_ns is not None and before_ns > offer.observed_ns:
                self._metrics.stream_cache_refresh(offer.kind, "kept_newer")
                continue
            writes.append((key, offer.entry, offer.keep_s))
            self._metrics.stream_cache_refresh(offer.kind, "stored")
        await self._cache.put_many(writes)

    def _refused(self, kind: StreamedKind, why: str) -> None:
        self._metrics.stream_cache_refresh(kind.v1, "refused")
        # A skewed clock refuses every message: one line a minute says it, the counter counts.
        now = self._clock()
        if now - self._warned_at.get(kind.v1, float("-inf")) >= REFUSAL_LOG_INTERVAL_S:
            self._warned_at[kind.v1] = now
            logger.bind(kind=kind.v1).warning("stream value not cached: {}", why)


def _report_failure(task: asyncio.Task[None]) -> None:
    # A bug must not silently stop the refresh: say so; the next frame starts a new writer.
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.opt(exception=exc).error("stream cache refresh failed")
