"""Why did Alpaca have no value for a symbol? The one classifier for stocks and options.

Alpaca's data API answers 200 and simply omits a symbol it has no value for, so a missing symbol
is classified through Alpaca's reference data (the asset or contract endpoint, cached):
unknown -> SYMBOL_NOT_FOUND / CONTRACT_NOT_FOUND, known -> NO_DATA. If the lookup itself fails,
the symbol gets the lookup's typed error: we cannot tell unknown from empty, so we say that.

Lookups spend the trading host's rate budget, which orders share: a batch of made-up symbols must
not be able to spend it, so every lookup takes a token from an injected budget first; past it the
symbol is unclassified (UPSTREAM_RATE_LIMITED), never guessed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.alpaca.options import OptionContractsClient
from app.alpaca.trading import TradingClient
from app.cache import cache_key
from app.errors import ErrorCode, GatewayError, Upstream
from app.metrics import DataKind
from app.models.market_data import AssetValue
from app.quotas import Quotas
from app.reads.read_through import ReadThrough, Served

_BUDGET_KEY = "reference-lookups"


class MissingSymbols:
    def __init__(
        self,
        assets: TradingClient,
        contracts: OptionContractsClient,
        read_through: ReadThrough,
        *,
        budget: Quotas,
        asset_ttl_s: float,
        contract_ttl_s: float,
    ) -> None:
        self._assets = assets
        self._contracts = contracts
        self._reads = read_through
        self._budget = budget
        self._asset_ttl_s = asset_ttl_s
        self._contract_ttl_s = contract_ttl_s

    async def stocks(
        self, symbols: Sequence[str], what: str, upstream: Upstream
    ) -> dict[str, GatewayError]:
        """Alpaca had no `what` for these stock symbols: does each exist at all?"""
        return await self._classify(
            "asset", symbols, self._asset, self._asset_ttl_s, what, upstream
        )

    async def contracts(self, contracts: Sequence[str]) -> dict[str, GatewayError]:
        """Alpaca had no quote for these option contracts: does each exist at all?"""
        return await self._classify(
            "option_contract", contracts, self._contract, self._contract_ttl_s, "quote", "options"
        )

    async def _classify(
        self,
        kind: DataKind,
        symbols: Sequence[str],
        look_up: Callable[[str], Awaitable[Any]],
        ttl_s: float,
        what: str,
        upstream: Upstream,
    ) -> dict[str, GatewayError]:
        if not symbols:
            return {}

        async def fetch(chunk: list[str]) -> dict[str, Any]:
            # Alpaca has no batch lookup by symbol; each answer is cached for the TTL.
            found = await asyncio.gather(*(look_up(s) for s in chunk))
            return dict(zip(chunk, found, strict=True))

        known = await self._reads.read(
            kind,
            {s: cache_key(kind, "-", s) for s in symbols},
            fetch,
            fresh_ttl_s=ttl_s,
            chunk_size=len(symbols),
        )
        explained: dict[str, GatewayError] = {}
        for symbol in symbols:
            outcome = known[symbol]
            if isinstance(outcome, Served):
                explained[symbol] = GatewayError(
                    ErrorCode.NO_DATA,
                    f"Alpaca knows {symbol} but has no {what} for it now",
                    upstream=upstream,
                    symbol=symbol,
                )
            else:
                explained[symbol] = outcome if outcome.symbol else outcome.for_symbol(symbol)
        return explained

    async def _asset(self, symbol: str) -> AssetValue | GatewayError:
        refused = await self._spend(symbol)
        if refused is not None:
            return refused
        try:
            asset = await self._assets.asset(symbol)
        except GatewayError as exc:
            return exc
        if asset is None:
            return GatewayError(
                ErrorCode.SYMBOL_NOT_FOUND,
                f"Alpaca does not know the symbol {symbol}",
                upstream="reference",
                symbol=symbol,
            )
        return asset

    async def _contract(self, contract: str) -> dict[str, Any] | GatewayError:
        refused = await self._spend(contract)
        if refused is not None:
            return refused
        try:
            found = await self._contracts.contract(contract)
        except GatewayError as exc:
            return exc
        if found is None:
            return GatewayError(
                ErrorCode.CONTRACT_NOT_FOUND,
                f"Alpaca does not know the option contract {contract}",
                upstream="reference",
                symbol=contract,
            )
        return found

    async def _spend(self, symbol: str) -> GatewayError | None:
        wait_s = await self._budget.take(_BUDGET_KEY)
        if wait_s <= 0:
            return None
        return GatewayError(
            ErrorCode.UPSTREAM_RATE_LIMITED,
            f"Too many unknown symbols to look up now; {symbol} could not be classified",
            upstream="reference",
            symbol=symbol,
            retry_after_s=max(1, math.ceil(wait_s)),
        )
