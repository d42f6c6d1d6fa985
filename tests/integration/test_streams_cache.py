"""Quotes and trades from the stream refresh the REST cache: a streamed symbol's
/v1/stocks/{symbol}/quote or contract's /v1/options/{contract}/quote (and the Alpaca face's
latest quotes and trades) is answered from what the stream pushed, with no call to Alpaca, the
same values the REST path would have made of the same fields, and provenance saying so
(`cache: "stream"`, `observed_at` = Alpaca's `t`). An older streamed value never replaces a
newer cached one."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.integration.test_streams_faults import authed
from tests.support.streams import (
    OCC,
    OPTION_QUOTE,
    OPTION_TRADE,
    QUOTE,
    TRADE,
    StreamGateway,
    eventually,
    quote,
    raw,
    stream_gateway,
)

pytestmark = pytest.mark.integration

QUOTES_LATEST = "/v2/stocks/quotes/latest"
REFRESHES = "gateway_stream_cache_refreshes_total"


@pytest.fixture
def gateway(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path
) -> Iterator[StreamGateway]:
    # A long quote TTL: what a test caches stays fresh however slow the machine is.
    with stream_gateway(
        emulator_process, redis_url, tmp_path, CACHE_QUOTE_TTL_S="30", CACHE_OPTION_QUOTE_TTL_S="30"
    ) as served:
        yield served


def rest_form(message: dict[str, Any]) -> dict[str, Any]:
    """A pushed stream message as Alpaca's REST carries the same fields (no T, no S)."""
    return {
        k: float(v) if isinstance(v, Decimal) else v for k, v in message.items() if k not in "TS"
    }


async def get(
    gateway: StreamGateway, path: str, headers: dict[str, str] | None = None, **params: str
) -> httpx.Response:
    """A REST read with the gateway key (or the given headers); it must succeed."""
    sent = headers or {"Authorization": f"Bearer {gateway.key}"}
    async with httpx.AsyncClient(base_url=gateway.served.base_url, timeout=5) as http:
        answer = await http.get(path, params=params, headers=sent)
    assert answer.status_code == 200, answer.text
    return answer


async def stream_and_wait(
    gateway: StreamGateway, client: Any, emulator: EmulatorControl, *messages: dict[str, Any],
    kind: str = "quote", result: str = "stored", feed: str = "iex",
) -> None:  # fmt: skip
    """Push `messages`, read them on `client`, and wait until the cache took (or kept) them."""
    before = gateway.metric(REFRESHES, kind=kind, result=result)
    await emulator.streams.push(feed, list(messages))
    received: list[Any] = []
    while len(received) < len(messages):
        received += await client.recv()
    await eventually(
        lambda: gateway.metric(REFRESHES, kind=kind, result=result) > before, f"{kind} {result}"
    )


