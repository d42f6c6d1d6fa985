"""Market-data query parameters, validated the way Alpaca rejects them (400 + message).

Every parser raises :class:`AlpacaError` with a market-data body; one bad value fails the
whole call, exactly as one invalid symbol fails a whole multi-symbol request at Alpaca.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .responses import data_error
from .timestamps import query_time_ns, strict_date

LATEST_FEEDS = frozenset({"delayed_sip", "iex", "otc", "sip", "boats", "overnight"})
HISTORICAL_FEEDS = frozenset({"iex", "otc", "sip", "boats"})
ADJUSTMENTS = frozenset({"raw", "split", "dividend", "spin-off", "all"})
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000

# A letter first, then letters, digits and the class separators . / - (BRK.B, BRK/B), never
# two separators in a row or one at the end. Lowercase is rejected, not upper-cased: the
# gateway is expected to normalise symbols before calling Alpaca.
_SYMBOL = re.compile(r"[A-Z](?:[A-Z0-9]|[./-](?=[A-Z0-9])){0,14}")
_TIMEFRAME = re.compile(r"([1-9][0-9]*)(Min|T|Hour|H|Day|D|Week|W|Month|M)")
_UNIT_AMOUNTS: dict[str, range | tuple[int, ...]] = {
    "Min": range(1, 60),
    "T": range(1, 60),
    "Hour": range(1, 24),
    "H": range(1, 24),
    "Day": (1,),
    "D": (1,),
    "Week": (1,),
    "W": (1,),
    "Month": (1, 2, 3, 4, 6, 12),
    "M": (1, 2, 3, 4, 6, 12),
}
_UNIT_NAMES = {
    "Min": "Min", "T": "Min", "Hour": "Hour", "H": "Hour", "Day": "Day", "D": "Day",
    "Week": "Week", "W": "Week", "Month": "Month", "M": "Month",
}  # fmt: skip

Query = Mapping[str, str]


def is_valid_symbol(symbol: str) -> bool:
    """Whether Alpaca would accept this stock symbol's format."""
    return _SYMBOL.fullmatch(symbol) is not None


def check_symbol(symbol: str) -> str:
    """The symbol itself, or 400 ``invalid symbol: X``."""
    if not is_valid_symbol(symbol):
        raise data_error(400, f"invalid symbol: {symbol}")
    return symbol


def symbols(query: Query) -> list[str]:
    """The ``symbols`` csv, deduplicated in request order; one invalid symbol fails all."""
    raw = query.get("symbols")
    if raw is None:
        raise data_error(400, "missing symbols")
    seen: dict[str, None] = {}
    for symbol in raw.split(","):
        seen[check_symbol(symbol)] = None
    return list(seen)


def feed(query: Query, allowed: frozenset[str]) -> str | None:
    """The ``feed`` value if given and allowed for this endpoint, else 400 ``invalid feed``."""
    value = query.get("feed")
    if value is not None and value not in allowed:
        raise data_error(400, f"invalid feed: {value}")
    return value


def canonical_timeframe(value: str) -> str:
    """``5T`` -> ``5Min``, ``1H`` -> ``1Hour``, ``1D`` -> ``1Day`` ...; ValueError if invalid."""
    match = _TIMEFRAME.fullmatch(value)
    if match is None or int(match.group(1)) not in _UNIT_AMOUNTS[match.group(2)]:
        raise ValueError(f"invalid timeframe: {value}")
    return f"{int(match.group(1))}{_UNIT_NAMES[match.group(2)]}"


def timeframe(query: Query) -> str:
    """The canonical ``timeframe`` (1Min, 5T, 1Hour, 1D, 1Week, 3M ...). Bars are not
    aggregated: the answer holds the bars stored for this timeframe, else the untimed ones."""
    value = query.get("timeframe")
    if value is None:
        raise data_error(400, "missing timeframe")
    try:
        return canonical_timeframe(value)
    except ValueError as exc:
        raise data_error(400, str(exc)) from None


def limit(query: Query, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """``limit`` 1..maximum (bars: 1..10000, default 1000): the total per page."""
    value = query.get("limit")
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise data_error(400, f"invalid limit: {value}, must be between 1 and {maximum}")
    return int(value)


def descending(query: Query) -> bool:
    """``sort`` asc (default) or desc."""
    value = query.get("sort", "asc")
    if value not in ("asc", "desc"):
        raise data_error(400, f"invalid sort: {value}")
    return value == "desc"


def check_adjustment(query: Query) -> None:
    """``adjustment`` is validated but has no effect: stored bars are returned as stored."""
    value = query.get("adjustment")
    if value is not None and not set(value.split(",")) <= ADJUSTMENTS:
        raise data_error(400, f"invalid adjustment: {value}")


def check_asof(query: Query) -> None:
    """``asof`` is a YYYY-MM-DD date or ``-`` (no symbol mapping). It is validated but has no
    effect: the emulator keeps no history of renamed symbols."""
    value = query.get("asof")
    if value is None or value == "-":
        return
    try:
        strict_date(value)
    except ValueError:
        raise data_error(400, f"invalid asof: {value}") from None


@dataclass(frozen=True)
class TimeRange:
    """Inclusive ``start``/``end`` bounds in nanoseconds; None means unbounded."""

    start_ns: int | None
    end_ns: int | None

    def contains(self, t_ns: int) -> bool:
        """Whether a timestamp lies inside the inclusive range."""
        after_start = self.start_ns is None or t_ns >= self.start_ns
        return after_start and (self.end_ns is None or t_ns <= self.end_ns)


def time_range(query: Query) -> TimeRange:
    """``start``/``end`` as RFC 3339 (Z or offset) or YYYY-MM-DD.

    Alpaca's defaults (start of today, end now) are not applied: without bounds every stored
    bar is in range, so tests need not care what day the suite runs.
    """
    bounds: list[int | None] = []
    for name in ("start", "end"):
        text = query.get(name)
        try:
            bounds.append(None if text is None else query_time_ns(text, end_of_day=name == "end"))
        except ValueError:
            raise data_error(400, f"invalid {name}: {text}") from None
    start_ns, end_ns = bounds
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        raise data_error(400, "end should not be before start")
    return TimeRange(start_ns, end_ns)
