"""The options read path: latest option quotes, chains and contracts, through the same cache,
single-flight and breakers as stocks. A missing contract is classified by `MissingSymbols`
(unknown -> CONTRACT_NOT_FOUND, known -> NO_DATA). Greeks and implied volatility are passed on as
Alpaca sent them, or null; nothing is computed here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.alpaca.options import OptionContractsClient, OptionDataClient
from app.cache import cache_key
from app.errors import GatewayError
from app.models.options import OptionChainValue, OptionQuoteValue
from app.reads.latest import LatestKind, LatestReads
from app.reads.missing import MissingSymbols
from app.reads.read_through import Outcome, ReadThrough
from app.reads.stocks import latest_time, snapshot_times
from app.settings import Settings

ContractsValue = dict[str, Any]  # Alpaca's contracts page: reference data, not observations


def chain_times(value: OptionChainValue) -> Iterable[str]:
    return (t for snapshot in value["snapshots"].values() for t in snapshot_times(snapshot))


class OptionReads:
    def __init__(
        self,
        data: OptionDataClient,
        contracts: OptionContractsClient,
        missing: MissingSymbols,
        read_through: ReadThrough,
        settings: Settings,
    ) -> None:
        self._data = data
        self._contracts = contracts
        self._missing = missing
        self._reads = read_through
        self._settings = settings
        self._quotes = LatestReads(
            read_through,
            LatestKind(
                "option_quote",
                data.latest_quotes,
                missing.contracts,
                lambda: data.transport.refusal("option_quotes_latest"),
                latest_time,
                settings.cache_option_quote_ttl_s,
                # Alpaca's limit for options is 100 symbols a call.
                min(settings.data_symbols_per_call, 100),
            ),
        )

    async def quote(
        self, contract: str, feed: str, stale_if_error_s: float | None
    ) -> Outcome[OptionQuoteValue]:
        return (
            self._quotes.answer_now(contract, feed, stale_if_error_s)
            or (await self._quotes.read([contract], feed, stale_if_error_s))[contract]
        )

    async def chain(
        self,
        underlying: str,
        params: Mapping[str, str],
        page_token: str | None,
        stale_if_error_s: float | None,
    ) -> Outcome[OptionChainValue]:
        filters = ":".join(f"{k}={v}" for k, v in sorted(params.items()))
        key = cache_key("option_chain", params["feed"], underlying, filters, page_token or "-")

        async def fetch(chunk: list[str]) -> dict[str, OptionChainValue | GatewayError]:
            snapshots, token = await self._data.chain(
                underlying, params, self._settings.options_chain_max_pages, page_token
            )
            if snapshots:
                ordered = dict(sorted(snapshots.items()))
                return {underlying: OptionChainValue(snapshots=ordered, next_page_token=token)}
            what = "option snapshots matching the request"
            return dict(await self._missing.stocks([underlying], what, "options"))

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

    async def contracts(self, params: Mapping[str, str]) -> Outcome[ContractsValue]:
        key = cache_key(
            "option_contracts", "-", "-", *(f"{k}={v}" for k, v in sorted(params.items()))
        )

        async def fetch(chunk: list[str]) -> dict[str, ContractsValue | GatewayError]:
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
