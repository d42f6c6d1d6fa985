"""The options read path: latest option quotes, chains and contracts, through the same cache,
single-flight and breakers as stocks. A missing contract is classified through Alpaca's
contract endpoint: unknown -> CONTRACT_NOT_FOUND, known -> NO_DATA. Greeks and implied
volatility are passed on as Alpaca sent them, or null; nothing is computed here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.alpaca.options import OptionContractsClient, OptionDataClient, option_quote_is_empty
from app.cache import cache_key
from app.errors import ErrorCode, GatewayError
from app.market_data import StockReads, latest_time, snapshot_times
from app.read_through import Outcome, ReadThrough, Result, Served
from app.settings import Settings


def chain_times(value: Mapping[str, Any]) -> Iterable[str]:
    return (t for snapshot in value["snapshots"].values() for t in snapshot_times(snapshot))


class OptionReads:
    def __init__(
        self,
        data: OptionDataClient,
        contracts: OptionContractsClient,
        stocks: StockReads,
        read_through: ReadThrough,
        settings: Settings,
    ) -> None:
        self._data = data
        self._contracts = contracts
        self._stocks = stocks
        self._reads = read_through
        self._settings = settings

    async def quote(self, contract: str, feed: str, stale_if_error_s: float | None) -> Outcome:
        async def fetch(chunk: list[str]) -> dict[str, Result]:
            found = await self._data.latest_quotes(chunk, feed)
            values = {
                s: q.model_dump() for s, q in found.items() if q and not option_quote_is_empty(q)
            }
            return values | await self._explain_missing([s for s in chunk if s not in values])

        outcomes = await self._reads.read(
            "option_quote",
            {contract: cache_key("option_quote", feed, contract)},
            fetch,
            fresh_ttl_s=self._settings.cache_option_quote_ttl_s,
            chunk_size=1,
            stale_if_error_s=stale_if_error_s,
            refusal=lambda: self._data.transport.refusal("option_quotes_latest"),
            observed=latest_time,
        )
        return outcomes[contract]

    async def chain(
        self,
        underlying: str,
        params: Mapping[str, str],
        page_token: str | None,
        stale_if_error_s: float | None,
    ) -> Outcome:
        filters = ":".join(f"{k}={v}" for k, v in sorted(params.items()))
        key = cache_key("option_chain", params["feed"], underlying, filters, page_token or "-")

        async def fetch(chunk: list[str]) -> dict[str, Result]:
            snapshots, token = await self._data.chain(
                underlying, params, self._settings.options_chain_max_pages, page_token
            )
            if snapshots:
                dumped = {occ: snap.model_dump() for occ, snap in sorted(snapshots.items())}
                return {underlying: {"snapshots": dumped, "next_page_token": token}}
            what = "option snapshots matching the request"
            return await self._stocks.explain_missing([underlying], what)

        outcomes = await self._reads.read(
            "option_chain",
            {underlying: key},
            fetch,
            fresh_ttl_s=self._settings.cache_option_chain_ttl_s,
            chunk_size=1,
            stale_if_error_s=stale_if_error_s,
            refusal=lambda: self._data.transport.refusal("option_chain"),
            observed=chain_times,
        )
        return outcomes[underlying]

    async def contracts(self, params: Mapping[str, str]) -> Outcome:
        key = cache_key(
            "option_contracts", "-", "-", *(f"{k}={v}" for k, v in sorted(params.items()))
        )

        async def fetch(chunk: list[str]) -> dict[str, Result]:
            contracts, token = await self._contracts.contracts(params)
            return {"contracts": {"contracts": contracts, "next_page_token": token}}

        outcomes = await self._reads.read(
            "option_contracts",
            {"contracts": key},
            fetch,
            fresh_ttl_s=self._settings.cache_option_contracts_ttl_s,
            chunk_size=1,
        )
        return outcomes["contracts"]

    async def _explain_missing(self, contracts: Sequence[str]) -> dict[str, GatewayError]:
        """Alpaca has no quote for these: does the contract exist at all?"""
        if not contracts:
            return {}

        async def fetch(chunk: list[str]) -> dict[str, Result]:
            return {c: await self._contract(c) for c in chunk}

        known = await self._reads.read(
            "option_contract",
            {c: cache_key("option_contract", "-", c) for c in contracts},
            fetch,
            fresh_ttl_s=self._settings.cache_option_contracts_ttl_s,
            chunk_size=1,
        )
        explained: dict[str, GatewayError] = {}
        for contract in contracts:
            outcome = known[contract]
            if isinstance(outcome, Served):
                explained[contract] = GatewayError(
                    ErrorCode.NO_DATA,
                    f"Alpaca knows {contract} but has no quote for it now",
                    upstream="options",
                    symbol=contract,
                )
            else:
                explained[contract] = outcome if outcome.symbol else outcome.for_symbol(contract)
        return explained

    async def _contract(self, contract: str) -> Any:
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
