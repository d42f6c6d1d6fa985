"""The emulator's streams speak Alpaca's protocol: alpaca-py's StockDataStream,
OptionDataStream and TradingStream (url_override) receive exactly the ticks a test pushes and
the trade updates of orders submitted over REST; a raw websocket client sees the handshake,
the subscription messages, the framing (JSON text, MessagePack with Timestamp ``t``) and every
error code; and each fault does what Alpaca does (406 while a feed's slot is taken, also after
an unclean disconnect, 429 at the upgrade, mute sockets, abrupt disconnects)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import httpx
import msgpack
import pytest
from alpaca.common.enums import BaseURL
from alpaca.data.enums import OptionsFeed
from alpaca.data.live.option import OptionDataStream
from alpaca.data.live.stock import StockDataStream
from alpaca.data.live.websocket import DataStream
from alpaca.data.models import Quote
from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import TradeUpdate
from alpaca.trading.stream import TradingStream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.legacy.exceptions import InvalidStatusCode

from tests.emulator.control import EmulatorControl, EmulatorControlError, shared_ssl_context
from tests.emulator.process import EmulatorProcess
from tests.emulator.timestamps import rfc3339_ns
from tests.emulator.wire_json import loads
from tests.support import streams
from tests.support.streams import (
    OCC,
    OPTION_QUOTE,
    OPTION_TRADE,
    QUOTE,
    TRADE,
    Raw,
    collector,
    quote,
    same_values,
)

pytestmark = pytest.mark.contract

WAIT_S = 5.0
BAR = {"T": "b", "S": "MSFT", "o": Decimal("447.1"), "h": Decimal("447.5"),
       "l": Decimal("446.9"), "c": Decimal("447.2"), "v": 12000, "t": "2024-07-24T13:56:00Z",
       "n": 130, "vw": Decimal("447.21")}  # fmt: skip
LIMIT_BUY = {"symbol": "AAPL", "qty": "2", "side": "buy", "type": "limit",
             "time_in_force": "day", "limit_price": "150"}  # fmt: skip


def ws_url(emulator: EmulatorProcess, path: str) -> str:
    return emulator.base_url.replace("http://", "ws://") + path


async def eventually(check: Callable[[], bool], what: str) -> None:
    await streams.eventually(check, what, WAIT_S)


def running(stream: DataStream | TradingStream) -> AbstractAsyncContextManager[None]:
    return streams.running(stream, WAIT_S)


def raw(emulator: EmulatorProcess, path: str, **options: Any) -> AbstractAsyncContextManager[Raw]:
    """A raw connection to the emulator (`streams.raw`): JSON read exactly as
    tests.emulator.wire_json reads it, every wait WAIT_S."""
    return streams.raw(ws_url(emulator, path), decode=loads, wait_s=WAIT_S, **options)


def stock_stream(
    emulator: EmulatorProcess, path: str = "/v2/iex", **options: Any
) -> StockDataStream:
    """alpaca-py's StockDataStream on one of the emulator's stock feeds (IEX unless told)."""
    return StockDataStream(
        emulator.key_id, emulator.secret_key, url_override=ws_url(emulator, path), **options
    )


async def refused_at_start(stream: DataStream | TradingStream, match: str) -> None:
    """alpaca-py's connect (`_start_ws`) fails with a ValueError matching `match`; the stream
    is closed after."""
    with pytest.raises(ValueError, match=match):
        await stream._start_ws()
    await stream.close()


async def authed(emulator: EmulatorProcess, client: Raw) -> None:
    assert await client.auth_reply(emulator.key_id, emulator.secret_key) == [
        {"T": "success", "msg": "authenticated"}
    ]


async def subscribed_to_aapl_quotes(emulator: EmulatorProcess, client: Raw) -> None:
    """Authenticated, then subscribed to AAPL's quotes (the subscription message read)."""
    await authed(emulator, client)
    await client.send({"action": "subscribe", "quotes": ["AAPL"]})
    await client.recv()


def error(code: int, msg: str) -> list[dict[str, Any]]:
    return [{"T": "error", "code": code, "msg": msg}]


# --- alpaca-py's stream clients receive exactly what was pushed --------------------------------


