"""The Alpaca-compatible face's reads: Alpaca's own objects, through the same cache,
single-flight, breakers and clock-skew check as /v1.

Latest values are kept per symbol (so a bot asking for [AAPL, MSFT] and one asking for [MSFT]
share MSFT's entry and its one upstream call per TTL); a symbol Alpaca omitted is remembered as
such for the TTL, with no asset lookup: the face omits it too, as Alpaca does. Series and chain
pages are kept per query, as Alpaca answered them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from app.alpaca import passthrough
from app.alpaca.passthrough import LatestEndpoint, Wire
from app.alpaca.transport import AlpacaTransport
from app.cache import cache_key
from app.errors import ErrorCode, GatewayError
from app.metrics import DataKind
from app.reads.bar_spans import bound_key
from app.reads.latest import LatestKind, LatestReads
from app.reads.read_through import Outcome, ReadThrough
from app.reads.stocks import BARS_SETTLE_S
from app.settings import Settings

_SNAPSHOT_MEMBERS = ("latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar")


def object_time(value: Wire) -> Iterable[str]:
    return (value["t"],)


def snapshot_times(value: Wire) -> Iterable[str]:
    return (m["t"] for name in _SNAPSHOT_MEMBERS if (m := value.get(name)) is not None)


def series_times(member: str) -> Callable[[Wire], Iterable[str]]:
    def times(page: Wire) -> Iterable[str]:
        series = page.get(member) or {}
        return (item["t"] for items in series.values() for item in items)

    return times


def chain_times(page: Wire) -> Iterable[str]:
    return (t for snap in (page.get("snapshots") or {}).values() for t in snapshot_times(snap))


class AlpacaReads:
    def __init__(
        self,
        data: AlpacaTransport,
        options: AlpacaTransport,
        read_through: ReadThrough,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._data = data
        self._options = options
        self._reads = read_through
        self._settings = settings
        self._clock = clock
        per_call = min(settings.data_symbols_per_call, 100)
        self._latest: dict[DataKind, LatestReads[Wire]] = {}
        faces: tuple[
            tuple[
                DataKind,
                passthrough.LatestEndpoint,
                AlpacaTransport,
                float,
                Callable[[Wire], Iterable[str]] | None,
            ],
            ...,
        ] = (
            ("alpaca_quote", passthrough.STOCK_QUOTES, data, settings.cache_quote_ttl_s, None),
            ("alpaca_trade", passthrough.STOCK_TRADES, data, settings.cache_trade_ttl_s, None),
            ("alpaca_bar", passthrough.STOCK_BARS, data, settings.cache_open_bars_ttl_s, None),
            (
                "alpaca_snapshot",
                passthrough.STOCK_SNAPSHOTS,
                data,
                settings.cache_snapshot_ttl_s,
                snapshot_times,
            ),
            (
                "alpaca_option_quote",
                passthrough.OPTION_QUOTES,
                options,
                settings.cache_option_quote_ttl_s,
                None,
            ),
            (
                "alpaca_option_trade",
                passthrough.OPTION_TRADES,
                options,
                settings.cache_option_quote_ttl_s,
                None,
            ),
            (
                "alpaca_option_snapshot",
                passthrough.OPTION_SNAPSHOTS,
                options,
                settings.cache_option_chain_ttl_s,
                snapshot_times,
            ),
        )
        for kind, endpoint, transport, ttl_s, times in faces:
            self._latest[kind] = LatestReads(
                read_through,
                LatestKind(
                    kind,
                    _fetcher(transport, endpoint),
                    _omitted,
                    _refusal(transport, endpoint.endpoint),
                    times or object_time,
                    ttl_s,
                    per_call,
                ),
            )

    async def latest(
        self, kind: DataKind, symbols: Sequence[str], feed: str
    ) -> dict[str, Outcome[Wire]]:
        """Each symbol's latest object as Alpaca sent it; NO_DATA where Alpaca had none."""
        return await self._latest[kind].read(symbols, feed, None)

    async def series(
        self, member: str, query: Mapping[str, str], closed_before: float | None
    ) -> Outcome[Wire]:
        """A page of historical bars, quotes or trades (`member`), as Alpaca answered it."""
        return await self._page(
            self._data,
            ("v2", "stocks", member),
            query,
            endpoint=member,
            check=lambda payload: passthrough.check_series_page(payload, member),
            observed=series_times(member),
            closed_before=closed_before,
        )

    async def chain(self, underlying: str, query: Mapping[str, str]) -> Outcome[Wire]:
        """A page of an underlying's option snapshots, as Alpaca answered it."""
        return await self._page(
            self._options,
            ("v1beta1", "options", "snapshots", underlying),
            query,
            endpoint="option_chain",
            check=passthrough.check_chain_page,
            observed=chain_times,
            closed_before=None,
        )

    async def _page(
        self,
        transport: AlpacaTransport,
        path: tuple[str, ...],
        params: Mapping[str, str],
        *,
        endpoint: str,
        check: Callable[[Any], Wire],
        observed: Callable[[Wire], Iterable[str]] | None,
        closed_before: float | None,
    ) -> Outcome[Wire]:
        """One page as Alpaca answered it, kept per query (start and end by the instant they
        name). `closed_before` is when the page's range stops changing (epoch seconds), when
        the client gave an end: BARS_SETTLE_S past it the page is history, kept
        CACHE_CLOSED_BARS_TTL_S; anything reaching now is kept CACHE_OPEN_BARS_TTL_S."""
        closed = closed_before is not None and closed_before + BARS_SETTLE_S <= self._clock()
        ttl_s = (
            self._settings.cache_closed_bars_ttl_s
            if closed
            else self._settings.cache_open_bars_ttl_s
        )
        # One entry per instant asked, not per spelling of it (Z, +00:00, .000Z ...).
        spelled = {k: bound_key(v) if k in ("start", "end") else v for k, v in params.items()}
        query = ":".join(f"{k}={v}" for k, v in sorted(spelled.items()))
        key = cache_key("alpaca_page", endpoint, "/".join(path), query)

        async def fetch(chunk: list[str]) -> dict[str, Wire | GatewayError]:
            return {"page": await passthrough.page(transport, path, params, endpoint, check)}

        outcomes = await self._reads.read(
            "alpaca_page",
            {"page": key},
            fetch,
            fresh_ttl_s=ttl_s,
            chunk_size=1,
            refusal=lambda: transport.refusal(endpoint),
            observed=observed,
        )
        return outcomes["page"]


def _fetcher(
    transport: AlpacaTransport, endpoint: LatestEndpoint
) -> Callable[[Sequence[str], str], Any]:
    async def fetch(symbols: Sequence[str], feed: str) -> dict[str, Wire | None]:
        return await passthrough.latest(transport, endpoint, symbols, {"feed": feed})

    return fetch


def _refusal(transport: AlpacaTransport, endpoint: str) -> Callable[[], GatewayError | None]:
    return lambda: transport.refusal(endpoint)


async def _omitted(symbols: Sequence[str]) -> dict[str, GatewayError]:
    """Alpaca omitted these: so does the face (remembered for the TTL, no asset lookup)."""
    return {
        s: GatewayError(
            ErrorCode.NO_DATA, f"Alpaca has no value for {s} now", upstream="data", symbol=s
        )
        for s in symbols
    }
