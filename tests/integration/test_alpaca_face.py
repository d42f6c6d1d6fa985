"""Unmodified alpaca-py through the gateway's Alpaca face (`url_override=GATEWAY + "/alpaca"`).

The gateway runs as users run it (`python -m app.serve`, keys made with the CLI) in front of the
emulator, seeded with the demo market. Every value check compares what the SDK returns through
the gateway with what the same SDK call returns straight from the emulator: the face must hand
bots Alpaca's own values. The failure tests check what alpaca-py sees (its `APIError`, status and
message) and what reached Alpaca (the emulator's call counts and its order book).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
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
from alpaca.trading.enums import AssetClass, AssetStatus, OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, TradeAccount
from alpaca.trading.requests import (
    GetAssetsRequest,
    GetCalendarRequest,
    GetOptionContractsRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.emulator.control import EmulatorControl
from tests.emulator.demo_market import SeedData, seed
from tests.emulator.process import EmulatorProcess
from tests.served import REPO_ROOT, ServedGateway, emulator_env
from tests.support.sdk_calls import listing, proven_calls, proves, readme_listing

pytestmark = pytest.mark.integration

STOCKS = ["AAPL", "MSFT", "SPY"]
ORDERS = "/v2/orders"
# A quote only the tests that store it ask for, so the module's cache never holds it.
FRESH_QUOTE = {"t": "2026-11-20T15:59:59.5Z", "bp": 10.01, "bs": 1, "bx": "V", "ap": 10.02,
               "as": 1, "ax": "V", "c": ["R"], "z": "C"}  # fmt: skip


# --- the stack: emulator (seeded), the gateway as a served process, keys from the CLI -----------
@dataclass(frozen=True)
class Keys:
    """A gateway key as alpaca-py carries it: `gw_<id>` and the secret after it."""

    key_id: str
    secret: str

    @classmethod
    def of(cls, full: str) -> Keys:
        prefix, key_hex, secret = full.split("_", 2)
        return cls(f"{prefix}_{key_hex}", secret)


@dataclass(frozen=True)
class Clients:
    """alpaca-py's three clients, all pointed at one base URL with one key pair."""

    url: str
    keys: Keys

    def stocks(self) -> StockHistoricalDataClient:
        return StockHistoricalDataClient(self.keys.key_id, self.keys.secret, url_override=self.url)

    def options(self) -> OptionHistoricalDataClient:
        return OptionHistoricalDataClient(self.keys.key_id, self.keys.secret, url_override=self.url)

    def trading(self) -> TradingClient:
        return TradingClient(self.keys.key_id, self.keys.secret, paper=True, url_override=self.url)


@dataclass(frozen=True)
class Stack:
    emulator: EmulatorProcess
    seeded: SeedData
    gateway: ServedGateway
    face: Clients  # through the gateway, with a key holding every scope
    alpaca: Clients  # straight to the emulator, with its own credentials
    data_only: Keys
    env: dict[str, str]


def create_key(env: dict[str, str], scopes: str) -> str:
    command = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "face-test"]
    command += ["--scopes", scopes]
    created = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return created.stdout.strip().splitlines()[-1]


def face_env(emulator: EmulatorProcess, store: Path, **settings: str) -> dict[str, str]:
    env = emulator_env(
        emulator,
        EMBEDDED_DB_PATH=str(store),
        TRADING_TIMEOUT_S="1",
        DATA_TIMEOUT_S="1",
        LOG_LEVEL="INFO",
    )
    # The embedded cache and store unless a test says otherwise: nothing shared with other
    # tests' Redis keys.
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env.update(settings)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("face")
    with EmulatorProcess() as emulator:
        seeded = asyncio.run(seed(emulator.base_url))
        env = face_env(emulator, tmp / "gateway.sqlite3")
        full = create_key(env, "data:read,trading:read,trading:write")
        data_only = create_key(env, "data:read")
        with ServedGateway(env, tmp / "gateway.log") as gateway:
            yield Stack(
                emulator=emulator,
                seeded=seeded,
                gateway=gateway,
                face=Clients(gateway.base_url + "/alpaca", Keys.of(full)),
                alpaca=Clients(emulator.base_url, Keys(emulator.key_id, emulator.secret_key)),
                data_only=Keys.of(data_only),
                env=env,
            )


@pytest.fixture
async def control(stack: Stack) -> AsyncIterator[EmulatorControl]:
    """The emulator's control API; faults and counters are cleared after each test, the seeded
    market is left alone (the gateway's cache holds it)."""
    async with EmulatorControl(stack.emulator.base_url) as client:
        await client.reset_calls()
        yield client
        await client.clear_faults()
        await client.configure(max_page_size=10_000, plan="free")


