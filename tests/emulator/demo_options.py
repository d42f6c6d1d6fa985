"""Option chains for the demo: AAPL and SPY weeklies near the money, in Alpaca's wire shapes.

Contracts carry realistic OCC symbols (``AAPL250704C00230000``); snapshots hold a latest quote
and trade priced with Black-Scholes, plus ``greeks`` and ``impliedVolatility`` for the nearer
expiry only, because Alpaca's snapshots often come without them and clients must cope. These
values are the demo's own seed data, like its stock quotes: nothing here runs in a test's answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

# Demo data holds floats, as a client's JSON would; the emulator stores them exactly.
Wire = dict[str, Any]
RATE = 0.045  # a risk-free rate of the right size
OPTION_EXCHANGES = ("C", "B", "X", "N", "Q")


@dataclass(frozen=True)
class Chain:
    """Which contracts the demo lists for an underlying."""

    underlying: str
    strike_step: int
    strikes_each_side: int
    volatility: float  # at the money


def fridays(today: date, count: int) -> list[date]:
    """The next ``count`` Fridays on or after ``today`` (weekly expirations)."""
    first = today + timedelta(days=(4 - today.weekday()) % 7)
    return [first + timedelta(weeks=week) for week in range(count)]


def occ_symbol(underlying: str, expiration: date, kind: str, strike: int) -> str:
    """``ROOT + YYMMDD + C|P + strike x 1000 in 8 digits``."""
    return f"{underlying}{expiration:%y%m%d}{kind[0].upper()}{strike * 1000:08d}"


def _cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _pdf(x: float) -> float:
    return math.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Valuation:
    price: float
    delta: float
    gamma: float
    theta: float  # per calendar day
    vega: float  # per volatility point
    rho: float  # per rate point


def black_scholes(kind: str, spot: float, strike: float, years: float, vol: float) -> Valuation:
    """European value and greeks: close enough for a demo of American weeklies."""
    root = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + (RATE + vol * vol / 2.0) * years) / root
    d2 = d1 - root
    discount = strike * math.exp(-RATE * years)
    decay = -spot * _pdf(d1) * vol / (2.0 * math.sqrt(years))
    if kind == "call":
        price = spot * _cdf(d1) - discount * _cdf(d2)
        delta, rho = _cdf(d1), discount * years * _cdf(d2) / 100.0
        theta = (decay - RATE * discount * _cdf(d2)) / 365.0
    else:
        price = discount * _cdf(-d2) - spot * _cdf(-d1)
        delta, rho = _cdf(d1) - 1.0, -discount * years * _cdf(-d2) / 100.0
        theta = (decay + RATE * discount * _cdf(-d2)) / 365.0
    gamma = _pdf(d1) / (spot * root)
    vega = spot * _pdf(d1) * math.sqrt(years) / 100.0
    return Valuation(price, delta, gamma, theta, vega, rho)


def _cents(value: float) -> float:
    return max(0.01, round(value, 2))


@dataclass(frozen=True)
class ChainData:
    """Contract overrides (for PUT /_emulator/options/contracts), snapshots, latest quotes and
    trades, by OCC symbol; ``at_money_call`` names the nearest expiry's at-the-money call."""

    contracts: dict[str, Wire]
    snapshots: dict[str, Wire]
    quotes: dict[str, Wire]
    trades: dict[str, Wire]
    at_money_call: str


def _at_money(chain: Chain, spot: float) -> int:
    return round(spot / chain.strike_step) * chain.strike_step


def _strikes(chain: Chain, spot: float) -> Iterator[int]:
    at_money = _at_money(chain, spot)
    for offset in range(-chain.strikes_each_side, chain.strikes_each_side + 1):
        yield at_money + offset * chain.strike_step


def chain_data(
    chain: Chain, spot: float, today: date, quote_t: str, trade_t: str, prev_day: date
) -> ChainData:
    """Two weekly expirations, calls and puts at each strike; greeks on the nearer one only."""
    contracts: dict[str, Wire] = {}
    snapshots: dict[str, Wire] = {}
    quotes: dict[str, Wire] = {}
    trades: dict[str, Wire] = {}
    expirations = fridays(today, 2)
    for week, expiration in enumerate(expirations):
        years = max((expiration - today).days, 0.5) / 365.0
        for number, strike in enumerate(_strikes(chain, spot)):
            for kind in ("call", "put"):
                occ = occ_symbol(chain.underlying, expiration, kind, strike)
                skew = 1.0 + 1.5 * (spot - strike) / spot  # puts below the money cost more
                vol = chain.volatility * skew
                value = black_scholes(kind, spot, strike, years, vol)
                spread = 0.01 if value.price < 1 else 0.02 if value.price < 5 else 0.05
                bid = _cents(value.price - spread / 2)
                exchange = OPTION_EXCHANGES[(number + week) % len(OPTION_EXCHANGES)]
                quote: Wire = {
                    "t": quote_t,
                    "bx": exchange,
                    "bp": bid,
                    "bs": 10 + 7 * number,
                    "ax": exchange,
                    "ap": round(bid + spread, 2),
                    "as": 12 + 5 * number,
                    "c": "A",
                }
                trade: Wire = {
                    "t": trade_t,
                    "x": exchange,
                    "p": _cents(value.price),
                    "s": 1 + number,
                    "c": "I",
                }
                snapshot: Wire = {"latestQuote": quote, "latestTrade": trade}
                if week == 0:
                    snapshot["greeks"] = {
                        "delta": value.delta,
                        "gamma": value.gamma,
                        "rho": value.rho,
                        "theta": value.theta,
                        "vega": value.vega,
                    }
                    snapshot["impliedVolatility"] = round(vol, 4)
                snapshots[occ], quotes[occ], trades[occ] = snapshot, quote, trade
                from_money = abs(number - chain.strikes_each_side)  # strikes away from the money
                contracts[occ] = {
                    "open_interest": str(400 + 1_150 * (chain.strikes_each_side + 1 - from_money)),
                    "open_interest_date": prev_day.isoformat(),
                    "close_price": f"{_cents(value.price * 0.97):.2f}",
                    "close_price_date": prev_day.isoformat(),
                }
    at_money_call = occ_symbol(chain.underlying, expirations[0], "call", _at_money(chain, spot))
    return ChainData(contracts, snapshots, quotes, trades, at_money_call)
