"""Annotated dependency aliases shared by the routers."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Path, Query, Request

from app.settings import STOCK_FEEDS
from app.state import GatewayState
from app.symbols import stock_symbol

# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread pool,
# two thread hops per request on the cached-quote hot path.


async def _gateway(request: Request) -> GatewayState:
    return cast(GatewayState, request.state.gateway)


async def _symbol(
    symbol: Annotated[
        str,
        Path(
            pattern=r"^[A-Za-z][A-Za-z0-9.\-]{0,9}$",
            description="Stock symbol; upper-cased, then `^[A-Z][A-Z0-9.\\-]{0,9}$`",
            examples=["AAPL"],
        ),
    ],
) -> str:
    return stock_symbol(symbol)


Gateway = Annotated[GatewayState, Depends(_gateway)]
StockSymbol = Annotated[str, Depends(_symbol)]
Feed = Annotated[
    str | None,
    Query(
        description="Alpaca feed; default from ALPACA_DATA_FEED. Always sent to Alpaca explicitly.",
        json_schema_extra={"enum": list(STOCK_FEEDS)},
    ),
]
MaxAgeMs = Annotated[
    int | None,
    Query(ge=0, description="Answer DATA_STALE instead of a value older than this (ms)"),
]
StaleIfErrorMs = Annotated[
    int | None,
    Query(
        ge=0,
        description=(
            "Opt-in: if Alpaca fails, serve a cached real value fetched at most this long ago,"
            " marked cache=stale"
        ),
    ),
]