def face_requests(gateway_url: str, method: str, route: str) -> float:
    """How many requests the gateway answered on one face route (its own metric)."""
    text = httpx.get(gateway_url + "/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "gateway_http_requests_total"
                and labels.get("route") == route
                and labels.get("method") == method
            ):
                total += sample.value
    return total


def api_error(call: Callable[[], object]) -> APIError:
    with pytest.raises(APIError) as raised:
        call()
    return raised.value


def error_body(error: APIError) -> dict[str, Any]:
    """The JSON body behind the SDK's exception (its str() is the body's text)."""
    body: dict[str, Any] = json.loads(str(error))
    return body


# --- market data: Alpaca's values, unchanged ----------------------------------------------------
LATEST_STOCK_CALLS = [
    ("get_stock_latest_quote", StockLatestQuoteRequest),
    ("get_stock_latest_trade", StockLatestTradeRequest),
    ("get_stock_latest_bar", StockLatestBarRequest),
    ("get_stock_snapshot", StockSnapshotRequest),
]


@proves(*(f"StockHistoricalDataClient.{name}" for name, _ in LATEST_STOCK_CALLS))
@pytest.mark.parametrize(("method", "request_type"), LATEST_STOCK_CALLS)
@pytest.mark.parametrize("symbols", [STOCKS, "MSFT"], ids=["three", "one"])
def test_latest_stock_calls_return_what_alpaca_returns(
    stack: Stack, method: str, request_type: Any, symbols: list[str] | str
) -> None:
    request = request_type(symbol_or_symbols=symbols)

    through = getattr(stack.face.stocks(), method)(request)
    direct = getattr(stack.alpaca.stocks(), method)(request)

    assert through == direct
    assert set(through) == ({*symbols} if isinstance(symbols, list) else {symbols})


def test_latest_answers_carry_provenance_in_headers_not_in_the_body(stack: Stack) -> None:
    headers = {"APCA-API-KEY-ID": stack.face.keys.key_id}
    headers["APCA-API-SECRET-KEY"] = stack.face.keys.secret
    url = stack.face.url + "/v2/stocks/quotes/latest"
    params = {"symbols": "AAPL,MSFT"}

    first = httpx.get(url, params=params, headers=headers, timeout=5)
    second = httpx.get(url, params=params, headers=headers, timeout=5)
    direct = httpx.get(
        stack.emulator.base_url + "/v2/stocks/quotes/latest",
        params=params,
        headers=stack.emulator.auth_headers,
        timeout=5,
    )

    assert first.status_code == second.status_code == 200
    assert first.json() == direct.json()  # no member added for provenance
    assert "hit" in second.headers["Cache-Status"]
    assert int(second.headers["Age"]) >= 0
    provenance = second.headers["Gateway-Provenance"]
    for symbol in ("AAPL", "MSFT"):
        observed = direct.json()["quotes"][symbol]["t"]
        assert f'{symbol};observed-at="{observed}";fetched-at="' in provenance


@proves("StockHistoricalDataClient.get_stock_latest_quote")
async def test_bots_with_different_keys_share_one_upstream_call(
    stack: Stack, control: EmulatorControl
) -> None:
    await control.set_quote("NVDA", FRESH_QUOTE)
    other_bot = Clients(stack.face.url, Keys.of(create_key(stack.env, "data:read")))
    request = StockLatestQuoteRequest(symbol_or_symbols="NVDA")

    first = stack.face.stocks().get_stock_latest_quote(request)
    second = other_bot.stocks().get_stock_latest_quote(request)

    assert first == second
    assert first["NVDA"].bid_price == FRESH_QUOTE["bp"]
    assert await control.calls_to("/v2/stocks/quotes/latest") == 1


@proves("StockHistoricalDataClient.get_stock_bars")
# alpaca-py's own `.df` calls dropna(inplace=True), which the pandas it installs warns about.
@pytest.mark.filterwarnings("ignore:The inplace keyword")
@pytest.mark.parametrize(("timeframe", "page_size"), [(TimeFrame.Minute, 25), (TimeFrame.Day, 2)])
async def test_historical_bars_follow_every_page_and_make_the_same_dataframe(
    stack: Stack, control: EmulatorControl, timeframe: TimeFrame, page_size: int
) -> None:
    await control.configure(max_page_size=page_size)
    start = (
        datetime.now(UTC) - timedelta(hours=2)
        if timeframe == TimeFrame.Minute
        else datetime(*stack.seeded.first_bar_day.timetuple()[:3], tzinfo=UTC)
    )
    request = StockBarsRequest(symbol_or_symbols=STOCKS, timeframe=timeframe, start=start)

    through = stack.face.stocks().get_stock_bars(request)
    pages = await control.calls_to("/v2/stocks/bars")
    direct = stack.alpaca.stocks().get_stock_bars(request)

    assert through == direct
    assert pages > 2, "the SDK followed next_page_token through the gateway"
    assert sum(len(bars) for bars in through.data.values()) > pages  # several bars per page
    assert through.df.equals(direct.df)
    assert list(through.df.index.get_level_values("symbol").unique()) == STOCKS


