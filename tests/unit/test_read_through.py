"""Cache -> single-flight -> Alpaca: when Alpaca is asked, and what a failure leaves behind.

`AlpacaStandIn` is not a mock of our code: it plays Alpaca's part (a fetch answering a chunk of
symbols) and counts how often it was asked. Time is a fake clock shared by cache and reader.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from app.cache import MemoryCache, cache_key
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics
from app.reads.read_through import ReadThrough, Served
from tests.support.clock import FakeClock

FRESH_TTL_S = 1.0
NEGATIVE_TTL_S = 2.0
STALE_RETENTION_S = 60.0


def quote(symbol: str, bid_price: float = 172.62) -> dict[str, Any]:
    """A quote as the parser makes it from Alpaca's latest-quotes example."""
    return {
        "symbol": symbol,
        "bid_price": bid_price,
        "bid_size": 2,
        "bid_exchange": "Q",
        "ask_price": 172.7,
        "ask_size": 1,
        "ask_exchange": "Q",
        "conditions": ["R"],
        "tape": "C",
        "timestamp": "2022-08-17T10:07:40.286587431Z",
    }


class AlpacaStandIn:
    """Answers each chunk like Alpaca would: a value per symbol, or a failure for the chunk."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.failure: GatewayError | None = None
        self.answers: dict[str, Any] = {}  # symbol -> a GatewayError to answer for it alone
        self.bid_price = 172.62

    async def fetch(self, chunk: list[str]) -> Mapping[str, Any]:
        self.calls.append(list(chunk))
        await asyncio.sleep(0)  # a real call yields; joiners arrive meanwhile
        if self.failure is not None:
            raise self.failure
        return {s: self.answers.get(s, quote(s, self.bid_price)) for s in chunk}


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.metrics = Metrics()
        self.cache = MemoryCache(clock=self.clock)
        self.reads = ReadThrough(
            self.cache,
            self.metrics,
            negative_ttl_s=NEGATIVE_TTL_S,
            stale_retention_s=STALE_RETENTION_S,
            clock=self.clock,
        )
        self.alpaca = AlpacaStandIn()

    async def read(
        self,
        *symbols: str,
        chunk_size: int = 100,
        stale_if_error_s: float | None = None,
    ) -> dict[str, Any]:
        return await self.reads.read(
            "quote",
            {s: cache_key("quote", "iex", s) for s in symbols},
            self.alpaca.fetch,
            fresh_ttl_s=FRESH_TTL_S,
            chunk_size=chunk_size,
            stale_if_error_s=stale_if_error_s,
        )

    async def read_one(self, symbol: str = "AAPL", **kwargs: Any) -> Any:
        return (await self.read(symbol, **kwargs))[symbol]

    def cache_count(self, result: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "gateway_cache_requests_total", {"kind": "quote", "result": result}
        )


@pytest.fixture
def harness() -> Harness:
    return Harness()


def unavailable() -> GatewayError:
    return GatewayError(
        ErrorCode.UPSTREAM_UNAVAILABLE, "Alpaca data API failed (HTTP 503)", upstream="data"
    )


# --- hits and misses --------------------------------------------------------------------------
async def test_first_read_fetches_and_reports_a_miss(harness: Harness) -> None:
    outcome = await harness.read_one()

    assert outcome == Served(quote("AAPL"), harness.clock.now, "miss")
    assert harness.alpaca.calls == [["AAPL"]]


async def test_fresh_hit_does_not_call_alpaca(harness: Harness) -> None:
    first = await harness.read_one()
    harness.clock.advance(FRESH_TTL_S / 2)

    second = await harness.read_one()

    assert len(harness.alpaca.calls) == 1
    assert isinstance(first, Served)
    assert second == Served(first.value, first.fetched_at, "hit")


async def test_expired_entry_is_fetched_again(harness: Harness) -> None:
    await harness.read_one()
    harness.clock.advance(FRESH_TTL_S + 0.1)
    harness.alpaca.bid_price = 172.63

    outcome = await harness.read_one()

    assert len(harness.alpaca.calls) == 2
    assert isinstance(outcome, Served)
    assert outcome.cache == "miss"
    assert outcome.value["bid_price"] == 172.63
    assert outcome.fetched_at == harness.clock.now


# --- single flight ----------------------------------------------------------------------------
async def test_fifty_concurrent_reads_share_one_alpaca_call(harness: Harness) -> None:
    outcomes = await asyncio.gather(*(harness.read_one() for _ in range(50)))

    assert harness.alpaca.calls == [["AAPL"]]
    states = [o.cache for o in outcomes]
    assert states.count("miss") == 1
    assert states.count("shared") == 49
    assert all(o.value == quote("AAPL") for o in outcomes)
    assert len({o.fetched_at for o in outcomes}) == 1
    assert harness.cache_count("shared") == 49
    assert harness.cache_count("miss") == 1


async def test_failed_flight_gives_every_joiner_the_same_code(harness: Harness) -> None:
    harness.alpaca.failure = unavailable()

    outcomes = await asyncio.gather(*(harness.read_one() for _ in range(50)))

    assert len(harness.alpaca.calls) == 1
    assert all(isinstance(o, GatewayError) for o in outcomes)
    assert {o.code for o in outcomes} == {ErrorCode.UPSTREAM_UNAVAILABLE}


# --- negative caching -------------------------------------------------------------------------
async def test_upstream_failure_is_negative_cached_for_negative_ttl(harness: Harness) -> None:
    harness.alpaca.failure = unavailable()
    first = await harness.read_one()
    harness.alpaca.failure = None

    harness.clock.advance(NEGATIVE_TTL_S / 2)
    within = await harness.read_one()

    assert isinstance(first, GatewayError)
    assert isinstance(within, GatewayError)
    assert within.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert len(harness.alpaca.calls) == 1
    assert harness.cache_count("negative") == 1

    harness.clock.advance(NEGATIVE_TTL_S)
    after = await harness.read_one()

    assert len(harness.alpaca.calls) == 2
    assert after == Served(quote("AAPL"), harness.clock.now, "miss")


async def test_no_data_is_cached_for_the_fresh_ttl_not_the_negative_ttl() -> None:
    harness = Harness()
    fresh_ttl_s = 5.0
    harness.alpaca.answers["ZVZZT"] = GatewayError(
        ErrorCode.NO_DATA, "Alpaca knows ZVZZT but has no value for it now", symbol="ZVZZT"
    )

    async def read() -> Any:
        outcomes = await harness.reads.read(
            "quote",
            {"ZVZZT": cache_key("quote", "iex", "ZVZZT")},
            harness.alpaca.fetch,
            fresh_ttl_s=fresh_ttl_s,
            chunk_size=1,
        )
        return outcomes["ZVZZT"]

    first = await read()
    harness.clock.advance(NEGATIVE_TTL_S + 1.0)  # past the negative TTL, inside the fresh one
    second = await read()

    assert isinstance(first, GatewayError)
    assert isinstance(second, GatewayError)
    assert second.code is ErrorCode.NO_DATA
    assert second.symbol == "ZVZZT"
    assert len(harness.alpaca.calls) == 1

    harness.clock.advance(fresh_ttl_s)
    await read()

    assert len(harness.alpaca.calls) == 2


async def test_one_failing_symbol_does_not_spoil_its_chunk(harness: Harness) -> None:
    harness.alpaca.answers["ZVZZT"] = GatewayError(ErrorCode.NO_DATA, "no value", symbol="ZVZZT")

    outcomes = await harness.read("AAPL", "ZVZZT")

    assert isinstance(outcomes["AAPL"], Served)
    assert isinstance(outcomes["ZVZZT"], GatewayError)
    assert outcomes["ZVZZT"].code is ErrorCode.NO_DATA


async def test_circuit_open_is_not_written_to_the_cache(harness: Harness) -> None:
    # The breaker's own Retry-After is the truth; a cached copy would go on repeating it.
    harness.alpaca.failure = GatewayError(
        ErrorCode.CIRCUIT_OPEN, "The data circuit is open; not calling Alpaca", retry_after_s=12
    )

    outcome = await harness.read_one()

    assert isinstance(outcome, GatewayError)
    assert outcome.code is ErrorCode.CIRCUIT_OPEN
    assert outcome.retry_after_s == 12
    assert await harness.cache.get_many([cache_key("quote", "iex", "AAPL")]) == {}

    harness.alpaca.failure = None
    again = await harness.read_one()

    assert len(harness.alpaca.calls) == 2
    assert isinstance(again, Served)


async def test_circuit_open_leaves_the_last_real_value_in_the_cache(harness: Harness) -> None:
    key = cache_key("quote", "iex", "AAPL")
    await harness.read_one()
    before = (await harness.cache.get_many([key]))[key]
    harness.clock.advance(FRESH_TTL_S + 0.5)
    harness.alpaca.failure = GatewayError(ErrorCode.CIRCUIT_OPEN, "open", retry_after_s=12)

    await harness.read_one()

    assert (await harness.cache.get_many([key]))[key] == before


# --- stale-if-error ---------------------------------------------------------------------------
async def fetched_then_failing(harness: Harness, age_s: float) -> float:
    """A value fetched `age_s` ago, and Alpaca failing from now on. Returns its fetched_at."""
    first = await harness.read_one()
    assert isinstance(first, Served)
    harness.clock.advance(age_s)
    harness.alpaca.failure = unavailable()
    return first.fetched_at


async def test_stale_if_error_serves_the_original_value_and_fetch_time(
    harness: Harness,
) -> None:
    fetched_at = await fetched_then_failing(harness, age_s=2.0)

    outcome = await harness.read_one(stale_if_error_s=5.0)

    assert outcome == Served(quote("AAPL"), fetched_at, "stale")
    assert len(harness.alpaca.calls) == 2  # Alpaca was asked, and failed
    assert harness.cache_count("stale") == 1


async def test_a_stale_answer_is_counted_once_as_stale(harness: Harness) -> None:
    await fetched_then_failing(harness, age_s=2.0)
    counted_before = {r: harness.cache_count(r) or 0 for r in ("hit", "miss", "negative")}

    await harness.read_one(stale_if_error_s=5.0)  # a miss that failed, served stale
    await harness.read_one(stale_if_error_s=5.0)  # the remembered failure, served stale

    assert harness.cache_count("stale") == 2
    # One lookup, one count: neither lookup is counted as a miss or negative hit as well.
    assert {r: harness.cache_count(r) or 0 for r in counted_before} == counted_before


async def test_stale_if_error_too_short_gives_the_error(harness: Harness) -> None:
    await fetched_then_failing(harness, age_s=2.0)

    outcome = await harness.read_one(stale_if_error_s=1.0)

    assert isinstance(outcome, GatewayError)
    assert outcome.code is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_without_stale_if_error_a_failure_is_an_error(harness: Harness) -> None:
    await fetched_then_failing(harness, age_s=2.0)

    outcome = await harness.read_one()

    assert isinstance(outcome, GatewayError)
    assert outcome.code is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_stale_if_error_covers_an_open_circuit(harness: Harness) -> None:
    fetched_at = await fetched_then_failing(harness, age_s=2.0)
    harness.alpaca.failure = GatewayError(ErrorCode.CIRCUIT_OPEN, "open", retry_after_s=12)

    outcome = await harness.read_one(stale_if_error_s=5.0)

    assert outcome == Served(quote("AAPL"), fetched_at, "stale")


async def test_stale_if_error_never_covers_an_answer_about_the_symbol(harness: Harness) -> None:
    await fetched_then_failing(harness, age_s=2.0)
    harness.alpaca.failure = None
    harness.alpaca.answers["AAPL"] = GatewayError(ErrorCode.NO_DATA, "no value", symbol="AAPL")

    outcome = await harness.read_one(stale_if_error_s=5.0)

    assert isinstance(outcome, GatewayError)
    assert outcome.code is ErrorCode.NO_DATA


async def test_stale_if_error_still_serves_while_the_failure_is_negative_cached(
    harness: Harness,
) -> None:
    # Contract: when the upstream fails, a cached real value fetched no more than
    # stale_if_error_ms ago may be returned. A failure remembered a moment ago is still one.
    fetched_at = await fetched_then_failing(harness, age_s=2.0)
    failed = await harness.read_one()  # a client without stale_if_error meets the failure
    assert isinstance(failed, GatewayError)
    harness.clock.advance(0.5)

    outcome = await harness.read_one(stale_if_error_s=5.0)

    assert outcome == Served(quote("AAPL"), fetched_at, "stale")


# --- remembered failures are values, not shared exception objects ------------------------------
async def test_a_remembered_failure_is_a_new_exception_for_every_reader(
    harness: Harness,
) -> None:
    harness.alpaca.failure = unavailable()
    readers = await asyncio.gather(*(harness.read_one() for _ in range(3)))  # one flight
    later = [await harness.read_one() for _ in range(3)]  # negative cache hits

    errors = [*readers, *later]
    assert all(isinstance(e, GatewayError) for e in errors)
    assert len({id(e) for e in errors}) == len(errors)
    assert harness.alpaca.failure not in errors
    # Raised by a route many times, a shared object would carry every raise's frames.
    for error in errors:
        with contextlib.suppress(GatewayError):
            raise error
    again = await harness.read_one()
    assert isinstance(again, GatewayError)
    assert again.__traceback__ is None
    assert again.__context__ is None
    assert again.__cause__ is None


# --- observation times ahead of our clock --------------------------------------------------------
def _quote_at(symbol: str, epoch_s: float) -> dict[str, Any]:
    moment = datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")
    return {**quote(symbol), "timestamp": moment}


async def _read_observed(harness: Harness, symbol: str = "AAPL") -> Any:
    outcomes = await harness.reads.read(
        "quote",
        {symbol: cache_key("quote", "iex", symbol)},
        harness.alpaca.fetch,
        fresh_ttl_s=FRESH_TTL_S,
        chunk_size=1,
        observed=lambda value: (value["timestamp"],),
    )
    return outcomes[symbol]


@pytest.mark.parametrize("ahead_s", [1.5, 3600.0, 31_000_000_000 - 1_700_000_000])
async def test_a_value_from_the_future_is_refused_and_not_cached(
    harness: Harness, ahead_s: float
) -> None:
    harness.alpaca.answers["AAPL"] = _quote_at("AAPL", harness.clock.now + ahead_s)

    first = await _read_observed(harness)
    second = await _read_observed(harness)  # what the cache kept: the failure, not the value

    assert isinstance(first, GatewayError)
    assert first.code is ErrorCode.UPSTREAM_BAD_RESPONSE
    assert first.extensions["ahead_ms"] >= 1500
    assert isinstance(second, GatewayError)
    assert second.code is ErrorCode.UPSTREAM_BAD_RESPONSE
    assert len(harness.alpaca.calls) == 1


async def test_a_value_just_ahead_within_the_skew_tolerance_is_served(
    harness: Harness,
) -> None:
    value = _quote_at("AAPL", harness.clock.now + 0.5)  # the tolerance is 1 s by default
    harness.alpaca.answers["AAPL"] = value

    outcome = await _read_observed(harness)

    assert outcome == Served(value, harness.clock.now, "miss")


# --- chunking ---------------------------------------------------------------------------------
SEVEN = ("AAPL", "TSLA", "MSFT", "NVDA", "AMZN", "META", "GOOG")


async def test_seven_missing_symbols_in_chunks_of_three_make_three_calls(
    harness: Harness,
) -> None:
    outcomes = await harness.read(*SEVEN, chunk_size=3)

    assert len(harness.alpaca.calls) == 3
    assert all(len(call) <= 3 for call in harness.alpaca.calls)
    fetched = [s for call in harness.alpaca.calls for s in call]
    assert sorted(fetched) == sorted(SEVEN)
    assert all(isinstance(outcomes[s], Served) for s in SEVEN)
    assert {outcomes[s].value["symbol"] for s in SEVEN} == set(SEVEN)


async def test_only_missing_symbols_are_fetched(harness: Harness) -> None:
    await harness.read("AAPL", "TSLA")
    harness.alpaca.calls.clear()

    outcomes = await harness.read(*SEVEN, "NFLX", "ORCL", chunk_size=3)

    fetched = [s for call in harness.alpaca.calls for s in call]
    assert sorted(fetched) == sorted({*SEVEN, "NFLX", "ORCL"} - {"AAPL", "TSLA"})
    assert len(harness.alpaca.calls) == 3
    assert all(len(call) <= 3 for call in harness.alpaca.calls)
    assert outcomes["AAPL"].cache == "hit"
    assert outcomes["TSLA"].cache == "hit"
    assert outcomes["NVDA"].cache == "miss"


# --- bounds ---------------------------------------------------------------------------------------
async def test_misses_past_the_flight_bound_are_held_back_not_queued() -> None:
    harness = Harness()
    harness.reads = ReadThrough(
        harness.cache,
        harness.metrics,
        negative_ttl_s=NEGATIVE_TTL_S,
        stale_retention_s=STALE_RETENTION_S,
        max_flight_keys=2,
        clock=harness.clock,
    )

    outcomes = await harness.read("AAPL", "TSLA", "MSFT", chunk_size=1)

    assert harness.alpaca.calls == [["AAPL"], ["TSLA"]]
    assert isinstance(outcomes["MSFT"], GatewayError)
    assert outcomes["MSFT"].code is ErrorCode.UPSTREAM_RATE_LIMITED
    assert outcomes["MSFT"].retry_after_s == 1
    assert harness.reads.flights() == 0  # the two flights landed and left the table
    again = await harness.read("MSFT")  # held back, not remembered
    assert isinstance(again["MSFT"], Served)
