"""alpaca-py's own calls work against the emulator: 31 of 31, against the example scenario.

Every public method of alpaca-py's StockHistoricalDataClient, OptionHistoricalDataClient and
TradingClient whose endpoint the emulator serves, plus the order kinds a bot submits (market,
limit, bracket, option), each called the way a newcomer would (``url_override``, paper
keys) and each answer parsed into alpaca-py's own model: the SDK validated it. Historical trades
are fetched over several pages (alpaca-py follows ``next_page_token`` by itself) into one frame.
The other test modules check values; this one keeps the whole list working.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from alpaca.data.enums import DataFeed, OptionsFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.models import (
    Bar,
    BarSet,
    OptionsSnapshot,
    Quote,
    QuoteSet,
    Snapshot,
    Trade,
    TradeSet,
)
from alpaca.data.requests import (
    OptionChainRequest,
    OptionLatestQuoteRequest,
    OptionLatestTradeRequest,
    OptionSnapshotRequest,
    StockBarsRequest,
    StockLatestBarRequest,
    StockLatestQuoteRequest,
    StockLatestTradeRequest,
    StockQuotesRequest,
    StockSnapshotRequest,
    StockTradesRequest,
)
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import (
    AssetClass,
    AssetStatus,
    OrderClass,
    OrderSide,
    OrderStatus,
    TimeInForce,
)
from alpaca.trading.models import (
    Asset,
    Calendar,
    Clock,
    OptionContract,
    OptionContractsResponse,
    Order,
    Position,
    TradeAccount,
)
from alpaca.trading.requests import (
    CancelOrderResponse,
    GetAssetsRequest,
    GetCalendarRequest,
    GetOptionContractsRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)
from pandas import DataFrame
from pandas.errors import Pandas4Warning

from tests.emulator.process import REPO_ROOT, EmulatorProcess

pytestmark = pytest.mark.contract

EXAMPLE = REPO_ROOT / "tests" / "emulator" / "scenarios" / "example.yaml"
CALL, PUT = "AAPL270115C00230000", "AAPL270115P00230000"
STOCKS = ["AAPL", "MSFT"]


@dataclass
class Sdk:
    """alpaca-py's three clients, pointed at the emulator, and its control API."""

    stocks: StockHistoricalDataClient
    options: OptionHistoricalDataClient
    trading: TradingClient
    control: httpx.Client

    def limit_buy(self, client_order_id: str = "sdk-limit") -> Order:
        order = self.trading.submit_order(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=229.5,
                client_order_id=client_order_id,
            )
        )
        assert isinstance(order, Order)
        return order


@dataclass(frozen=True)
class SdkCall:
    """One call and the model (or mapping of models) it must give back."""

    name: str
    call: Callable[[Sdk], Any]
    model: type[Any]
    of: type[Any] | None = None  # a dict of these (data clients) or a list of these


def _recently() -> datetime:
    return datetime.now(UTC) - timedelta(days=7)


def _cancel_one(sdk: Sdk) -> Order:
    order_id = str(sdk.limit_buy("sdk-cancel").id)
    sdk.trading.cancel_order_by_id(order_id)  # None on 204, as alpaca-py types it
    after = sdk.trading.get_order_by_id(order_id)
    assert isinstance(after, Order)
    assert after.status == OrderStatus.CANCELED
    return after


