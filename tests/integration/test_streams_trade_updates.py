"""alpaca-py's TradingStream through the gateway: an order submitted through the gateway's
Alpaca face produces its `new` and `fill` events, exactly as Alpaca sent them; keys without
trading:read are refused."""

from __future__ import annotations

import asyncio
import json

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce, TradeEvent
from alpaca.trading.models import Order
from alpaca.trading.requests import LimitOrderRequest
from alpaca.trading.stream import TradingStream
from websockets.asyncio.client import connect

from tests.emulator.control import EmulatorControl
from tests.support.streams import (
    WAIT_S,
    StreamGateway,
    collector,
    eventually,
    gateway,
    running,
)

pytestmark = pytest.mark.integration
__all__ = ["gateway"]  # the fixture, imported for this module's tests


async def test_an_order_submitted_through_the_gateway_streams_its_new_and_fill(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    await emulator.set_state(assets=["AAPL"])
    updates, keep = collector()
    stream = TradingStream(
        gateway.key_id, gateway.secret, raw_data=True, url_override=gateway.ws_url("/stream")
    )
    stream.subscribe_trade_updates(keep)
    trading = TradingClient(
        gateway.key_id, gateway.secret, paper=True, url_override=gateway.face_url
    )
    request = LimitOrderRequest(
        symbol="AAPL", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=150
    )
    async with running(stream):
        await emulator.streams.wait_for_subscriber("trading", "trade_updates", "")
        order = await asyncio.to_thread(trading.submit_order, request)
        assert isinstance(order, Order)
        await eventually(lambda: len(updates) == 1, "the new event")
        await emulator.set_order_status(str(order.id), "filled", filled_avg_price="149.75")
        await eventually(lambda: len(updates) == 2, "the fill event")
    sent = [f["frame"] for f in await emulator.streams.sent("trading")]
    events = [u for u in updates if u["stream"] == "trade_updates"]
    assert [u["data"]["event"] for u in events] == [TradeEvent.NEW, TradeEvent.FILL]
    assert {u["data"]["order"]["id"] for u in events} == {str(order.id)}
    # Exactly what Alpaca sent: the gateway relays trade-update frames untouched.
    assert events == [f for f in sent if f.get("stream") == "trade_updates"]


async def test_a_data_only_key_cannot_listen_to_trade_updates(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    data_only = gateway.create_key("data:read")
    prefix, key_hex, secret = data_only.split("_", 2)
    async with connect(
        gateway.ws_url("/stream"), proxy=None, ping_interval=None, open_timeout=WAIT_S
    ) as ws:
        auth = {"key_id": f"{prefix}_{key_hex}", "secret_key": secret}
        await ws.send(json.dumps({"action": "authenticate", "data": auth}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    assert answer == {
        "stream": "authorization",
        "data": {"status": "unauthorized", "action": "authenticate"},
    }
    assert refused["data"] == {"status": "unauthorized", "action": "listen"}
    assert await emulator.streams.attempts("trading") == 0  # nobody listens: nothing opened