async def test_a_streamed_quote_answers_v1_without_calling_alpaca_with_rests_values(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    # The same Alpaca fields reach the gateway twice: for AAPL over the stream, for MSFT by REST.
    await emulator.set_state(quotes={"MSFT": rest_form(QUOTE)})
    async with raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as client:
        await authed(gateway, client, quotes=["AAPL"])
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
        await stream_and_wait(gateway, client, emulator, QUOTE)

        streamed = await get(gateway, "/v1/stocks/AAPL/quote")
        assert await emulator.calls_to(QUOTES_LATEST) == 0, "a streamed symbol costs no call"
        fetched = await get(gateway, "/v1/stocks/MSFT/quote")
    assert await emulator.calls_to(QUOTES_LATEST) == 1

    body, by_rest = streamed.json(), fetched.json()
    provenance, rest_provenance = body.pop("provenance"), by_rest.pop("provenance")
    assert (body.pop("symbol"), by_rest.pop("symbol")) == ("AAPL", "MSFT")
    assert body == by_rest  # every value exactly as the REST path makes it
    assert body["bid_price"] == float(QUOTE["bp"])
    assert provenance["cache"] == "stream"
    assert rest_provenance["cache"] == "miss"
    assert provenance["observed_at"] == QUOTE["t"]  # Alpaca's `t`, every nanosecond
    assert (provenance["source"], provenance["feed"]) == ("emulator", "iex")
    assert streamed.headers["Cache-Status"] == 'gateway; hit; detail="stream"'


async def test_a_streamed_quote_and_trade_answer_the_alpaca_face(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    async with raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as client:
        await authed(gateway, client, quotes=["AAPL"], trades=["AAPL"])
        await emulator.streams.wait_for_subscriber("iex", "trades", "AAPL")
        await stream_and_wait(gateway, client, emulator, QUOTE, TRADE, kind="alpaca_trade")
        await eventually(
            lambda: gateway.metric(REFRESHES, kind="alpaca_quote", result="stored") == 1, "quote"
        )
        headers = {"APCA-API-KEY-ID": gateway.key_id, "APCA-API-SECRET-KEY": gateway.secret}
        face = await get(gateway, "/alpaca/v2/stocks/quotes/latest", headers, symbols="AAPL")
        trade = await get(gateway, "/v1/stocks/AAPL/trade")
    assert face.json() == {"quotes": {"AAPL": rest_form(QUOTE)}}
    assert "cache=stream" in face.headers["Gateway-Provenance"]
    assert f'observed-at="{QUOTE["t"]}"' in face.headers["Gateway-Provenance"]
    assert trade.json()["price"] == float(TRADE["p"])
    assert trade.json()["provenance"]["cache"] == "stream"
    assert await emulator.calls_to(QUOTES_LATEST) == 0
    assert await emulator.calls_to("/v2/stocks/trades/latest") == 0


async def test_an_older_streamed_quote_never_replaces_a_newer_cached_one(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    newer = quote("AAPL", "230.5", 1_000)  # 1 µs after QUOTE
    await emulator.set_state(quotes={"AAPL": rest_form(newer)})
    assert (await get(gateway, "/v1/stocks/AAPL/quote")).json()["provenance"]["cache"] == "miss"
    async with raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as client:
        await authed(gateway, client, quotes=["AAPL"])
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")

        await stream_and_wait(gateway, client, emulator, QUOTE, result="kept_newer")
        kept = (await get(gateway, "/v1/stocks/AAPL/quote")).json()
        assert (kept["bid_price"], kept["provenance"]["cache"]) == (230.5, "hit")

        newest = quote("AAPL", "231.25", 2_000)
        await stream_and_wait(gateway, client, emulator, newest)
        taken = (await get(gateway, "/v1/stocks/AAPL/quote")).json()
    assert (taken["bid_price"], taken["provenance"]["cache"]) == (231.25, "stream")
    assert taken["provenance"]["observed_at"] == newest["t"]
    assert await emulator.calls_to(QUOTES_LATEST) == 1  # only the first read asked Alpaca


async def test_a_streamed_option_quote_and_trade_answer_v1_and_the_face_without_alpaca(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    # The same option quote reaches the gateway twice: for OCC over the stream, for another
    # contract by REST.
    by_rest_occ = OCC.replace("C00230000", "P00230000")
    await emulator.set_state(option_quotes={by_rest_occ: rest_form(OPTION_QUOTE)})
    async with raw(gateway.ws_url("/v1beta1/indicative"), use_msgpack=True) as client:
        await authed(gateway, client, quotes=[OCC], trades=[OCC])
        await emulator.streams.wait_for_subscriber("indicative", "trades", OCC)
        await stream_and_wait(
            gateway, client, emulator, OPTION_QUOTE, OPTION_TRADE,
            kind="alpaca_option_trade", feed="indicative",
        )  # fmt: skip
        await eventually(
            lambda: gateway.metric(REFRESHES, kind="option_quote", result="stored") == 1, "quote"
        )
        streamed = await get(gateway, f"/v1/options/{OCC}/quote", feed="indicative")
        headers = {"APCA-API-KEY-ID": gateway.key_id, "APCA-API-SECRET-KEY": gateway.secret}
        face = "/alpaca/v1beta1/options"
        quotes = await get(gateway, f"{face}/quotes/latest", headers, symbols=OCC)
        trades = await get(gateway, f"{face}/trades/latest", headers, symbols=OCC)
        assert await emulator.calls_to("/v1beta1/options/quotes/latest") == 0
        assert await emulator.calls_to("/v1beta1/options/trades/latest") == 0
        fetched = await get(gateway, f"/v1/options/{by_rest_occ}/quote", feed="indicative")
    assert await emulator.calls_to("/v1beta1/options/quotes/latest") == 1

    body, by_rest = streamed.json(), fetched.json()
    provenance, rest_provenance = body.pop("provenance"), by_rest.pop("provenance")
    assert (body.pop("symbol"), by_rest.pop("symbol")) == (OCC, by_rest_occ)
    assert body == by_rest  # every value exactly as the REST path makes it
    assert body["ask_price"] == float(OPTION_QUOTE["ap"])
    assert (provenance["cache"], rest_provenance["cache"]) == ("stream", "miss")
    assert provenance["observed_at"] == OPTION_QUOTE["t"]
    assert (provenance["source"], provenance["feed"]) == ("emulator", "indicative")
    assert quotes.json() == {"quotes": {OCC: rest_form(OPTION_QUOTE)}}
    assert trades.json() == {"trades": {OCC: rest_form(OPTION_TRADE)}}
    for answer, pushed in ((quotes, OPTION_QUOTE), (trades, OPTION_TRADE)):
        assert "cache=stream" in answer.headers["Gateway-Provenance"]
        assert f'observed-at="{pushed["t"]}"' in answer.headers["Gateway-Provenance"]
