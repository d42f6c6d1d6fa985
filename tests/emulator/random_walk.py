"""A seeded random walk of latest quotes and trades, so a demo market looks alive.

Off by default: without ``random_walk`` in the config every answer is exactly what tests
stored. With it, a symbol that has a stored latest quote or trade walks from there:

- The stored quote and trade are the templates and the first step (served verbatim until the
  first step of ``step_ms`` has passed). Exchanges, conditions and tape are kept from them.
- The anchor is the stored trade price, else the ask, else the bid. Each step moves the mid by a
  whole number of ticks ($0.01, or $0.0001 for an anchor under $1), so an anchor on the tick
  keeps every price on it. The walk never rounds a stored value: it generates its own.
- The bid and ask sit 1-3 ticks either side of the mid and the mid never falls below 4 ticks, so
  every price stays positive. The trade prints at the bid, the mid or the ask.
- Step k (k >= 1) happens at a time inside ``[start + (k-1)*step, start + k*step)`` and becomes
  visible once ``start + k*step`` has passed, so ``t`` advances with real time and is never in
  the future. ``start`` is the first lookup after the walk is switched on or the symbol's quote
  or trade was stored again (that re-anchors it).
- The same seed, symbol and number of elapsed steps give the same prices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from .config import RandomWalk
from .decimals import decimal_text, parse_decimal
from .timestamps import format_ns
from .wire_json import Json, JsonObject

TICK = Decimal("0.01")
SUB_DOLLAR_TICK = Decimal("0.0001")
FLOOR_TICKS = 4  # the mid never goes below this, so a bid 3 ticks under it is still positive
_MOVES = (-3, -2, -1, -1, 0, 0, 1, 1, 2, 3)  # ticks per step
_TRADE_SIZES = (1, 5, 10, 20, 50, 100, 100, 100, 200, 300, 500)


@dataclass(frozen=True)
class _Step:
    index: int
    mid_ticks: int  # mid = anchor + mid_ticks * tick
    bid_ticks: int  # below the mid
    ask_ticks: int  # above the mid
    bid_size: int
    ask_size: int
    trade_at: int  # -1 the bid, 0 the mid, 1 the ask
    trade_size: int
    quote_ns: int  # inside the step
    trade_ns: int


class _SymbolWalk:
    """One symbol's walk; steps are generated in order, lazily, from one seeded generator."""

    def __init__(self, settings: RandomWalk, symbol: str, anchor: Decimal, start_ns: int) -> None:
        self.settings = settings
        self.anchor = anchor
        self.start_ns = start_ns
        self.step_ns = settings.step_ms * 1_000_000
        self.tick = TICK if anchor >= 1 else SUB_DOLLAR_TICK
        floor = (FLOOR_TICKS * self.tick - anchor) / self.tick
        self.min_mid_ticks = int(floor.to_integral_value(rounding=ROUND_CEILING))
        # A string seed is hashed the same way in every process (random.seed version 2).
        self.rng = random.Random(f"{settings.seed}/{symbol}")
        self.step = _Step(0, 0, 1, 1, 1, 1, 0, 1, 0, 0)  # step 0 is the stored data itself

    def at(self, now_ns: int) -> _Step:
        """The newest step visible at ``now_ns``."""
        visible = max(0, (now_ns - self.start_ns) // self.step_ns)
        while self.step.index < visible:
            self.step = self._next(self.step)
        return self.step

    def _next(self, previous: _Step) -> _Step:
        rng = self.rng
        move = rng.choice(_MOVES)
        mid_ticks = previous.mid_ticks + move
        if mid_ticks < self.min_mid_ticks:
            mid_ticks = previous.mid_ticks + abs(move)  # reflect off the floor
        return _Step(
            index=previous.index + 1,
            mid_ticks=mid_ticks,
            bid_ticks=rng.randint(1, 3),
            ask_ticks=rng.randint(1, 3),
            bid_size=rng.randint(1, 12),
            ask_size=rng.randint(1, 12),
            trade_at=rng.choice((-1, 0, 1)),
            trade_size=rng.choice(_TRADE_SIZES),
            quote_ns=rng.randrange(self.step_ns),
            trade_ns=rng.randrange(self.step_ns),
        )

    def _price(self, step: _Step, ticks_from_mid: int) -> Decimal:
        price = self.anchor + (step.mid_ticks + ticks_from_mid) * self.tick
        # Written as Alpaca's Go encoder writes a float: 229.9, not 229.90.
        return Decimal(decimal_text(max(price, self.tick)))

    def _time(self, step: _Step, inside_ns: int) -> str:
        return format_ns(self.start_ns + (step.index - 1) * self.step_ns + inside_ns)

    def quote(self, template: JsonObject, step: _Step) -> JsonObject:
        if step.index == 0:
            return template
        return {
            **template,
            "t": self._time(step, step.quote_ns),
            "bp": self._price(step, -step.bid_ticks),
            "bs": step.bid_size,
            "ap": self._price(step, step.ask_ticks),
            "as": step.ask_size,
        }

    def trade(self, template: JsonObject, step: _Step) -> JsonObject:
        if step.index == 0:
            return template
        offset = {-1: -step.bid_ticks, 0: 0, 1: step.ask_ticks}[step.trade_at]
        trade: JsonObject = {
            **template,
            "t": self._time(step, step.trade_ns),
            "p": self._price(step, offset),
            "s": step.trade_size,
        }
        trade_id = template.get("i")
        if isinstance(trade_id, int) and not isinstance(trade_id, bool):
            trade["i"] = trade_id + step.index
        return trade


def _positive(value: Json) -> Decimal | None:
    try:
        number = parse_decimal(value)
    except ValueError:
        return None
    return number if number > 0 else None


def anchor_of(quote: JsonObject | None, trade: JsonObject | None) -> Decimal | None:
    """The stored trade price, else the ask, else the bid; None if there is no positive one."""
    candidates = (
        (trade or {}).get("p"),
        (quote or {}).get("ap"),
        (quote or {}).get("bp"),
    )
    for candidate in candidates:
        anchor = _positive(candidate)
        if anchor is not None:
            return anchor
    return None


class MarketWalk:
    """Every walking symbol of one emulator."""

    def __init__(self) -> None:
        self._walks: dict[str, _SymbolWalk] = {}

    def clear(self) -> None:
        """Forget every walk (reset, or the walk switched off)."""
        self._walks.clear()

    def forget(self, symbol: str) -> None:
        """Re-anchor the symbol at its next lookup (its quote or trade was stored again)."""
        self._walks.pop(symbol, None)

    def latest(
        self,
        settings: RandomWalk,
        symbol: str,
        quote: JsonObject | None,
        trade: JsonObject | None,
        now_ns: int,
    ) -> tuple[JsonObject | None, JsonObject | None]:
        """The walk's current quote and trade; each is None exactly when none is stored."""
        walk = self._walks.get(symbol)
        if walk is None or walk.settings != settings:
            anchor = anchor_of(quote, trade)
            if anchor is None:
                return quote, trade
            walk = _SymbolWalk(settings, symbol, anchor, now_ns)
            self._walks[symbol] = walk
        step = walk.at(now_ns)
        return (
            None if quote is None else walk.quote(quote, step),
            None if trade is None else walk.trade(trade, step),
        )
