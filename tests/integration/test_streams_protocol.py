"""The gateway's stream endpoints answer as Alpaca's do, codes and words: auth by message or by
the APCA headers, `401` before auth, `402` for a key that is wrong or lacks `data:read` (the
connection stays open for another try), `403` for a second auth, `400` for a malformed symbol,
`404` when auth never comes, `412` for JSON on an option feed, and no upgrade for a feed Alpaca
does not have."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.emulator.process import EmulatorProcess
from tests.support.streams import WAIT_S, StreamGateway, raw, stream_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamGateway]:
    tmp_path: Path = tmp_path_factory.mktemp("protocol")
    with stream_gateway(
        emulator_process,
        redis_url,
        tmp_path,
        STREAM_AUTH_TIMEOUT_S="1",
        STREAM_MAX_SYMBOLS_PER_CLIENT=str(MAX_SYMBOLS),
    ) as gw:
        yield gw


MAX_SYMBOLS = 4


def error(code: int, msg: str) -> list[dict[str, object]]:
    return [{"T": "error", "code": code, "msg": msg}]


async def test_errors_before_and_during_auth_are_alpacas(gateway: StreamGateway) -> None:
    async with raw(gateway.ws_url("/v2/iex")) as client:
        await client.send({"action": "subscribe", "quotes": ["AAPL"]})
        assert await client.recv() == error(401, "not authenticated")
        await client.send({"action": "auth", "key": gateway.key_id, "secret": "wrong"})
        assert await client.recv() == error(402, "auth failed")
        await client.send({"action": "auth", "key": gateway.key_id, "secret": gateway.secret})
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]
        await client.send({"action": "auth", "key": gateway.key_id, "secret": gateway.secret})
        assert await client.recv() == error(403, "already authenticated")
        await client.send({"action": "subscribe", "quotes": ["AAPL", "not a symbol"]})
        assert await client.recv() == error(400, "invalid syntax")
        await client.send({"action": "dance"})
        assert await client.recv() == error(400, "invalid syntax")


async def test_a_subscribe_past_the_symbol_limit_is_alpacas_405_and_changes_nothing(
    gateway: StreamGateway,
) -> None:
    async with raw(gateway.ws_url("/v2/iex")) as client:
        await client.send({"action": "auth", "key": gateway.key_id, "secret": gateway.secret})
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]
        await client.send({"action": "subscribe", "quotes": ["AAPL", "MSFT"], "trades": ["AAPL"]})
        held = await client.recv()
        assert (held[0]["quotes"], held[0]["trades"]) == (["AAPL", "MSFT"], ["AAPL"])

        await client.send({"action": "subscribe", "quotes": ["IBM", "TSLA"]})  # 5 > 4
        assert await client.recv() == error(405, "symbol limit exceeded")
        await client.send({"action": "subscribe", "quotes": ["AAPL"]})  # nothing new: within it
        assert await client.recv() == held


async def test_a_key_without_data_read_is_refused_market_data(gateway: StreamGateway) -> None:
    trading_only = gateway.create_key("trading:read")
    prefix, key_hex, secret = trading_only.split("_", 2)
    async with raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as client:
        assert await client.auth_reply(f"{prefix}_{key_hex}", secret) == error(402, "auth failed")


async def test_the_apca_headers_on_the_handshake_authenticate(gateway: StreamGateway) -> None:
    headers = {"APCA-API-KEY-ID": gateway.key_id, "APCA-API-SECRET-KEY": gateway.secret}
    async with raw(gateway.ws_url("/v2/iex"), headers=headers) as client:
        assert await client.recv() == [{"T": "success", "msg": "authenticated"}]


async def test_no_auth_in_time_is_a_404_and_the_end(gateway: StreamGateway) -> None:
    async with raw(gateway.ws_url("/v2/iex")) as client:
        assert await client.recv(timeout_s=5) == error(404, "auth timeout")
        with pytest.raises(ConnectionClosed):
            await client.recv()


async def test_option_feeds_speak_only_msgpack(gateway: StreamGateway) -> None:
    async with connect(
        gateway.ws_url("/v1beta1/indicative"), proxy=None, open_timeout=WAIT_S
    ) as ws:
        first = await asyncio.wait_for(ws.recv(), WAIT_S)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_S)
    assert (
        first
        == '[{"T":"error","code":412,"msg":"option messages are only available in MsgPack format"}]'
    )


@pytest.mark.parametrize("path", ["/v2/nasdaq", "/v1beta1/iex", "/v2/trade_updates"])
async def test_a_feed_alpaca_does_not_have_is_not_upgraded(
    gateway: StreamGateway, path: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway.ws_url(path), proxy=None, open_timeout=WAIT_S):
            pass
    assert refused.value.response.status_code == 403
