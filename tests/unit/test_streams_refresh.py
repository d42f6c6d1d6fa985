"""A streamed quote or trade becomes exactly the cache entry the REST path makes of the same
Alpaca fields (app/streams/refresh.py): the same parser, `t` as Alpaca's REST text, numbers as
REST's JSON reads them; and an older streamed value never replaces a newer cached one."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from app.alpaca.market_data import parse_latest_quotes, parse_latest_trades
from app.alpaca.wire import decode_json
from app.cache import CachedValue, MemoryCache, cache_key
from app.metrics import Metrics
from app.streams.feeds import BY_NAME
from app.streams.refresh import LatestRefresh, json_number, rest_fields, unix_ns
from app.streams.wire import WireError, split_frame

T_NS = 1_721_829_413_639_713_735  # 2024-07-24T13:56:53.639713735Z
STREAM_QUOTE = {"T": "q", "S": "AAPL", "bx": "V", "bp": 229.85, "bs": 2, "ax": "V",
                "ap": 229.9, "as": 1, "c": ["R"], "z": "C",
                "t": msgpack.Timestamp.from_unix_nano(T_NS)}  # fmt: skip
# The same quote as Alpaca's REST answers it (its JSON text, in its own member order).
REST_QUOTES = (
    '{"quotes":{"AAPL":{"ap":229.9,"as":1,"ax":"V","bp":229.85,"bs":2,"bx":"V","c":["R"],'
    '"t":"2024-07-24T13:56:53.639713735Z","z":"C"}}}'
)
STREAM_TRADE = {"T": "t", "S": "AAPL", "i": 52983525029461, "x": "V", "p": 229.0, "s": 100,
                "c": ["@"], "z": "C", "t": msgpack.Timestamp.from_unix_nano(T_NS + 1)}  # fmt: skip
REST_TRADES = (
    '{"trades":{"AAPL":{"c":["@"],"i":52983525029461,"p":229,"s":100,'
    '"t":"2024-07-24T13:56:53.639713736Z","x":"V","z":"C"}}}'
)


def elements(*messages: dict[str, Any]) -> list[Any]:
    return split_frame(msgpack.packb(list(messages)))


def test_a_streamed_quote_parses_to_exactly_the_rest_quote() -> None:
    [element] = elements(STREAM_QUOTE)

    from_stream = parse_latest_quotes({"quotes": {"AAPL": rest_fields(element.value)}}, ["AAPL"])

    assert from_stream == parse_latest_quotes(decode_json(REST_QUOTES), ["AAPL"])
    # Same JSON out, too: an integral price is an int on both paths.
    assert json.dumps(from_stream) == json.dumps(
        parse_latest_quotes(decode_json(REST_QUOTES), ["AAPL"])
    )


def test_a_streamed_trade_parses_to_exactly_the_rest_trade_integral_price_included() -> None:
    [element] = elements(STREAM_TRADE)

    from_stream = parse_latest_trades({"trades": {"AAPL": rest_fields(element.value)}}, ["AAPL"])
    from_rest = parse_latest_trades(decode_json(REST_TRADES), ["AAPL"])

    assert json.dumps(from_stream) == json.dumps(from_rest)
    assert from_stream["AAPL"] is not None
    assert from_stream["AAPL"]["price"] == 229
    assert isinstance(from_stream["AAPL"]["price"], int)


@pytest.mark.parametrize(
    ("number", "expected"),
    [(229.0, 229), (-0.0, 0), (229.85, 229.85), (1e21, 1e21), (0.1 + 0.2, 0.30000000000000004)],
)
def test_json_number_keeps_the_value_and_takes_the_type_rest_json_gives(
    number: float, expected: int | float
) -> None:
    assert json_number(number) == expected
    assert type(json_number(number)) is type(expected)


@pytest.mark.parametrize("number", [float("nan"), float("inf")])
def test_json_number_refuses_what_no_json_carries(number: float) -> None:
    with pytest.raises(WireError):
        json_number(number)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-07-24T13:56:53.639713735Z", T_NS),
        ("2024-07-24T13:56:53.6397137Z", T_NS - 35),
        ("2024-07-24T13:56:53Z", T_NS - 639_713_735),
        ("2024-07-24T09:56:53.639713735-04:00", T_NS),
    ],
)
def test_unix_ns_keeps_every_digit(text: str, ns: int) -> None:
    assert unix_ns(text) == ns


async def offer(refresh: LatestRefresh, *messages: dict[str, Any]) -> None:
    refresh.note(BY_NAME["iex"], elements(*messages))
    await refresh.drained()


@pytest.fixture
def cache() -> MemoryCache:
    return MemoryCache()


def refresh_of(cache: MemoryCache, clock: float = T_NS / 1e9 + 0.5) -> LatestRefresh:
    return LatestRefresh(
        cache, Metrics(), quote_ttl_s=1.0, trade_ttl_s=1.0, stale_retention_s=300.0,
        clock_skew_tolerance_s=1.0, clock=lambda: clock,
    )  # fmt: skip


async def test_a_streamed_quote_is_cached_for_v1_and_the_face_marked_streamed(
    cache: MemoryCache,
) -> None:
    await offer(refresh_of(cache), STREAM_QUOTE)

    v1 = cache.peek(cache_key("quote", "iex", "AAPL"))
    face = cache.peek(cache_key("alpaca_quote", "iex", "AAPL"))
    assert v1 is not None
    assert face is not None
    assert v1.streamed
    assert face.streamed
    assert v1.value == parse_latest_quotes(decode_json(REST_QUOTES), ["AAPL"])["AAPL"]
    assert face.value == decode_json(REST_QUOTES)["quotes"]["AAPL"]
    assert v1.fetched_at == T_NS / 1e9 + 0.5  # when the frame arrived


async def test_an_older_streamed_quote_never_replaces_a_newer_cached_one(
    cache: MemoryCache,
) -> None:
    newer = {**parse_latest_quotes(decode_json(REST_QUOTES), ["AAPL"])["AAPL"]}  # type: ignore[dict-item]
    newer["timestamp"] = "2024-07-24T13:56:53.639713736Z"  # one nanosecond later
    key = cache_key("quote", "iex", "AAPL")
    await cache.put_many([(key, CachedValue(newer, 1.0, 2e9), 60.0)])

    await offer(refresh_of(cache), STREAM_QUOTE)

    held = cache.peek(key)
    assert held is not None
    assert held.value == newer
    assert not held.streamed
    # The face held nothing: it takes the streamed object.
    assert cache.peek(cache_key("alpaca_quote", "iex", "AAPL")) is not None


async def test_an_equally_new_streamed_quote_replaces_the_cached_one(cache: MemoryCache) -> None:
    same = parse_latest_quotes(decode_json(REST_QUOTES), ["AAPL"])["AAPL"]
    key = cache_key("quote", "iex", "AAPL")
    await cache.put_many([(key, CachedValue(same, 1.0, 2e9), 60.0)])

    await offer(refresh_of(cache), STREAM_QUOTE)

    held = cache.peek(key)
    assert held is not None
    assert held.streamed


async def test_a_quote_observed_ahead_of_the_clock_is_not_cached(cache: MemoryCache) -> None:
    await offer(refresh_of(cache, clock=T_NS / 1e9 - 5), STREAM_QUOTE)

    assert cache.peek(cache_key("quote", "iex", "AAPL")) is None
    assert cache.peek(cache_key("alpaca_quote", "iex", "AAPL")) is None


async def test_a_quote_with_neither_side_is_left_to_rest_on_v1(cache: MemoryCache) -> None:
    await offer(refresh_of(cache), {**STREAM_QUOTE, "bp": 0.0, "ap": 0.0})

    assert cache.peek(cache_key("quote", "iex", "AAPL")) is None  # REST: NO_DATA, not a quote
    face = cache.peek(cache_key("alpaca_quote", "iex", "AAPL"))
    assert face is not None
    assert face.value["bp"] == 0


async def test_the_test_feed_has_no_rest_twin_and_refreshes_nothing(cache: MemoryCache) -> None:
    refresh = refresh_of(cache)
    refresh.note(BY_NAME["test"], elements(STREAM_QUOTE))
    await refresh.drained()

    assert cache.sizes() == (0, 0)
