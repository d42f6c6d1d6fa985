"""What the one upstream connection holds at Alpaca (app/streams/subscriptions.py
UpstreamHoldings): each message waits for Alpaca's answer in order, a refused subscribe's
symbols are held back until an unsubscribe may have made room, and a new symbol is never asked
for together with the refused ones."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from app.metrics import Metrics
from app.streams.feeds import BY_NAME
from app.streams.subscriptions import UpstreamHoldings, Wanted
from app.streams.upstream import UpstreamConfig, UpstreamFeed, _Connection


def quotes(*symbols: str) -> Wanted:
    return {"quotes": frozenset(symbols)}


def test_unsubscribes_go_first_and_every_message_awaits_its_answer() -> None:
    holdings = UpstreamHoldings()
    assert holdings.plan(quotes("AAPL", "MSFT")) == [("subscribe", {"quotes": ["AAPL", "MSFT"]})]

    planned = holdings.plan(quotes("AAPL", "IBM"))

    assert planned == [("unsubscribe", {"quotes": ["MSFT"]}), ("subscribe", {"quotes": ["IBM"]})]
    assert len(holdings.pending) == 3
    holdings.confirmed(quotes("AAPL", "MSFT"))
    assert len(holdings.pending) == 2
    assert holdings.acknowledged == quotes("AAPL", "MSFT")


def test_a_refused_subscribe_is_held_back_and_not_asked_again_while_nothing_changes() -> None:
    holdings = UpstreamHoldings()
    holdings.plan(quotes("AAPL", "MSFT"))
    holdings.confirmed(quotes("AAPL", "MSFT"))
    holdings.plan(quotes("AAPL", "MSFT", "IBM"))

    assert holdings.refusal() == {"quotes": ["IBM"]}

    assert holdings.held == quotes("AAPL", "MSFT")
    # The lease tick wants the same union again and again: nothing is sent.
    assert holdings.plan(quotes("AAPL", "MSFT", "IBM")) == []
    assert holdings.plan(quotes("AAPL", "MSFT", "IBM")) == []


def test_a_new_symbol_is_asked_for_alone_while_another_is_held_back() -> None:
    holdings = UpstreamHoldings()
    holdings.plan(quotes("IBM", "TSLA"))
    holdings.refusal()

    assert holdings.plan(quotes("IBM", "TSLA", "NVDA")) == [("subscribe", {"quotes": ["NVDA"]})]


def test_an_unsubscribe_makes_room_and_the_refused_are_asked_for_again() -> None:
    holdings = UpstreamHoldings()
    holdings.plan(quotes("AAPL", "MSFT"))
    holdings.confirmed(quotes("AAPL", "MSFT"))
    holdings.plan(quotes("AAPL", "MSFT", "IBM"))
    holdings.refusal()

    planned = holdings.plan(quotes("AAPL", "IBM"))

    assert planned == [("unsubscribe", {"quotes": ["MSFT"]}), ("subscribe", {"quotes": ["IBM"]})]
    assert holdings.held == quotes("AAPL", "IBM")


def test_a_refused_symbol_nobody_wants_any_more_is_forgotten() -> None:
    holdings = UpstreamHoldings()
    holdings.plan(quotes("IBM"))
    holdings.refusal()
    holdings.plan({})  # the client left

    assert holdings.refused == {}
    assert holdings.plan(quotes("IBM")) == [("subscribe", {"quotes": ["IBM"]})]


def test_a_refusal_answers_the_oldest_message_waiting() -> None:
    holdings = UpstreamHoldings()
    holdings.plan(quotes("AAPL"))
    holdings.plan(quotes("AAPL", "IBM"))

    holdings.confirmed(quotes("AAPL"))  # AAPL's subscribe
    refused = holdings.refusal()  # IBM's

    assert refused == {"quotes": ["IBM"]}
    assert holdings.held == quotes("AAPL")
    assert not holdings.pending


def test_a_refused_unsubscribe_holds_nothing_back() -> None:
    holdings = UpstreamHoldings()
    holdings.plan(quotes("AAPL"))
    holdings.confirmed(quotes("AAPL"))
    holdings.plan({})

    assert holdings.refusal() == {}
    assert holdings.refused == {}


class DrainingSocket:
    """A websocket whose second send waits for its buffer to drain, as aiohttp's does past
    64 KiB: what another sync sends meanwhile would land between the first one's messages."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.calls = 0

    async def send_bytes(self, data: bytes) -> None:
        self.calls += 1
        if self.calls == 2:
            await asyncio.sleep(0.01)
        self.sent.append(msgpack.unpackb(data))


async def test_syncs_run_one_at_a_time_so_alpaca_ends_holding_what_the_gateway_believes() -> None:
    feed = UpstreamFeed(
        BY_NAME["iex"],
        UpstreamConfig(url="ws://unused", credentials=None, policy=None, silence_s=0,  # type: ignore[arg-type]
                       handshake_timeout_s=1),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Metrics(),
    )  # fmt: skip
    socket = DrainingSocket()
    connection = _Connection(socket)  # type: ignore[arg-type]
    connection.holdings.plan(quotes("X"))
    feed._connection = connection
    feed._task = asyncio.get_running_loop().create_future()  # the connection is up

    feed.want(quotes("Y"))  # a client moves from X to Y
    await asyncio.sleep(0)
    feed.want(quotes())  # and leaves
    await asyncio.sleep(0.1)

    at_alpaca: set[str] = {"X"}
    for message in socket.sent:
        symbols = set(message.get("quotes", []))
        at_alpaca = at_alpaca | symbols if message["action"] == "subscribe" else at_alpaca - symbols
    assert at_alpaca == set()
    assert connection.holdings.held == {}
    feed._task.cancel()