def ticks(kind: str, symbol: str, count: int, start: datetime) -> list[dict[str, Any]]:
    """`count` quotes or trades for `symbol`, one a second from `start`, in Alpaca's shape."""
    out: list[dict[str, Any]] = []
    for i in range(count):
        t = (start + timedelta(seconds=i, microseconds=123_457)).isoformat().replace("+00:00", "Z")
        price = round(100 + len(symbol) + i * 0.01, 2)
        if kind == "quotes":
            out.append({"t": t, "bx": "V", "bp": price, "bs": 1 + i % 5, "ax": "V",
                        "ap": round(price + 0.02, 2), "as": 2, "c": ["R"], "z": "C"})  # fmt: skip
        else:
            out.append({"t": t, "x": "V", "p": price, "s": 10 + i, "c": ["@"], "i": 1000 + i,
                        "z": "C"})  # fmt: skip
    return out


@proves("StockHistoricalDataClient.get_stock_quotes", "StockHistoricalDataClient.get_stock_trades")
@pytest.mark.filterwarnings("ignore:The inplace keyword")
@pytest.mark.parametrize(
    ("kind", "method", "request_type"),
    [
        ("quotes", "get_stock_quotes", StockQuotesRequest),
        ("trades", "get_stock_trades", StockTradesRequest),
    ],
)
async def test_historical_ticks_follow_every_page_and_make_the_same_dataframe(
    stack: Stack, control: EmulatorControl, kind: str, method: str, request_type: Any
) -> None:
    start = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    for symbol in ("AAPL", "MSFT"):
        series = ticks(kind, symbol, 23, start)
        await getattr(control, f"set_{kind}_history")(symbol, series)
    await control.configure(max_page_size=5)
    request = request_type(symbol_or_symbols=["AAPL", "MSFT"], start=start)

    through = getattr(stack.face.stocks(), method)(request)
    pages = await control.calls_to(f"/v2/stocks/{kind}")
    direct = getattr(stack.alpaca.stocks(), method)(request)

    assert through == direct
    assert pages >= 10, "the SDK followed next_page_token through the gateway"
    assert {symbol: len(items) for symbol, items in through.data.items()} == {
        "AAPL": 23,
        "MSFT": 23,
    }
    assert through.df.equals(direct.df)


@proves(
    "OptionHistoricalDataClient.get_option_latest_quote",
    "OptionHistoricalDataClient.get_option_latest_trade",
    "OptionHistoricalDataClient.get_option_snapshot",
)
@pytest.mark.parametrize(
    ("method", "request_type"),
    [
        ("get_option_latest_quote", OptionLatestQuoteRequest),
        ("get_option_latest_trade", OptionLatestTradeRequest),
        ("get_option_snapshot", OptionSnapshotRequest),
    ],
)
def test_latest_option_calls_return_what_alpaca_returns(
    stack: Stack, method: str, request_type: Any
) -> None:
    contracts = stack.face.trading().get_option_contracts(
        GetOptionContractsRequest(underlying_symbols=["AAPL"], limit=3)
    )
    symbols = [contract.symbol for contract in contracts.option_contracts or []]
    request = request_type(symbol_or_symbols=[stack.seeded.option_contract, *symbols])

    through = getattr(stack.face.options(), method)(request)
    direct = getattr(stack.alpaca.options(), method)(request)

    assert through == direct
    assert stack.seeded.option_contract in through


@proves("OptionHistoricalDataClient.get_option_chain")
async def test_option_chain_follows_pages_and_returns_what_alpaca_returns(
    stack: Stack, control: EmulatorControl
) -> None:
    await control.configure(max_page_size=7)
    request = OptionChainRequest(underlying_symbol="SPY")

    through = stack.face.options().get_option_chain(request)
    pages = await control.calls_to("/v1beta1/options/snapshots/SPY")
    direct = stack.alpaca.options().get_option_chain(request)

    assert through == direct
    assert pages > 1
    assert len(through) > 7


