"""alpaca-py's stream clients, pointed at the gateway with one changed URL, receive exactly
what Alpaca (the emulator) sent: every value, every field in its order, per symbol in order;
and however many bots connect, Alpaca sees one connection per feed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alpaca.data.enums import OptionsFeed
from alpaca.data.live.option import OptionDataStream
from alpaca.data.live.stock import StockDataStream

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.support.streams import (
    OCC,
    OPTION_QUOTE,
    OPTION_TRADE,
    TRADE,
    StreamGateway,
    collector,
    eventually,
    quote,
    raw,
    running,
    same_values,
    stream_gateway,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(
    request: pytest.FixtureRequest,
    emulator_process: EmulatorProcess,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[StreamGateway]:
    """The gateway on granian (`make run`'s default), or on the server a test names."""
    server = getattr(request, "param", "granian")
    with stream_gateway(emulator_process, redis_url, tmp_path, GATEWAY_SERVER=server) as served:
        yield served


@pytest.mark.parametrize("gateway", ["granian", "uvicorn"], indirect=True)
async def test_stock_stream_gets_exactly_the_ticks_alpaca_sent_in_order_per_symbol(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    got, keep = collector()
    stream = StockDataStream(
        gateway.key_id, gateway.secret, raw_data=True, url_override=gateway.ws_url("/v2/iex")
    )
    stream.subscribe_quotes(keep, "AAPL", "MSFT")
    stream.subscribe_trades(keep, "AAPL")
    pushed = [
        quote("AAPL", "229.85"),
        quote("MSFT", "447.1", 1),
        TRADE,
        quote("AAPL", "229.86", 2),
        {**TRADE, "S": "SPY"},  # nobody asked for SPY: never delivered
        quote("MSFT", "447.15", 3),
    ]
    async with running(stream):
        await emulator.streams.wait_for_subscriber("iex", "trades", "AAPL")
        await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
        await emulator.streams.push("iex", pushed[:3], per_frame=2)
        await emulator.streams.push("iex", pushed[3:])
        await eventually(lambda: len(got) == 5, "the five subscribed ticks")
    for symbol in ("AAPL", "MSFT"):
        sent = [m for m in pushed if m["S"] == symbol]
        seen = [m for m in got if m["S"] == symbol]
        assert len(seen) == len(sent)
        assert all(same_values(r, p) for r, p in zip(seen, sent, strict=True)), (seen, sent)


async def test_a_json_client_gets_the_same_values_with_alpacas_json_timestamps(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    async with raw(gateway.ws_url("/v2/iex")) as client:
        await client.send({"action": "auth", "key": gateway.key_id, "secret": gateway.secret})
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]
        await client.send({"action": "subscribe", "quotes": ["AAPL"], "trades": ["AAPL"]})
        [subscription] = await client.recv()
        assert subscription["T"] == "subscription"
        assert (subscription["trades"], subscription["quotes"]) == (["AAPL"], ["AAPL"])
        assert subscription["corrections"] == ["AAPL"]
        await emulator.streams.wait_for_subscriber("iex", "trades", "AAPL")
        await emulator.streams.push("iex", [quote("AAPL", "229.85"), TRADE])
        received: list[dict[str, Any]] = []
        while len(received) < 2:
            received += await client.recv()
    expected = [quote("AAPL", "229.85"), TRADE]
    for got, sent in zip(received, expected, strict=True):
        assert list(got) == list(sent)
        for name, value in sent.items():
            assert got[name] == (float(value) if name in ("bp", "ap", "p") else value), name


async def test_option_stream_gets_exactly_the_option_ticks(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    got, keep = collector()
    stream = OptionDataStream(
        gateway.key_id, gateway.secret, raw_data=True, feed=OptionsFeed.INDICATIVE,
        url_override=gateway.ws_url("/v1beta1/indicative"),
    )  # fmt: skip
    stream.subscribe_quotes(keep, OCC)
    stream.subscribe_trades(keep, OCC)
    async with running(stream):
        await emulator.streams.wait_for_subscriber("indicative", "trades", OCC)
        await emulator.streams.push("indicative", [OPTION_QUOTE, OPTION_TRADE])
        await eventually(lambda: len(got) == 2, "the option quote and trade")
    assert same_values(got[0], OPTION_QUOTE)
    assert same_values(got[1], OPTION_TRADE)


async def test_many_bots_share_one_upstream_connection_per_feed(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    received: dict[int, list[dict[str, Any]]] = {n: [] for n in range(4)}
    streams = []
    for n in range(4):

        async def keep(message: dict[str, Any], n: int = n) -> None:
            received[n].append(message)

        stream = StockDataStream(
            gateway.key_id, gateway.secret, raw_data=True, url_override=gateway.ws_url("/v2/iex")
        )
        stream.subscribe_quotes(keep, "AAPL" if n % 2 else "MSFT")
        streams.append(stream)
    async with running(streams[0]), running(streams[1]), running(streams[2]):
        async with running(streams[3]):
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
            await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
            await emulator.streams.push("iex", [quote("AAPL", "1.5"), quote("MSFT", "2.5", 1)])
            await eventually(lambda: all(len(r) == 1 for r in received.values()), "every bot")
            assert len(await emulator.streams.connections("iex")) == 1
        # One bot leaves; the others keep the subscription they share.
        await emulator.streams.push("iex", [quote("AAPL", "1.6", 2)])
        await eventually(lambda: len(received[1]) == 2, "the remaining AAPL bot")
    assert await emulator.streams.attempts("iex") == 1
    assert [m["S"] for m in received[0]] == ["MSFT"]
    assert [m["S"] for m in received[2]] == ["MSFT"]
    assert [m["S"] for m in received[3]] == ["AAPL"]
    assert gateway.metric("gateway_stream_upstream_state", feed="iex") == 2
