"""Quotes and trades from Alpaca's stream refresh the REST cache, so `/v1/stocks/{symbol}/quote`
and `/v1/options/{contract}/quote` (and the face's latest quotes and trades) for a streamed
symbol are served from what the stream pushed, with no upstream call, marked `cache: "stream"`
with their true times.

A streamed message becomes exactly the entry the REST path would have made of the same Alpaca
fields: the same pure parse functions read them, once they are in REST's form (`t` as its
RFC 3339 text, which is what Alpaca's REST writes; an integral float64 as the integer its JSON
writes). Entries are ordered writes (app/cache.py): one never replaces a fresh entry observed
later, checked and written in one step, so an older streamed value never replaces a newer one
and a REST answer landing late never replaces a newer streamed one. Values observed ahead of
the gateway's clock are refused, as on the REST path: their age would be a fiction.

The hot path only notes the newest quote and trade per symbol of each frame; a task writes them
in batches (one cache call per batch), after the frame went to the clients. Only the instance
holding the feed's connection writes: the others read the shared cache.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
from loguru import logger

from app.alpaca.market_data import parse_quote, parse_trade, quote_is_empty
from app.alpaca.options import option_quote_is_empty, parse_option_quote, parse_option_trade
from app.alpaca.wire import epoch_ns
from app.background import cancel_and_wait
from app.cache import Cache, CachedValue, cache_key
from app.errors import GatewayError
from app.metrics import DataKind, Metrics
from app.streams.feeds import Feed, FeedFamily
from app.streams.wire import Element, WireError, rfc3339

# Stream feeds whose REST twin has the same name (the cache keys' feed); `test` has none.
REST_FEEDS = frozenset({"iex", "sip", "delayed_sip", "indicative", "opra"})
# Go writes an integral float64 without a fraction below this (`229`), with an exponent above.
_GO_PLAIN_INTEGER_LIMIT = 1e21
REFUSAL_LOG_INTERVAL_S = 60.0
# Stock trade conditions that update the last price on both SIP plans: regular sale (`@`, or a
# blank on some tapes) and intermarket sweep (`F`). Alpaca's latest trade leaves out trades whose
# conditions do not update the bar (an odd lot `I`, form T `T`, average price `W`, ...), so a
# streamed trade with any other condition is not what REST would answer: it is not cached, and
# the REST path keeps answering for the symbol. Deliberately narrow: a trade left out costs a
# REST call, one let in wrongly would be a value REST never gives.
LAST_UPDATING_CONDITIONS = frozenset({"@", " ", "F"})


@dataclass(frozen=True, slots=True)
class StreamedKind:
    """How one stream message type of one feed family refreshes the cache: the face's kind,
    /v1's kind and the REST parser that makes its value, and how long the REST path keeps
    both."""

    face: DataKind
    v1: DataKind | None  # None: /v1 serves no such latest value (option trades)
    parse: Callable[[str, Any], Mapping[str, Any]]
    # A quote with neither side, which /v1 answers NO_DATA for: /v1 keeps what it has.
    is_empty: Callable[[Any], bool] | None
    ttl_s: float
    # Whether REST's latest value could be this message (None: any message of the type).
    is_latest: Callable[[Mapping[str, Any]], bool] | None = None


def updates_last(trade: Mapping[str, Any]) -> bool:
    """Whether a stock trade is one Alpaca's latest trade can be: every condition updates the
    last price (LAST_UPDATING_CONDITIONS). A trade without a readable list is left to REST."""
    conditions = trade.get("c")
    return isinstance(conditions, list) and all(c in LAST_UPDATING_CONDITIONS for c in conditions)


def streamed_kinds(
    *, quote_ttl_s: float, trade_ttl_s: float, option_quote_ttl_s: float
) -> dict[tuple[FeedFamily, str], StreamedKind]:
    """(feed family, message type) -> how it refreshes the cache, with the REST path's TTLs
    (the face's latest option trade lives as long as an option quote, as on REST)."""
    stocks, options = FeedFamily.STOCKS, FeedFamily.OPTIONS
    return {
        (stocks, "q"): StreamedKind("alpaca_quote", "quote", parse_quote, quote_is_empty,
                                    quote_ttl_s),
        (stocks, "t"): StreamedKind("alpaca_trade", "trade", parse_trade, None, trade_ttl_s,
                                    updates_last),
        (options, "q"): StreamedKind("alpaca_option_quote", "option_quote", parse_option_quote,
                                     option_quote_is_empty, option_quote_ttl_s),
        (options, "t"): StreamedKind("alpaca_option_trade", None, parse_option_trade, None,
                                     option_quote_ttl_s),
    }  # fmt: skip


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


class LatestRefresh:
    """Writes the stream's newest quote and trade per symbol into the REST cache."""

    def __init__(
        self,
        cache: Cache,
        metrics: Metrics,
        *,
        kinds: Mapping[tuple[FeedFamily, str], StreamedKind],
        stale_retention_s: float,
        clock_skew_tolerance_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`kinds` (from `streamed_kinds`) and the retention are the REST path's own, so a
        streamed entry lives exactly as a fetched one would."""
        self._cache = cache
        self._metrics = metrics
        self._kinds = kinds
        self._stale_retention_s = stale_retention_s
        self._skew_s = clock_skew_tolerance_s
        self._clock = clock
        # (kind, feed, symbol) -> the newest message and when its frame arrived.
        self._pending: dict[tuple[StreamedKind, str, str], tuple[Element, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._warned_at: dict[DataKind, float] = {}  # a refusal per kind logged each minute

    def note(self, feed: Feed, elements: Sequence[Element]) -> None:
        """A frame's market-data messages, just received: remember the last quote and trade
        of each symbol (Alpaca sends a symbol's messages in order) for the writer."""
        if feed.name not in REST_FEEDS:
            return
        received_at: float | None = None
        for element in elements:
            if element.type is None or element.symbol is None:
                continue
            kind = self._kinds.get((feed.family, element.type))
            if kind is None:
                continue
            if kind.is_latest is not None and not kind.is_latest(element.value):
                # Left out before it is noted: it must not displace the symbol's last trade
                # that REST could answer.
                self._metrics.stream_cache_refresh(kind.face, "not_latest")
                continue
            if received_at is None:
                received_at = self._clock()
            self._pending[kind, feed.name, element.symbol] = (element, received_at)
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
        self, batch: Mapping[tuple[StreamedKind, str, str], tuple[Element, float]]
    ) -> dict[str, tuple[DataKind, CachedValue, float]]:
        """Each cache key's (kind, entry, keep_s) to write."""
        offers: dict[str, tuple[DataKind, CachedValue, float]] = {}
        for (kind, feed, symbol), (element, received_at) in batch.items():
            try:
                fields = rest_fields(element.value)
                value = kind.parse(symbol, fields)  # REST's own check: raises on a bad shape
            except (GatewayError, WireError) as exc:
                self._refused(kind, f"{symbol} on {feed}: {exc}")
                continue
            observed = max(0, epoch_ns(value["timestamp"]))  # Lua compares digits (app/cache.py)
            if observed / 1e9 - received_at > self._skew_s:
                self._refused(kind, f"{symbol} on {feed}: observed ahead of the gateway's clock")
                continue
            ttl_s = kind.ttl_s
            # REST answers NO_DATA for a quote with neither side: /v1 keeps what it has. The
            # face passes Alpaca's object on as it is, so it takes it.
            targets: list[tuple[DataKind, Mapping[str, Any]]] = [(kind.face, fields)]
            if kind.v1 is not None and not (kind.is_empty is not None and kind.is_empty(value)):
                targets.append((kind.v1, value))
            for kind_name, cached in targets:
                entry = CachedValue(
                    cached, received_at, received_at + ttl_s, streamed=True, observed_ns=observed
                )
                keep_s = ttl_s + self._stale_retention_s
                offers[cache_key(kind_name, feed, symbol)] = (kind_name, entry, keep_s)
        return offers

    async def _store(self, offers: Mapping[str, tuple[DataKind, CachedValue, float]]) -> None:
        if not offers:
            return
        kept = await self._cache.put_many(
            [(key, e, keep_s) for key, (_, e, keep_s) in offers.items()]
        )
        for key, (kind, _, _) in offers.items():
            self._metrics.stream_cache_refresh(kind, "kept_newer" if key in kept else "stored")

    def _refused(self, kind: StreamedKind, why: str) -> None:
        self._metrics.stream_cache_refresh(kind.face, "refused")
        # A skewed clock refuses every message: one line a minute says it, the counter counts.
        now = self._clock()
        if now - self._warned_at.get(kind.face, float("-inf")) >= REFUSAL_LOG_INTERVAL_S:
            self._warned_at[kind.face] = now
            logger.bind(kind=kind.face).warning("stream value not cached: {}", why)


def _report_failure(task: asyncio.Task[None]) -> None:
    # A bug must not silently stop the refresh: say so; the next frame starts a new writer.
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.opt(exception=exc).error("stream cache refresh failed")