# --- trading reads: Alpaca's answers, passed on --------------------------------------------------
@proves(
    "TradingClient.get_account",
    "TradingClient.get_all_positions",
    "TradingClient.get_open_position",
    "TradingClient.get_clock",
    "TradingClient.get_asset",
    "TradingClient.get_option_contracts",
    "TradingClient.get_option_contract",
)
@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("get_account", ()),
        ("get_all_positions", ()),
        ("get_open_position", ("AAPL",)),
        ("get_clock", ()),
        ("get_asset", ("SPY",)),
        ("get_option_contracts", (GetOptionContractsRequest(underlying_symbols=["AAPL"]),)),
        ("get_option_contract", ()),
    ],
)
def test_trading_reads_return_what_alpaca_returns(
    stack: Stack, method: str, args: tuple[Any, ...]
) -> None:
    args = args or ((stack.seeded.option_contract,) if method == "get_option_contract" else ())

    through = getattr(stack.face.trading(), method)(*args)
    direct = getattr(stack.alpaca.trading(), method)(*args)

    assert through == direct
    assert through  # an empty answer would prove nothing


# --- orders through the SDK ----------------------------------------------------------------------
def new_id() -> str:
    return f"bot-{uuid.uuid4().hex[:12]}"


def limit_buy(client_order_id: str | None = None, **changes: Any) -> LimitOrderRequest:
    fields: dict[str, Any] = {
        "symbol": "AAPL",
        "qty": 2,
        "side": OrderSide.BUY,
        "time_in_force": TimeInForce.DAY,
        "limit_price": 150.1,
        "client_order_id": client_order_id,
    }
    return LimitOrderRequest(**{**fields, **changes})


async def upstream_orders(control: EmulatorControl, client_order_id: str) -> list[dict[str, Any]]:
    return [o for o in await control.orders() if o["client_order_id"] == client_order_id]


@proves(
    "TradingClient.submit_order",
    "TradingClient.get_order_by_id",
    "TradingClient.get_order_by_client_id",
    "TradingClient.get_orders",
    "TradingClient.cancel_order_by_id",
)
async def test_an_order_is_submitted_read_listed_and_canceled_through_the_sdk(
    stack: Stack, control: EmulatorControl
) -> None:
    client_order_id = f"bot-{uuid.uuid4().hex[:12]}"
    trading, alpaca = stack.face.trading(), stack.alpaca.trading()

    placed = trading.submit_order(limit_buy(client_order_id))
    by_id = trading.get_order_by_id(placed.id)
    by_client_id = trading.get_order_by_client_id(client_order_id)
    listed = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    listed_direct = alpaca.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    held = alpaca.get_order_by_id(placed.id)
    trading.cancel_order_by_id(placed.id)
    after_cancel = alpaca.get_order_by_id(placed.id)

    assert isinstance(placed, Order)
    assert placed == by_id == by_client_id == held
    # alpaca-py keeps Alpaca's decimal strings as strings.
    assert (placed.client_order_id, placed.limit_price, placed.qty) == (
        client_order_id,
        "150.1",
        "2",
    )
    assert listed == listed_direct
    assert placed.id in {order.id for order in listed if isinstance(order, Order)}
    assert after_cancel.status == "canceled"
    assert len(await upstream_orders(control, client_order_id)) == 1


@proves("TradingClient.replace_order_by_id")
async def test_an_order_is_replaced_once_with_alpacas_new_order(
    stack: Stack, control: EmulatorControl
) -> None:
    trading = stack.face.trading()
    placed = trading.submit_order(limit_buy(new_id()))
    await control.set_order_status(str(placed.id), "new")  # at the venue: replaceable

    replacement = trading.replace_order_by_id(
        placed.id, ReplaceOrderRequest(qty=3, limit_price=151.25)
    )
    held = stack.alpaca.trading().get_order_by_id(replacement.id)
    old = stack.alpaca.trading().get_order_by_id(placed.id)

    assert replacement == held
    assert (replacement.qty, replacement.limit_price) == ("3", "151.25")
    assert replacement.replaces == placed.id
    assert (old.status, old.replaced_by) == ("replaced", replacement.id)
    refused = api_error(
        lambda: trading.replace_order_by_id(placed.id, ReplaceOrderRequest(qty=4))
    )  # the replaced order is closed
    direct = api_error(
        lambda: stack.alpaca.trading().replace_order_by_id(placed.id, ReplaceOrderRequest(qty=4))
    )
    assert refused.status_code == direct.status_code
    assert error_body(refused)["code"] == error_body(direct)["code"]


