"""A streamed quote or trade, of a stock or an option contract, becomes exactly the cache entry
the REST path makes of the same Alpaca fields (app/streams/refresh.py): the same parser, `t` as
Alpaca's REST text, numbers as REST's JSON reads them; and an older streamed value never
replaces a newer cached one."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from app.alpaca.market_data import parse_latest_quotes, parse_latest_trades
from app.alpaca.options import parse_option_quotes
from app.alpaca.wire import decode_json, epoch_ns
from app.cache import CachedValue, MemoryCache, cache_key
from app.metrics import Metrics
from app.streams.feeds import BY_NAME
from app.streams.refresh import LatestRefresh, json_number, rest_fields, streamed_kinds
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
OCC = "AAPL270115C00230000"
# Options: `c` is one string, no `z`, no trade id; the stream is MessagePack only.
STREAM_OPTION_QUOTE = {"T": "q", "S": OCC, "t": msgpack.Timestamp.from_unix_nano(T_NS),
                       "bx": "C", "bp": 31.2, "bs": 12, "ax": "X", "ap": 31.65, "as": 9,
                       "c": "A"}  # fmt: skip
REST_OPTION_QUOTES = (
    '{"quotes":{"AAPL270115C00230000":{"ap":31.65,"as":9,"ax":"X","bp":31.2,"bs":12,"bx":"C",'
    '"c":"A","t":"2024-07-24T13:56:53.639713735Z"}}}'
)
STREAM_OPTION_TRADE = {"T": "t", "S": OCC, "t": msgpack.Timestamp.from_unix_nano(T_NS),
                       "x": "C", "p": 31.0, "s": 2, "c": "I"}  # fmt: skip


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
def test_epoch_ns_keeps_every_digit(text: str, ns: int) -> None:
    assert epoch_ns(text) == ns


def test_a_streamed_option_quote_parses_to_exactly_the_rest_option_quote() -> None:
    [element] = elements(STREAM_OPTION_QUOTE)

    from_stream = parse_option_quotes({"quotes": {OCC: rest_fields(element.value)}}, [OCC])

    assert json.dumps(from_stream) == json.dumps(
        parse_option_quotes(decode_json(REST_OPTION_QUOTES), [OCC])
    )


async def offer(refresh: LatestRefresh, *messages: dict[str, Any], feed: str = "iex") -> None:
    refresh.note(BY_NAME[feed], elements(*messages))  # type: ignore[index]
    await refresh.drained()


@pytest.fixture
def cache() -> MemoryCache:
    # Its clock is the refresh's (2024): what the stream writes is fresh when it is written.
    return MemoryCache(wall_clock=lambda: T_NS / 1e9 + 0.5)


def refresh_of(cache: MemoryCache, clock: float = T_NS / 1e9 + 0.5) -> LatestRefresh:
    kinds = streamed_kinds(quote_ttl_s=1.0, trade_ttl_s=2.0, option_quote_ttl_s=3.0)
    return LatestRefresh(
        cache, Metrics(), kinds=kinds, stale_retention_s=300.0, clock_skew_tolerance_s=1.0,
        clock=lambda: clock,
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
    await cache.put_many([(key, CachedValue(newer, 1.0, 2e9, observed_ns=T_NS + 1), 60.0)])

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
    await cache.put_many([(key, CachedValue(same, 1.0, 2e9, observed_ns=T_NS), 60.0)])

    await offer(refresh_of(cache), STREAM_QUOTE)

    held = cache.peek(key)
    assert held is not None
    assert held.streamed
    assert held.observed_ns == T_NS


async def test_a_streamed_quote_never_replaces_a_newer_streamed_one(cache: MemoryCache) -> None:
    refresh = refresh_of(cache)
    newer = {**STREAM_QUOTE, "bp": 230.0, "t": msgpack.Timestamp.from_unix_nano(T_NS + 1)}
    await offer(refresh, newer)

    await offer(refresh, STREAM_QUOTE)  # a later frame carrying an older quote

    held = cache.peek(cache_key("quote", "iex", "AAPL"))
    assert held is not None
    assert (held.value["bid_price"], held.observed_ns) == (230, T_NS + 1)


async def test_a_newer_entry_past_its_freshness_gives_way(cache: MemoryCache) -> None:
    newer = {**parse_latest_quotes(decode_json(REST_QUOTES), ["AAPL"])["AAPL"]}  # type: ignore[dict-item]
    key = cache_key("quote", "iex", "AAPL")
    stale = CachedValue(newer, 1.0, 2.0, observed_ns=T_NS + 1)  # fresh until 1970
    await cache.put_many([(key, stale, 60.0)])

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


@pytest.mark.parametrize("feed", ["indicative", "opra"])
async def test_a_streamed_option_quote_and_trade_refresh_v1_and_the_face_on_their_feed(
    cache: MemoryCache, feed: str
) -> None:
    await offer(refresh_of(cache), STREAM_OPTION_QUOTE, STREAM_OPTION_TRADE, feed=feed)

    v1 = cache.peek(cache_key("option_quote", feed, OCC))
    face_quote = cache.peek(cache_key("alpaca_option_quote", feed, OCC))
    face_trade = cache.peek(cache_key("alpaca_option_trade", feed, OCC))
    assert v1 is not None
    assert face_quote is not None
    assert face_trade is not None
    assert v1.streamed
    assert face_trade.streamed
    rest = decode_json(REST_OPTION_QUOTES)
    assert v1.value == parse_option_quotes(rest, [OCC])[OCC]
    assert face_quote.value == rest["quotes"][OCC]
    assert face_trade.value == {"t": "2024-07-24T13:56:53.639713735Z", "x": "C", "p": 31,
                                "s": 2, "c": "I"}  # fmt: skip
    # The option quote TTL, as the REST path keeps both (the face's option trade too).
    assert v1.fresh_until - v1.fetched_at == 3.0
    assert face_trade.fresh_until - face_trade.fetched_at == 3.0
    # Nothing lands under a stock key, nor under the other option feed.
    other = "opra" if feed == "indicative" else "indicative"
    assert cache.peek(cache_key("quote", feed, OCC)) is None
    assert cache.peek(cache_key("option_quote", other, OCC)) is None


async def test_an_option_quote_with_neither_side_is_left_to_rest_on_v1(
    cache: MemoryCache,
) -> None:
    await offer(refresh_of(cache), {**STREAM_OPTION_QUOTE, "bp": 0.0, "ap": 0.0}, feed="opra")

    assert cache.peek(cache_key("option_quote", "opra", OCC)) is None
    assert cache.peek(cache_key("alpaca_option_quote", "opra", OCC)) is not None


async def test_a_stock_trade_lives_the_trade_ttl(cache: MemoryCache) -> None:
    await offer(refresh_of(cache), STREAM_TRADE)

    held = cache.peek(cache_key("trade", "iex", "AAPL"))
    assert held is not None
    assert held.fresh_until - held.fetched_at == 2.0


@pytest.mark.parametrize(
    "conditions", [["@", "I"], ["I"], ["@", "T"], ["W"], ["@", "4"], "@", None]
)
async def test_a_trade_alpacas_latest_trade_leaves_out_is_not_cached(
    cache: MemoryCache, conditions: Any
) -> None:
    odd = {**STREAM_TRADE, "c": conditions}
    if conditions is None:
        del odd["c"]
    await offer(refresh_of(cache), odd)

    assert cache.peek(cache_key("trade", "iex", "AAPL")) is None
    assert cache.peek(cache_key("alpaca_trade", "iex", "AAPL")) is None


async def test_an_odd_lot_after_a_regular_trade_leaves_the_regular_one_cached(
    cache: MemoryCache,
) -> None:
    regular = {**STREAM_TRADE, "c": ["@", "F"]}
    later_odd_lot = {**STREAM_TRADE, "c": ["@", "I"], "p": 228.5,
                     "t": msgpack.Timestamp.from_unix_nano(T_NS + 5)}  # fmt: skip
    await offer(refresh_of(cache), regular, later_odd_lot)

    held = cache.peek(cache_key("trade", "iex", "AAPL"))
    assert held is not None
    assert held.value["price"] == 229
    assert held.value["conditions"] == ["@", "F"]


async def test_option_trades_are_cached_whatever_their_condition(cache: MemoryCache) -> None:
    await offer(refresh_of(cache), {**STREAM_OPTION_TRADE, "c": "a"}, feed="opra")

    assert cache.peek(cache_key("alpaca_option_trade", "opra", OCC)) is not None


async def test_the_test_feed_has_no_rest_twin_and_refreshes_nothing(cache: MemoryCache) -> None:
    refresh = refresh_of(cache)
    refresh.note(BY_NAME["test"], elements(STREAM_QUOTE))
    await refresh.drained()

    assert cache.sizes() == (0, 0)
