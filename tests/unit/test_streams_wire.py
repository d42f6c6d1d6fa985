"""The stream relay's pure parts: frames split and joined without touching a message's bytes,
JSON as Alpaca writes it, the backoff Alpaca asks for, and subscriptions merged per feed."""

from __future__ import annotations

import json

import msgpack
import pytest

from app.streams.backoff import BackoffPolicy, Setback, reconnect_delay_s, retry_after_s
from app.streams.feeds import BY_NAME, Feed
from app.streams.subscriptions import (
    Refusal,
    applied,
    changes,
    empty,
    requested,
    routing,
    subscription_message,
    union,
    wants,
)
from app.streams.wire import WireError, element_json, join_msgpack, rfc3339, split_frame

QUOTE = {"T": "q", "S": "AAPL", "bx": "V", "bp": 229.85, "bs": 2, "ax": "V", "ap": 229.9,
         "as": 1, "c": ["R"], "z": "C", "t": msgpack.Timestamp(1721829413, 639713735)}  # fmt: skip
TRADE = {"T": "t", "S": "MSFT", "i": 52983525029461, "x": "V", "p": 447.2, "s": 100,
         "c": ["@"], "z": "C", "t": msgpack.Timestamp(1721829414, 1)}  # fmt: skip
IEX, INDICATIVE = BY_NAME["iex"], BY_NAME["indicative"]
POLICY = BackoffPolicy(min_s=1.0, max_s=60.0, connection_limit_s=90.0)


def test_split_keeps_each_messages_own_bytes_and_join_rebuilds_the_frame() -> None:
    frame = msgpack.packb([QUOTE, TRADE], datetime=False)
    elements = split_frame(frame)
    assert [(e.type, e.symbol) for e in elements] == [("q", "AAPL"), ("t", "MSFT")]
    assert elements[0].raw == msgpack.packb(QUOTE)
    assert join_msgpack([e.raw for e in elements]) == frame
    assert msgpack.unpackb(join_msgpack([elements[1].raw]), timestamp=0) == [TRADE]


def test_a_frame_that_is_not_an_array_of_maps_is_refused() -> None:
    with pytest.raises(WireError):
        split_frame(msgpack.packb([1, 2]))
    with pytest.raises(WireError):
        split_frame(b"\xc1")


def test_json_keeps_numbers_order_and_nanoseconds() -> None:
    text = element_json(QUOTE)
    assert text.startswith('{"T":"q","S":"AAPL","bx":"V","bp":229.85,')
    assert json.loads(text)["t"] == "2024-07-24T13:56:53.639713735Z"
    assert list(json.loads(text)) == list(QUOTE)


def test_timestamps_drop_trailing_zeros_as_gos_rfc3339nano_does() -> None:
    assert rfc3339(msgpack.Timestamp(1721829360, 0)) == "2024-07-24T13:56:00Z"
    assert rfc3339(msgpack.Timestamp(1721829360, 100_000_000)) == "2024-07-24T13:56:00.1Z"


def test_backoff_doubles_with_jitter_up_to_the_ceiling() -> None:
    low = [reconnect_delay_s(POLICY, n, Setback.FAILED, uniform=lambda a, b: a) for n in (1, 2, 3)]
    high = [reconnect_delay_s(POLICY, n, Setback.FAILED, uniform=lambda a, b: b) for n in (1, 2)]
    assert low == [0.5, 1.0, 2.0]
    assert high == [1.0, 2.0]
    assert reconnect_delay_s(POLICY, 40, Setback.FAILED, uniform=lambda a, b: b) == 60.0


def test_a_406_waits_at_least_the_connection_limit() -> None:
    delay = reconnect_delay_s(POLICY, 1, Setback.CONNECTION_LIMIT, uniform=lambda a, b: a)
    assert delay >= 90.0


def test_a_429_waits_at_least_what_it_asks() -> None:
    asked = retry_after_s({"X-RateLimit-Reset": "1000"}, now_s=990.5)
    assert asked == 9.5
    assert reconnect_delay_s(POLICY, 1, Setback.RATE_LIMITED, retry_after_s=asked) >= 9.5
    assert retry_after_s({"Retry-After": "3"}, now_s=0) == 3.0
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, now_s=0) is None
    assert retry_after_s(None, now_s=0) is None


def test_subscriptions_merge_into_one_upstream_set_and_diff_both_ways() -> None:
    a = applied(empty(IEX), {"quotes": ["AAPL", "MSFT"]}, subscribe=True)
    b = applied(empty(IEX), {"quotes": ["AAPL"], "trades": ["SPY"]}, subscribe=True)
    held = union(IEX, [a, b])
    assert held["quotes"] == {"AAPL", "MSFT"}
    assert held["trades"] == {"SPY"}
    a = applied(a, {"quotes": ["MSFT"]}, subscribe=False)
    add, drop = changes(held, union(IEX, [a, b]))
    assert (add, drop) == ({}, {"quotes": ["MSFT"]})


def test_corrections_and_cancel_errors_follow_trades() -> None:
    subscribed = applied(empty(IEX), {"trades": ["AAPL"]}, subscribe=True)
    assert subscription_message(IEX, subscribed)["corrections"] == ["AAPL"]
    routes = routing(subscribed)
    assert wants(routes, "c", "AAPL")
    assert wants(routes, "x", "AAPL")
    assert not wants(routes, "q", "AAPL")
    assert wants(routing(applied(empty(IEX), {"quotes": ["*"]}, subscribe=True)), "q", "ZZZ")


@pytest.mark.parametrize(
    ("feed", "message", "code"),
    [
        (IEX, {"quotes": "AAPL"}, 400),
        (IEX, {"quotes": ["aapl"]}, 400),
        (INDICATIVE, {"bars": ["AAPL"]}, 410),
        (INDICATIVE, {"quotes": ["*"]}, 413),
        (INDICATIVE, {"quotes": ["AAPL"]}, 400),
    ],
)
def test_subscribes_alpaca_refuses_are_refused_with_its_code(
    feed: Feed, message: dict[str, object], code: int
) -> None:
    assert requested(feed, message, subscribe=True) == Refusal(code)