@proves("TradingClient.get_calendar", "TradingClient.get_all_assets")
async def test_the_calendar_and_the_asset_list_are_alpacas(
    stack: Stack, control: EmulatorControl
) -> None:
    days = [
        {"date": "2026-11-27", "open": "09:30", "close": "13:00", "session_open": "0400",
         "session_close": "1700", "settlement_date": "2026-11-30"},
        {"date": "2026-11-30", "open": "09:30", "close": "16:00", "session_open": "0400",
         "session_close": "2000", "settlement_date": "2026-12-01"},
    ]  # fmt: skip
    await control.set_calendar(days)
    dates = GetCalendarRequest(start=date(2026, 11, 27), end=date(2026, 11, 30))
    active = GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY)

    calendar = stack.face.trading().get_calendar(dates)
    assets = stack.face.trading().get_all_assets(active)

    assert calendar == stack.alpaca.trading().get_calendar(dates)
    assert [str(day.date) for day in calendar] == ["2026-11-27", "2026-11-30"]  # type: ignore[union-attr]
    assert assets == stack.alpaca.trading().get_all_assets(active)
    assert {"AAPL", "MSFT", "SPY"} <= {asset.symbol for asset in assets}  # type: ignore[union-attr]


@proves("TradingClient.cancel_orders")
async def test_cancel_all_cancels_what_alpaca_holds(stack: Stack, control: EmulatorControl) -> None:
    ids = [f"bot-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    placed = [stack.face.trading().submit_order(limit_buy(i)) for i in ids]

    statuses = stack.face.trading().cancel_orders()

    assert {order.id for order in placed} <= {status.id for status in statuses}
    assert {status.status for status in statuses} == {200}
    for client_order_id in ids:
        (order,) = await upstream_orders(control, client_order_id)
        assert order["status"] == "canceled"


@proves("TradingClient.submit_order")
async def test_an_order_without_a_client_order_id_gets_one_before_it_is_sent(
    stack: Stack, control: EmulatorControl
) -> None:
    placed = stack.face.trading().submit_order(
        MarketOrderRequest(symbol="MSFT", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )

    assert placed.client_order_id.startswith("gw-")
    assert len(await upstream_orders(control, placed.client_order_id)) == 1


@proves("TradingClient.submit_order")
async def test_the_same_client_order_id_never_makes_a_second_order(
    stack: Stack, control: EmulatorControl
) -> None:
    client_order_id = f"bot-{uuid.uuid4().hex[:12]}"
    trading = stack.face.trading()

    first = trading.submit_order(limit_buy(client_order_id))
    again = trading.submit_order(limit_buy(client_order_id))
    conflict = api_error(lambda: trading.submit_order(limit_buy(client_order_id, qty=3)))

    assert again.id == first.id
    assert conflict.status_code == 422
    assert error_body(conflict)["gateway_code"] == "IDEMPOTENCY_CONFLICT"
    assert error_body(conflict)["code"] == 40010001
    assert len(await upstream_orders(control, client_order_id)) == 1


@proves("TradingClient.submit_order", "TradingClient.cancel_order_by_id")
@pytest.mark.parametrize(
    ("refused", "status"),
    [
        (lambda t, _: t.submit_order(limit_buy(new_id(), qty=1_000_000)), 403),  # buying power
        (lambda t, _: t.submit_order(limit_buy(new_id(), symbol="ZZZZ")), 422),  # unknown asset
        (lambda t, cid: t.cancel_order_by_id(t.get_order_by_client_id(cid).id), 422),  # closed
    ],
    ids=["buying-power", "unknown-asset", "cancel-canceled"],
)
async def test_alpacas_own_refusals_keep_alpacas_status_and_code(
    stack: Stack,
    control: EmulatorControl,
    refused: Callable[[TradingClient, str], object],
    status: int,
) -> None:
    through_id, direct_id = (f"bot-{uuid.uuid4().hex[:12]}" for _ in range(2))
    for trading, client_order_id in (
        (stack.face.trading(), through_id),
        (stack.alpaca.trading(), direct_id),
    ):
        placed = trading.submit_order(limit_buy(client_order_id))
        trading.cancel_order_by_id(placed.id)  # type: ignore[union-attr]

    through = api_error(lambda: refused(stack.face.trading(), through_id))
    direct = api_error(lambda: refused(stack.alpaca.trading(), direct_id))

    assert through.status_code == direct.status_code == status
    assert error_body(through)["code"] == error_body(direct)["code"]
    assert error_body(direct)["message"] in error_body(through)["message"]


@proves("TradingClient.submit_order")
@pytest.mark.parametrize("fault", ["accept_then_reset", "accept_then_hang", "accept_then_500"])
@pytest.mark.parametrize("with_client_order_id", [True, False], ids=["bot-id", "no-id"])
async def test_a_submit_whose_reply_is_lost_returns_the_one_order_alpaca_took(
    stack: Stack, control: EmulatorControl, fault: str, with_client_order_id: bool
) -> None:
    client_order_id = f"bot-{uuid.uuid4().hex[:12]}" if with_client_order_id else None
    await control.add_fault(ORDERS, fault, count=1)  # type: ignore[arg-type]
    answered_before = face_requests(stack.gateway.base_url, "POST", "/alpaca/v2/orders")

    placed = await asyncio.to_thread(stack.face.trading().submit_order, limit_buy(client_order_id))

    (upstream,) = await upstream_orders(control, placed.client_order_id)
    assert upstream["id"] == str(placed.id)
    assert placed.client_order_id == (client_order_id or upstream["client_order_id"])
    # The SDK sent exactly one request: nothing on this path made it retry.
    assert face_requests(stack.gateway.base_url, "POST", "/alpaca/v2/orders") == answered_before + 1


@proves("TradingClient.submit_order")
@pytest.mark.parametrize("fault", ["status_500", "reset", "hang", "status_504", "rate_limited"])
async def test_a_submit_alpaca_never_took_fails_clearly_and_never_arrives_later(
    stack: Stack, control: EmulatorControl, fault: str
) -> None:
    client_order_id = f"bot-{uuid.uuid4().hex[:12]}"
    # A 429 spends the trading budget until Alpaca's reset: one second here, waited out below.
    await control.add_fault(ORDERS, fault, count=1, retry_after_s=1)  # type: ignore[arg-type]
    answered_before = face_requests(stack.gateway.base_url, "POST", "/alpaca/v2/orders")
    trading = stack.face.trading()

    failed = await asyncio.to_thread(
        api_error, lambda: trading.submit_order(limit_buy(client_order_id))
    )
    await control.clear_faults()
    if fault == "rate_limited":
        await asyncio.sleep(1.2)
    retried = trading.submit_order(limit_buy(client_order_id))

    assert failed.status_code not in (429, 504), "alpaca-py would send the POST again"
    assert failed.status_code >= 500
    body = error_body(failed)
    assert body["gateway_code"] in {
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
        "UPSTREAM_RATE_LIMITED",
        "ORDER_STATE_UNKNOWN",
    }
    assert body["gateway_code"] in str(failed)  # readable in the SDK's message
    assert face_requests(stack.gateway.base_url, "POST", "/alpaca/v2/orders") == answered_before + 2
    (upstream,) = await upstream_orders(control, client_order_id)
    assert upstream["id"] == str(retried.id)


# --- failures, in Alpaca's error shape -----------------------------------------------------------
async def test_an_upstream_500_is_an_api_error_the_sdk_does_not_retry(
    stack: Stack, control: EmulatorControl
) -> None:
    await control.set_quote("AMD", FRESH_QUOTE)
    await control.add_fault("/v2/stocks/quotes/latest", "status_500", count=1)
    request = StockLatestQuoteRequest(symbol_or_symbols="AMD")

    failed = api_error(lambda: stack.face.stocks().get_stock_latest_quote(request))

    assert failed.status_code == 503
    assert error_body(failed)["gateway_code"] == "UPSTREAM_UNAVAILABLE"
    assert await control.calls_to("/v2/stocks/quotes/latest") == 1


async def test_a_feed_the_plan_does_not_permit_is_a_403_like_alpacas(
    stack: Stack, control: EmulatorControl
) -> None:
    request = StockLatestQuoteRequest(symbol_or_symbols="AAPL", feed=DataFeed.SIP)

    through = api_error(lambda: stack.face.stocks().get_stock_latest_quote(request))
    direct = api_error(lambda: stack.alpaca.stocks().get_stock_latest_quote(request))

    assert through.status_code == direct.status_code == 403
    assert error_body(through)["gateway_code"] == "FEED_NOT_PERMITTED"


def test_unknown_symbols_are_left_out_and_unknown_assets_are_404_like_alpacas(
    stack: Stack,
) -> None:
    request = StockLatestQuoteRequest(symbol_or_symbols=["AAPL", "ZZZZ"])

    through = stack.face.stocks().get_stock_latest_quote(request)
    direct = stack.alpaca.stocks().get_stock_latest_quote(request)
    missing = api_error(lambda: stack.face.trading().get_asset("ZZZZ"))
    missing_direct = api_error(lambda: stack.alpaca.trading().get_asset("ZZZZ"))

    assert through == direct
    assert set(through) == {"AAPL"}
    assert missing.status_code == missing_direct.status_code == 404
    assert error_body(missing) == error_body(missing_direct)  # Alpaca's own refusal, passed on


def test_a_symbol_that_is_not_a_symbol_never_reaches_alpaca(stack: Stack) -> None:
    trading = stack.face.trading()

    for hostile in ("..", "../v2/account", "AAPL%2F..", "A" * 40):
        failed = api_error(lambda h=hostile: trading.get_asset(h))  # type: ignore[misc]
        assert failed.status_code in (404, 422), hostile
        assert "gateway_code" in error_body(failed)


@pytest.mark.parametrize(
    ("keys", "status"),
    [
        (lambda s: Keys(s.face.keys.key_id, "not-the-secret"), 401),
        (lambda s: Keys(s.alpaca.keys.key_id, s.alpaca.keys.secret), 401),  # Alpaca's own pair
        (lambda s: s.data_only, 403),
    ],
    ids=["wrong-secret", "alpaca-credentials", "data-only-key"],
)
def test_trading_needs_a_gateway_key_with_the_trading_scope(
    stack: Stack, keys: Callable[[Stack], Keys], status: int
) -> None:
    client = Clients(stack.face.url, keys(stack)).trading()

    failed = api_error(client.get_account)

    assert failed.status_code == status
    assert error_body(failed)["gateway_code"] in ("UNAUTHENTICATED", "FORBIDDEN")


def test_half_a_key_pair_is_refused(stack: Stack) -> None:
    url = stack.face.url + "/v2/account"

    only_id = httpx.get(url, headers={"APCA-API-KEY-ID": stack.face.keys.key_id}, timeout=5)
    only_secret = httpx.get(url, headers={"APCA-API-SECRET-KEY": stack.face.keys.secret}, timeout=5)

    assert only_id.status_code == only_secret.status_code == 401
    assert only_id.json()["gateway_code"] == only_secret.json()["gateway_code"] == "UNAUTHENTICATED"


def test_a_revoked_key_stops_working_on_the_face(stack: Stack) -> None:
    full = create_key(stack.env, "data:read")
    keys = Keys.of(full)
    request = StockLatestQuoteRequest(symbol_or_symbols="AAPL")
    assert Clients(stack.face.url, keys).stocks().get_stock_latest_quote(request)
    revoke = [sys.executable, "-m", "app.cli", "keys", "revoke", keys.key_id.split("_", 1)[1]]
    subprocess.run(
        revoke, cwd=REPO_ROOT, env=stack.env, capture_output=True, timeout=60, check=True
    )

    # Revocation reaches a running gateway within KEY_CACHE_TTL_S (1 s by default).
    client = Clients(stack.face.url, keys).stocks()
    deadline = time.monotonic() + 5
    failed: APIError | None = None
    while failed is None:
        try:
            client.get_stock_latest_quote(request)
        except APIError as refused:
            failed = refused
            break
        assert time.monotonic() < deadline, "the revoked key still works after 5 s"
        time.sleep(0.2)

    assert failed.status_code == 401
    assert error_body(failed)["gateway_code"] == "UNAUTHENTICATED"


def test_a_call_the_face_does_not_serve_is_an_alpaca_shaped_404(stack: Stack) -> None:
    failed = api_error(stack.face.trading().close_all_positions)

    assert failed.status_code == 404
    assert error_body(failed)["gateway_code"] == "ROUTE_NOT_FOUND"
    assert "/alpaca/v2/positions" in str(failed)


def test_answers_never_carry_the_gateways_alpaca_credentials(stack: Stack) -> None:
    headers = {"APCA-API-KEY-ID": stack.face.keys.key_id}
    headers["APCA-API-SECRET-KEY"] = stack.face.keys.secret
    answers = [
        httpx.get(stack.face.url + path, headers=headers, timeout=5)
        for path in ("/v2/account", "/v2/stocks/quotes/latest?symbols=AAPL", "/v2/nothing")
    ]

    for answer in answers:
        text = answer.text + str(answer.headers)
        assert stack.emulator.secret_key not in text
        assert stack.emulator.key_id not in text


# --- on a gateway of their own: a breaker opened, Alpaca's budget spent ------------------------
@contextmanager
def private_face(stack: Stack, tmp_path: Path, **settings: str) -> Iterator[Clients]:
    """Another served gateway on the same emulator, for a test that leaves it unusable."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = face_env(stack.emulator, tmp_path / "gateway.sqlite3", **settings)
    keys = Keys.of(create_key(env, "data:read,trading:read"))
    with ServedGateway(env, tmp_path / "gateway.log") as gateway:
        yield Clients(gateway.base_url + "/alpaca", keys)


@proves(
    "StockHistoricalDataClient.get_stock_latest_quote",
    "StockHistoricalDataClient.get_stock_snapshot",
    "StockHistoricalDataClient.get_stock_bars",
    "OptionHistoricalDataClient.get_option_chain",
)
async def test_with_redis_two_gateways_share_one_upstream_call_and_answer_alpacas_values(
    stack: Stack, control: EmulatorControl, tmp_path: Path, redis_url: str
) -> None:
    shared = {"REDIS_URL": redis_url, "CACHE_NAMESPACE": f"face-{uuid.uuid4().hex}"}
    start = datetime(*stack.seeded.first_bar_day.timetuple()[:3], tzinfo=UTC)
    calls: list[tuple[str, str, Any]] = [
        ("stocks", "get_stock_latest_quote", StockLatestQuoteRequest(symbol_or_symbols=STOCKS)),
        ("stocks", "get_stock_snapshot", StockSnapshotRequest(symbol_or_symbols=STOCKS)),
        ("stocks", "get_stock_bars",
         StockBarsRequest(symbol_or_symbols=STOCKS, timeframe=TimeFrame.Day, start=start)),
        ("options", "get_option_chain", OptionChainRequest(underlying_symbol="AAPL")),
    ]  # fmt: skip
    direct = [getattr(getattr(stack.alpaca, c)(), m)(r) for c, m, r in calls]
    await control.reset_calls()
    with (
        private_face(stack, tmp_path / "one", **shared) as one,
        private_face(stack, tmp_path / "two", **shared) as two,
    ):
        through_one = [getattr(getattr(one, c)(), m)(r) for c, m, r in calls]
        through_two = [getattr(getattr(two, c)(), m)(r) for c, m, r in calls]
    upstream = await control.calls()
    upstream.pop("/v2/clock", None)  # each gateway reads Alpaca's clock at start

    assert through_one == through_two == direct
    assert upstream == {
        "/v2/stocks/quotes/latest": 1,
        "/v2/stocks/snapshots": 1,
        "/v2/stocks/bars": 1,
        "/v1beta1/options/snapshots/AAPL": 1,
    }


async def test_an_open_breaker_is_a_fast_503_and_spares_alpaca(
    stack: Stack, control: EmulatorControl, tmp_path: Path
) -> None:
    await control.add_fault("/v2/stocks/quotes/latest", "status_500")
    settings = {"BREAKER_WINDOW_SIZE": "2", "BREAKER_MINIMUM_CALLS": "2"}
    with private_face(stack, tmp_path, BREAKER_OPEN_DURATION_S="60", **settings) as face:
        failures = [
            api_error(lambda s=symbol: face.stocks().get_stock_latest_quote(  # type: ignore[misc]
                StockLatestQuoteRequest(symbol_or_symbols=s)
            ))
            for symbol in ("AAPL", "MSFT", "SPY", "QQQ")
        ]  # fmt: skip
        account = face.trading().get_account()

    codes = [error_body(failure)["gateway_code"] for failure in failures]
    assert codes == ["UPSTREAM_UNAVAILABLE"] * 2 + ["CIRCUIT_OPEN"] * 2
    assert {failure.status_code for failure in failures} == {503}
    assert int(failures[-1].response.headers["Retry-After"]) > 0  # type: ignore[union-attr]
    assert await control.calls_to("/v2/stocks/quotes/latest") == 2
    assert isinstance(account, TradeAccount)  # the trading breaker is another breaker


async def test_alpaca_rate_limiting_is_a_503_so_the_sdk_does_not_sleep_and_resend(
    stack: Stack, control: EmulatorControl, tmp_path: Path
) -> None:
    await control.add_fault("/v2/stocks/quotes/latest", "rate_limited", retry_after_s=30)
    request = StockLatestQuoteRequest(symbol_or_symbols="AAPL")
    with private_face(stack, tmp_path) as face:
        failed = api_error(lambda: face.stocks().get_stock_latest_quote(request))
        held_back = api_error(lambda: face.stocks().get_stock_latest_quote(request))
        answered = face_requests(
            face.url.removesuffix("/alpaca"), "GET", "/alpaca/v2/stocks/quotes/latest"
        )

    assert failed.status_code == held_back.status_code == 503
    assert error_body(failed)["gateway_code"] == "UPSTREAM_RATE_LIMITED"
    assert int(held_back.response.headers["Retry-After"]) > 0  # type: ignore[union-attr]
    assert answered == 2, "alpaca-py sent each call once"
    assert await control.calls_to("/v2/stocks/quotes/latest") == 1  # the budget held back


# --- the README's list ----------------------------------------------------------------------------
def test_the_readme_lists_exactly_the_sdk_calls_proven_here() -> None:
    readme = (REPO_ROOT / "README.md").read_text()

    assert readme_listing(readme) == listing(proven_calls()), (
        "regenerate the README's list: .venv/bin/python -m tests.support.sdk_calls"
    )