def frame_of(dataset: BarSet | QuoteSet | TradeSet) -> DataFrame:
    """The dataset's ``.df``. alpaca-py 0.44 builds it with ``dropna(inplace=True)``, which
    pandas 3.1 deprecates: the SDK's call, not ours. Drop the filter when alpaca-py moves off it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The inplace keyword", Pandas4Warning)
        return dataset.df


def _trades_over_pages(sdk: Sdk) -> TradeSet:
    """Three AAPL trades and one MSFT trade, one per page: alpaca-py follows every token."""
    sdk.control.put("/_emulator/config", json={"max_page_size": 1}).raise_for_status()
    sdk.control.delete("/_emulator/calls").raise_for_status()
    trades = sdk.stocks.get_stock_trades(StockTradesRequest(symbol_or_symbols=STOCKS, feed=_IEX))
    pages = sdk.control.get("/_emulator/calls").json()["/v2/stocks/trades"]
    assert isinstance(trades, TradeSet)
    frame = frame_of(trades)
    assert (pages, len(frame)) == (4, 4)
    assert list(frame.index.get_level_values("symbol")) == ["AAPL", "AAPL", "AAPL", "MSFT"]
    assert frame.loc["AAPL"].index.is_monotonic_increasing  # each symbol's trades in time order
    assert list(frame.loc["AAPL"]["price"]) == [229.86, 229.87, 229.87]
    return trades


def _replace_one(sdk: Sdk) -> Order:
    old = sdk.limit_buy("sdk-to-replace")
    # Alpaca replaces only an order its venue has acknowledged: the emulator's test hook.
    sdk.control.put(f"/_emulator/orders/{old.id}/status", json={"status": "new"}).raise_for_status()
    new = sdk.trading.replace_order_by_id(
        str(old.id), ReplaceOrderRequest(qty=3, limit_price=229.4, client_order_id="sdk-replaced")
    )
    assert isinstance(new, Order)
    before = sdk.trading.get_order_by_id(str(old.id))
    assert isinstance(before, Order)
    assert (before.status, before.replaced_by) == (OrderStatus.REPLACED, new.id)
    assert (new.replaces, new.qty, new.limit_price) == (old.id, "3", "229.4")
    return new


def _cancel_all(sdk: Sdk) -> Any:
    sdk.limit_buy("sdk-open-1")
    sdk.limit_buy("sdk-open-2")
    return sdk.trading.cancel_orders()


_IEX, _INDICATIVE = DataFeed.IEX, OptionsFeed.INDICATIVE
CALLS = [
    # StockHistoricalDataClient
    SdkCall("get_stock_latest_quote", lambda sdk: sdk.stocks.get_stock_latest_quote(
        StockLatestQuoteRequest(symbol_or_symbols=STOCKS, feed=_IEX)), dict, Quote),
    SdkCall("get_stock_latest_trade", lambda sdk: sdk.stocks.get_stock_latest_trade(
        StockLatestTradeRequest(symbol_or_symbols=STOCKS, feed=_IEX)), dict, Trade),
    SdkCall("get_stock_latest_bar", lambda sdk: sdk.stocks.get_stock_latest_bar(
        StockLatestBarRequest(symbol_or_symbols="AAPL", feed=_IEX)), dict, Bar),
    SdkCall("get_stock_snapshot", lambda sdk: sdk.stocks.get_stock_snapshot(
        StockSnapshotRequest(symbol_or_symbols=STOCKS, feed=_IEX)), dict, Snapshot),
    SdkCall("get_stock_bars daily", lambda sdk: sdk.stocks.get_stock_bars(StockBarsRequest(
        symbol_or_symbols=STOCKS, timeframe=TimeFrame.Day, start=_recently(), feed=_IEX)),
        BarSet),
    SdkCall("get_stock_bars minute", lambda sdk: sdk.stocks.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, feed=_IEX)), BarSet),
    SdkCall("get_stock_quotes", lambda sdk: sdk.stocks.get_stock_quotes(StockQuotesRequest(
        symbol_or_symbols="AAPL", start=_recently(), feed=_IEX)), QuoteSet),
    SdkCall("get_stock_trades over pages", _trades_over_pages, TradeSet),
    # OptionHistoricalDataClient
    SdkCall("get_option_latest_quote", lambda sdk: sdk.options.get_option_latest_quote(
        OptionLatestQuoteRequest(symbol_or_symbols=CALL, feed=_INDICATIVE)), dict, Quote),
    SdkCall("get_option_latest_trade", lambda sdk: sdk.options.get_option_latest_trade(
        OptionLatestTradeRequest(symbol_or_symbols=CALL, feed=_INDICATIVE)), dict, Trade),
    SdkCall("get_option_snapshot", lambda sdk: sdk.options.get_option_snapshot(
        OptionSnapshotRequest(symbol_or_symbols=[CALL, PUT], feed=_INDICATIVE)), dict,
        OptionsSnapshot),
    SdkCall("get_option_chain", lambda sdk: sdk.options.get_option_chain(
        OptionChainRequest(underlying_symbol="AAPL", feed=_INDICATIVE)), dict, OptionsSnapshot),
    # TradingClient: the account and what it holds
    SdkCall("get_clock", lambda sdk: sdk.trading.get_clock(), Clock),
    SdkCall("get_calendar", lambda sdk: sdk.trading.get_calendar(GetCalendarRequest(
        start=date(2027, 1, 1), end=date(2027, 1, 31))), list, Calendar),
    SdkCall("get_account", lambda sdk: sdk.trading.get_account(), TradeAccount),
    SdkCall("get_asset", lambda sdk: sdk.trading.get_asset("AAPL"), Asset),
    SdkCall("get_all_assets", lambda sdk: sdk.trading.get_all_assets(GetAssetsRequest(
        status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY)), list, Asset),
    SdkCall("get_all_positions", lambda sdk: sdk.trading.get_all_positions(), list, Position),
    SdkCall("get_open_position", lambda sdk: sdk.trading.get_open_position("AAPL"), Position),
    SdkCall("get_option_contracts", lambda sdk: sdk.trading.get_option_contracts(
        GetOptionContractsRequest(underlying_symbols=["AAPL"],
                                  expiration_date_lte=date(2027, 12, 31))),
        OptionContractsResponse),
    SdkCall("get_option_contract", lambda sdk: sdk.trading.get_option_contract(CALL),
            OptionContract),
    # TradingClient: orders
    SdkCall("submit_order market", lambda sdk: sdk.trading.submit_order(MarketOrderRequest(
        symbol="AAPL", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)), Order),
    SdkCall("submit_order limit", lambda sdk: sdk.limit_buy(), Order),
    SdkCall("submit_order bracket", lambda sdk: sdk.trading.submit_order(LimitOrderRequest(
        symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        limit_price=229.5, order_class=OrderClass.BRACKET,
        take_profit=TakeProfitRequest(limit_price=240),
        stop_loss=StopLossRequest(stop_price=220))), Order),
    SdkCall("submit_order option", lambda sdk: sdk.trading.submit_order(LimitOrderRequest(
        symbol=CALL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
        limit_price=31.3)), Order),
    SdkCall("get_orders", lambda sdk: [sdk.limit_buy(), *sdk.trading.get_orders(
        GetOrdersRequest(symbols=["AAPL"]))][1:], list, Order),
    SdkCall("get_order_by_id", lambda sdk: sdk.trading.get_order_by_id(
        str(sdk.limit_buy().id)), Order),
    SdkCall("get_order_by_client_id", lambda sdk: [sdk.limit_buy("sdk-by-client-id"),
        sdk.trading.get_order_by_client_id("sdk-by-client-id")][1], Order),
    SdkCall("replace_order_by_id", _replace_one, Order),
    SdkCall("cancel_order_by_id", _cancel_one, Order),
    SdkCall("cancel_orders", _cancel_all, list, CancelOrderResponse),
]  # fmt: skip


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(scenario=EXAMPLE) as process:
        yield process


@pytest.fixture
def sdk(emulator: EmulatorProcess) -> Iterator[Sdk]:
    keys = (emulator.key_id, emulator.secret_key)
    with httpx.Client(base_url=emulator.base_url, timeout=10) as control:
        control.post("/_emulator/reset").raise_for_status()
        yield Sdk(
            StockHistoricalDataClient(*keys, url_override=emulator.base_url),
            OptionHistoricalDataClient(*keys, url_override=emulator.base_url),
            TradingClient(*keys, paper=True, url_override=emulator.base_url),
            control,
        )


def test_the_list_holds_every_served_alpaca_py_method() -> None:
    called = {call.name.split()[0] for call in CALLS}

    assert len(CALLS) == 31
    assert len(called) == 27  # the rest are variants: bars per timeframe, order kinds
    for client in (StockHistoricalDataClient, OptionHistoricalDataClient, TradingClient):
        assert called & set(vars(client)), client.__name__


@pytest.mark.parametrize("sdk_call", CALLS, ids=[call.name for call in CALLS])
def test_alpaca_py_call_works_against_the_emulator(sdk: Sdk, sdk_call: SdkCall) -> None:
    answer = sdk_call.call(sdk)

    assert isinstance(answer, sdk_call.model), type(answer)
    items = list(answer.values() if isinstance(answer, dict) else answer) if sdk_call.of else []
    assert all(isinstance(item, sdk_call.of) for item in items), items
    if sdk_call.of is not None:
        assert items, "the example scenario feeds this call"
    if isinstance(answer, (BarSet, QuoteSet, TradeSet)):
        assert answer.data["AAPL"], "AAPL's series"
        assert not frame_of(answer).empty
    if isinstance(answer, OptionContractsResponse):
        assert {c.symbol for c in answer.option_contracts or []} == {CALL, PUT}