async def test_stock_stream_receives_the_pushed_ticks_in_order_with_exact_values(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    got, keep = collector()
    stream = stock_stream(emulator, raw_data=True)
    stream.subscribe_quotes(keep, "AAPL", "MSFT")
    stream.subscribe_trades(keep, "AAPL")
    stream.subscribe_bars(keep, "MSFT")
    pushed = [quote("AAPL", "229.85"), quote("MSFT", "447.01", 1), TRADE, BAR]
    pushed += [quote("AAPL", str(Decimal("229.80") + Decimal(n) / 100), 10 + n) for n in range(20)]
    not_subscribed = [{**TRADE, "S": "MSFT"}, {**BAR, "S": "AAPL"}, quote("IBM", "1.5")]
    async with running(stream):
        await control.streams.wait_for_subscriber("iex", "bars", "MSFT")
        reached = await control.streams.push("iex", pushed[:2] + not_subscribed + pushed[2:8])
        await control.streams.push("iex", pushed[8:], per_frame=3)
        await eventually(lambda: len(got) >= len(pushed), "every pushed tick")
        await asyncio.sleep(0.1)
    assert len(reached) == 1
    assert len(got) == len(pushed)  # nothing it did not subscribe to
    for symbol in ("AAPL", "MSFT"):
        mine = [m for m in pushed if m["S"] == symbol]
        seen = [m for m in got if m["S"] == symbol]
        assert len(seen) == len(mine)
        assert all(same_values(r, p) for r, p in zip(seen, mine, strict=True)), (seen, mine)


async def test_stock_stream_models_parse_the_ticks(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    got: list[Quote] = []

    async def keep(message: Quote) -> None:
        got.append(message)

    stream = stock_stream(emulator)
    stream.subscribe_quotes(keep, "AAPL")
    async with running(stream):
        await control.streams.wait_for_subscriber("iex", "quotes", "AAPL")
        await control.streams.push("iex", [QUOTE])
        await eventually(lambda: bool(got), "the quote")
    [parsed] = got
    assert (parsed.symbol, parsed.bid_price, parsed.ask_price) == ("AAPL", 229.85, 229.9)
    assert (parsed.bid_size, parsed.ask_size, parsed.conditions) == (2, 1, ["R"])
    assert parsed.timestamp.isoformat() == "2024-07-24T13:56:53.639713+00:00"


async def test_option_stream_receives_option_trades_and_quotes(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.configure(plan="unlimited")
    got, keep = collector()
    stream = OptionDataStream(
        emulator.key_id, emulator.secret_key, raw_data=True, feed=OptionsFeed.OPRA,
        url_override=ws_url(emulator, "/v1beta1/opra"),
    )  # fmt: skip
    stream.subscribe_quotes(keep, OCC)
    stream.subscribe_trades(keep, OCC)
    async with running(stream):
        await control.streams.wait_for_subscriber("opra", "trades", OCC)
        await control.streams.push("opra", [OPTION_QUOTE, OPTION_TRADE])
        await eventually(lambda: len(got) == 2, "the option quote and trade")
    assert same_values(got[0], OPTION_QUOTE)
    assert same_values(got[1], OPTION_TRADE)


async def test_trading_stream_reports_new_then_fill_then_cancel_of_rest_orders(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.set_state(assets=["AAPL", "MSFT"])
    await control.set_position("AAPL", None)
    updates: list[TradeUpdate] = []

    async def keep(update: TradeUpdate) -> None:
        updates.append(update)

    stream = TradingStream(
        emulator.key_id, emulator.secret_key, url_override=ws_url(emulator, "/stream")
    )
    stream.subscribe_trade_updates(keep)
    async with (
        running(stream),
        httpx.AsyncClient(base_url=emulator.base_url, headers=emulator.auth_headers,
                          verify=shared_ssl_context()) as alpaca,
    ):  # fmt: skip
        await control.streams.wait_for_subscriber("trading", "trade_updates", "")
        order = (await alpaca.post("/v2/orders", json=LIMIT_BUY)).json()
        await eventually(lambda: len(updates) == 1, "the new event")
        await control.set_order_status(
            order["id"], "partially_filled", filled_qty="1", filled_avg_price="149.5"
        )
        await control.set_order_status(order["id"], "filled", filled_avg_price="149.75")
        other = (await alpaca.post("/v2/orders", json={**LIMIT_BUY, "symbol": "MSFT"})).json()
        assert (await alpaca.delete(f"/v2/orders/{other['id']}")).status_code == 204
        await eventually(lambda: len(updates) == 5, "partial fill, fill, new, canceled")
        stored = (await alpaca.get(f"/v2/orders/{other['id']}")).json()
    events = [(u.event, str(u.order.id)) for u in updates]
    assert events == [
        (TradeEvent.NEW, order["id"]),
        (TradeEvent.PARTIAL_FILL, order["id"]),
        (TradeEvent.FILL, order["id"]),
        (TradeEvent.NEW, other["id"]),
        (TradeEvent.CANCELED, other["id"]),
    ]
    partial, fill = updates[1], updates[2]
    assert (partial.qty, partial.price, partial.position_qty) == (1, 149.5, 0)
    assert (fill.qty, fill.price) == (1, 150)  # 2 at 149.75 on average after 1 at 149.5
    assert fill.order.filled_qty == "2"
    sent = [f["frame"] for f in await control.streams.sent("trading")]
    assert sent[-1]["data"]["order"] == stored  # the order as GET /v2/orders/{id} answers it


# --- the handshake, subscriptions and framing, seen by a raw client ----------------------------


async def test_json_session_handshake_subscriptions_and_text_frames(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v2/iex") as client:
        await authed(emulator, client)
        await client.send({"action": "subscribe", "trades": ["AAPL"], "quotes": ["AMD", "CLDR"],
                           "bars": ["*"], "orderbooks": None})  # fmt: skip
        assert await client.recv() == [
            {"T": "subscription", "trades": ["AAPL"], "quotes": ["AMD", "CLDR"], "bars": ["*"],
             "updatedBars": [], "dailyBars": [], "statuses": [], "lulds": [],
             "corrections": ["AAPL"], "cancelErrors": ["AAPL"]}
        ]  # fmt: skip
        await client.send({"action": "unsubscribe", "bars": ["*"], "quotes": ["AMD"]})
        answer = (await client.recv())[0]
        assert (answer["quotes"], answer["bars"]) == (["CLDR"], [])
        correction = {"T": "c", "S": "AAPL", "x": "V", "oi": 1, "op": Decimal("1.5"), "os": 10,
                      "oc": ["@"], "ci": 2, "cp": Decimal("1.50"), "cs": 10, "cc": ["@"],
                      "t": "2024-07-24T13:56:54Z", "z": "C"}  # fmt: skip
        await control.streams.push("iex", [TRADE, correction, {**BAR, "S": "CLDR"}])
        frame = await asyncio.wait_for(client.ws.recv(), WAIT_S)
        assert isinstance(frame, str)
        assert loads(frame) == [TRADE, correction]  # the bar's channel was left
        assert '"p":229.87' in frame  # decimals keep their text


async def test_msgpack_frames_carry_t_as_a_timestamp_extension_with_nanoseconds(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v2/iex", use_msgpack=True) as client:
        await subscribed_to_aapl_quotes(emulator, client)
        await control.streams.push("iex", [QUOTE])
        frame = await asyncio.wait_for(client.ws.recv(), WAIT_S)
    assert isinstance(frame, bytes)
    [received] = msgpack.unpackb(frame)
    assert isinstance(received["t"], msgpack.Timestamp)
    assert received["t"].to_unix_nano() == rfc3339_ns(str(QUOTE["t"]))
    assert same_values(received, QUOTE)
    assert list(received)[:2] == ["T", "S"]


async def test_header_auth_authenticates_on_connect(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v2/test", headers=emulator.auth_headers) as client:
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]
        assert await client.auth_reply(emulator.key_id, emulator.secret_key) == error(
            403, "already authenticated"
        )


async def test_error_codes_of_a_session(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.streams.configure(symbol_limit=2)
    async with raw(emulator, "/v2/iex") as client:
        await client.ws.send("not json")
        assert await client.recv() == error(400, "invalid syntax")
        await client.send({"action": "subscribe", "trades": ["AAPL"]})
        assert await client.recv() == error(401, "not authenticated")
        assert await client.auth_reply(emulator.key_id, "wrong") == error(402, "auth failed")
        await authed(emulator, client)  # the connection stays open after an auth error
        await client.send({"action": "subscribe", "trades": ["aapl"]})
        assert await client.recv() == error(400, "invalid syntax")  # a badly formatted symbol
        await client.send({"action": "subscribe", "trades": ["AAPL", "MSFT"], "quotes": ["IBM"]})
        assert await client.recv() == error(405, "symbol limit exceeded")
        await client.send({"action": "subscribe", "trades": ["AAPL"]})
        assert (await client.recv())[0]["trades"] == ["AAPL"]  # unchanged by the refusal
        await client.send({"action": "subscribe", "bars": "AAPL"})
        assert await client.recv() == error(400, "invalid syntax")


async def test_auth_timeout_closes_the_connection(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.streams.configure(auth_timeout_ms=200)
    async with raw(emulator, "/v2/iex") as client:
        assert await client.recv() == error(404, "auth timeout")
        with pytest.raises(ConnectionClosed):
            await client.recv()


async def test_paid_feeds_answer_insufficient_subscription_on_the_free_plan(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    for path in ("/v2/sip", "/v1beta1/opra"):
        async with raw(emulator, path, use_msgpack=True) as client:
            assert await client.auth_reply(emulator.key_id, emulator.secret_key) == error(
                409, "insufficient subscription"
            )
    for path in ("/v2/delayed_sip", "/v2/test", "/v1beta1/indicative"):
        async with raw(emulator, path, use_msgpack=True) as client:
            await authed(emulator, client)
    await control.configure(plan="unlimited")
    async with raw(emulator, "/v2/sip", use_msgpack=True) as client:
        await authed(emulator, client)


async def test_alpaca_py_surfaces_insufficient_subscription_and_stops(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    stream = stock_stream(emulator, "/v2/sip")
    await refused_at_start(stream, "insufficient subscription")


async def test_option_streams_are_msgpack_only_and_refuse_stock_channels(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v1beta1/indicative", connected=False) as client:
        assert await client.recv() == error(
            412, "option messages are only available in MsgPack format"
        )
        with pytest.raises(ConnectionClosed):
            await client.recv()
    async with raw(emulator, "/v1beta1/indicative", use_msgpack=True) as client:
        await authed(emulator, client)
        await client.send({"action": "subscribe", "bars": [OCC]})
        assert await client.recv() == error(410, "invalid subscribe action for this feed")
        await client.send({"action": "subscribe", "quotes": ["*"]})
        assert await client.recv() == error(
            413, "star subscription is not allowed for option quotes"
        )
        await client.send({"action": "subscribe", "trades": ["*"], "quotes": [OCC]})
        assert await client.recv() == [{"T": "subscription", "trades": ["*"], "quotes": [OCC]}]
        await client.send({"action": "subscribe", "trades": ["AAPL"]})
        assert await client.recv() == error(400, "invalid syntax")  # not an OCC symbol


async def test_errors_pushed_go_alone_in_their_frame_to_every_client(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v2/iex") as client:
        await subscribed_to_aapl_quotes(emulator, client)
        internal = {"T": "error", "code": 500, "msg": "internal error"}
        await control.streams.push("iex", [QUOTE, internal, QUOTE, QUOTE], per_frame=1)
        assert [await client.recv() for _ in range(4)] == [[QUOTE], [internal], [QUOTE], [QUOTE]]


# --- one connection per feed -------------------------------------------------------------------


async def test_second_connection_gets_406_and_a_clean_close_frees_the_slot(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v2/iex") as first:
        await authed(emulator, first)
        async with raw(emulator, "/v2/iex") as second:
            assert await second.auth_reply(emulator.key_id, emulator.secret_key) == error(
                406, "connection limit exceeded"
            )
            async with raw(emulator, "/v2/test") as other_feed:  # feeds have their own slots
                await authed(emulator, other_feed)
            await first.ws.close()
            await control.streams.wait_for_connections("iex", 1)
            await authed(emulator, second)  # retried on the same connection, as Go's client does
    assert (await control.streams.state())["attempts"] == {"/v2/iex": 2, "/v2/test": 1}
    assert (await control.calls())["/v2/iex"] == 2


async def test_after_an_unclean_disconnect_the_slot_stays_taken_for_the_release_time(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.streams.configure(slot_release_ms=600)
    async with raw(emulator, "/v2/iex") as first:
        await authed(emulator, first)
        assert first.ws.transport is not None
        first.ws.transport.abort()  # the client vanishes: no close frame
    await control.streams.wait_for_connections("iex", 0)
    slot = (await control.streams.state())["slots"]["/v2/iex"]
    assert slot["connection"] is None
    assert 0 < slot["free_in_ms"] <= 600
    async with raw(emulator, "/v2/iex") as second:
        assert await second.auth_reply(emulator.key_id, emulator.secret_key) == error(
            406, "connection limit exceeded"
        )
        await asyncio.sleep(0.7)
        await authed(emulator, second)


async def test_alpaca_py_gets_406_while_the_slot_is_taken_then_recovers(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    got, keep = collector()
    stream = stock_stream(emulator, raw_data=True)
    async with raw(emulator, "/v2/iex") as holder:
        await authed(emulator, holder)
        await refused_at_start(stream, "connection limit exceeded")
    await control.add_fault("/v2/iex", "stream_connection_limit", count=1)
    stream.subscribe_quotes(keep, "AAPL")
    async with running(stream):  # refused once, then reconnects after its backoff (<= 1 s)
        await control.streams.wait_for_subscriber("iex", "quotes", "AAPL")
        await control.streams.push("iex", [QUOTE])
        await eventually(lambda: bool(got), "the quote after the reconnect")
    assert await control.streams.attempts("iex") == 4  # the holder, then alpaca-py's three


# --- faults ------------------------------------------------------------------------------------


async def test_429_at_the_upgrade(emulator: EmulatorProcess, control: EmulatorControl) -> None:
    await control.add_fault("/v2/iex", "rate_limited", count=1)
    stream = stock_stream(emulator)
    with pytest.raises(InvalidStatusCode) as refused:
        await stream._start_ws()
    assert refused.value.status_code == 429
    await stream._start_ws()  # the fault is spent: the next attempt connects
    await stream.close()
    assert await control.streams.attempts("iex") == 2
    await control.add_fault("/stream", "rate_limited", count=1)
    with pytest.raises(InvalidStatus) as trading_refused:
        async with connect(ws_url(emulator, "/stream"), proxy=None):
            pass
    assert trading_refused.value.response.status_code == 429


async def test_auth_failure_fault(emulator: EmulatorProcess, control: EmulatorControl) -> None:
    await control.add_fault("/v2/*", "stream_auth_failed", count=1)
    stream = stock_stream(emulator)
    await refused_at_start(stream, "auth failed")
    await control.add_fault("/stream", "stream_auth_failed", count=1)
    trading = TradingStream(
        emulator.key_id, emulator.secret_key, url_override=ws_url(emulator, "/stream")
    )
    await refused_at_start(trading, "failed to authenticate")


async def test_mute_socket_answers_pings_but_sends_no_data(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v2/iex") as client:
        await subscribed_to_aapl_quotes(emulator, client)
        await control.add_fault("/v2/iex", "stream_mute", count=1)
        assert await control.faults() == []  # spent on the open connection
        await control.streams.push("iex", [QUOTE])
        assert await client.quiet()
        await asyncio.wait_for(await client.ws.ping(), WAIT_S)  # still answers pings
        [conn] = await control.streams.connections("iex")
        assert (conn["muted"], conn["deaf"], conn["withheld"]) == (True, False, 1)


async def test_mute_socket_without_pongs(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with raw(emulator, "/v2/iex") as client:
        await authed(emulator, client)
        await control.add_fault("/v2/iex", "stream_mute_no_pong")
        pong = await client.ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pong, 0.5)
        client.ws.transport.abort()
    await control.streams.wait_for_connections("iex", 0)


async def test_new_connection_goes_mute_after_its_subscription_and_alpaca_py_reconnects(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    """alpaca-py#740: connected, authenticated and subscribed, then nothing. With a
    data_timeout alpaca-py drops the socket and reconnects (the mute one freed its slot)."""
    await control.add_fault("/v2/iex", "stream_mute", count=1)
    got, keep = collector()
    stream = stock_stream(emulator, raw_data=True, data_timeout=0.5)
    stream.subscribe_quotes(keep, "AAPL")
    async with running(stream):
        mute = await control.streams.wait_for_subscriber("iex", "quotes", "AAPL")
        await control.streams.push("iex", [QUOTE])  # withheld
        deadline = time.monotonic() + WAIT_S
        while (await control.streams.wait_for_subscriber("iex", "quotes", "AAPL")) == mute:
            assert time.monotonic() < deadline, "alpaca-py never left the mute socket"
            await asyncio.sleep(0.05)
        assert not got
        await control.streams.push("iex", [QUOTE])
        await eventually(lambda: bool(got), "a quote on the second connection")
    assert await control.streams.attempts("iex") == 2
    assert len(got) == 1
    assert same_values(got[0], QUOTE)


async def test_abrupt_disconnect_sends_no_close_frame_and_keeps_the_slot(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    for kind in ("stream_disconnect", "stream_reset"):
        async with raw(emulator, "/v2/iex") as client:
            await authed(emulator, client)
            await control.add_fault("/v2/iex", kind, count=1)
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.rcvd is None  # no close frame from the server
        await control.streams.wait_for_connections("iex", 0)
        assert (await control.streams.state())["slots"]["/v2/iex"]["connection"] is None
        async with raw(emulator, "/v2/iex") as again:
            assert await again.auth_reply(emulator.key_id, emulator.secret_key) == error(
                406, "connection limit exceeded"
            )
            await control.streams.free_slots()
            await authed(emulator, again)
        await control.reset()


async def test_trading_stream_protocol_and_binary_frames(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    async with connect(ws_url(emulator, "/stream"), proxy=None) as ws:
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        frame = await asyncio.wait_for(ws.recv(), WAIT_S)
        assert isinstance(frame, bytes)  # paper trading sends binary frames
        assert json.loads(frame) == {
            "stream": "authorization",
            "data": {"status": "unauthorized", "action": "listen"},
        }
        await ws.send(json.dumps({"action": "authenticate", "data": {
            "key_id": emulator.key_id, "secret_key": emulator.secret_key}}))  # fmt: skip
        assert json.loads(await ws.recv()) == {
            "stream": "authorization",
            "data": {"status": "authorized", "action": "authenticate"},
        }
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates", "x"]}}))
        assert json.loads(await ws.recv()) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates"]},
        }


# --- the control API and scenarios -------------------------------------------------------------


@pytest.mark.parametrize(
    ("feed", "body", "reason"),
    [
        ("iex", [{**QUOTE, "bid": 1}], "messages[0].bid: unknown quote field"),
        ("iex", [{k: v for k, v in QUOTE.items() if k != "z"}], "the quote has no z"),
        ("iex", [{**QUOTE, "bp": "229.85"}], "messages[0].bp: must be a number"),
        ("iex", [{**QUOTE, "S": "aapl"}], "messages[0].S: must be a stock symbol"),
        ("iex", [{**QUOTE, "T": "o"}], "messages[0].T: must be one of"),
        ("opra", [QUOTE], "messages[0].S: must be an OCC option symbol"),
        ("opra", [{**OPTION_QUOTE, "T": "b"}], "messages[0].T: must be one of t, q, error"),
        ("iex", [], "must be a non-empty list"),
        ("trading", [QUOTE], "unknown feed 'trading'"),
    ],
)
async def test_pushed_messages_are_checked_strictly(
    control: EmulatorControl, feed: str, body: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(EmulatorControlError, match="400") as refused:
        await control.streams.push(feed, body)
    assert reason in refused.value.body


async def test_reset_ends_every_stream_and_clears_the_counters(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.streams.configure(slot_release_ms=60_000)
    async with raw(emulator, "/v2/iex") as client:
        await authed(emulator, client)
        await control.reset()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
    assert await control.streams.state() == {"attempts": {}, "connections": [], "slots": {}}


async def test_scenario_pushes_ticks_and_runs_stream_faults_on_its_timeline(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    tick = {k: v for k, v in QUOTE.items() if k != "t"}
    await control.load_scenario({
        "streams": [{"at_s": Decimal("0.5"), "feed": "iex", "messages": [{**tick, "t": "now"}]}],
        "faults": [{"at_s": 1, "path": "/v2/iex", "kind": "stream_disconnect", "count": 1}],
    })  # fmt: skip
    loaded_ns = time.time_ns()
    async with raw(emulator, "/v2/iex") as client:
        await subscribed_to_aapl_quotes(emulator, client)
        [received] = await client.recv()
        assert abs(rfc3339_ns(received["t"]) - (loaded_ns + 500_000_000)) < 300_000_000
        assert {k: v for k, v in received.items() if k != "t"} == tick
        with pytest.raises(ConnectionClosed):
            await client.recv()


async def test_scenario_stream_section_is_checked(control: EmulatorControl) -> None:
    bad = {"streams": [{"at_s": 1, "feed": "iex", "messages": [{**QUOTE, "bp": True}]}]}
    with pytest.raises(EmulatorControlError, match=r"streams\[0\]\.messages\[0\]\.bp"):
        await control.load_scenario(bad)
    with pytest.raises(EmulatorControlError, match=r"streams\[0\]\.feed: must be one of"):
        await control.load_scenario({"streams": [{"at_s": 0, "feed": "nope", "messages": []}]})


async def test_endpoints_are_the_ones_alpaca_py_builds(emulator: EmulatorProcess) -> None:
    """url_override replaces the whole URL; without it alpaca-py would use these paths."""
    stock = StockDataStream("k", "s")
    option = OptionDataStream("k", "s")
    assert stock._endpoint == BaseURL.MARKET_DATA_STREAM.value + "/v2/iex"
    assert option._endpoint == BaseURL.MARKET_DATA_STREAM.value + "/v1beta1/indicative"
    assert str(BaseURL.TRADING_STREAM_PAPER.value).endswith("/stream")
