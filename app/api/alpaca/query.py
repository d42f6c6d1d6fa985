"""The face's query strings: an allow-list per route, every value checked before it goes into an
upstream URL (a symbol of `..` never reaches Alpaca with the gateway's credentials)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.requests import Request

from app.api.params import invalid, query_of
from app.models.patterns import (
    DATE_PATTERN,
    ORDER_ID_PATTERN,
    PAGE_TOKEN_PATTERN,
    ROOT_SYMBOL_PATTERN,
    STRIKE_PATTERN,
    TIME_BOUND_PATTERN,
    regex,
)
from app.reads.stocks import time_bound, timeframe_seconds
from app.symbols import option_contract, stock_symbol

# A checked value as it is sent on; raises VALIDATION_ERROR otherwise.
Check = Callable[[str, str], str]
MAX_SYMBOLS = 100


def read_query(request: Request, allowed: Mapping[str, Check]) -> dict[str, str]:
    """The query, each parameter checked; one Alpaca does not take here is refused."""
    checked: dict[str, str] = {}
    for name, value in query_of(request).items():
        check = allowed.get(name)
        if check is None:
            raise invalid(name, "is not a parameter of this endpoint")
        checked[name] = check(name, value)
    return checked


def required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if value is None:
        raise invalid(name, "is required")
    return value


def stock_symbols(name: str, value: str) -> str:
    return _symbols(name, value, stock_symbol)


def option_symbols(name: str, value: str) -> str:
    return _symbols(name, value, option_contract)


def _symbols(name: str, value: str, check: Callable[[str], str]) -> str:
    items = value.split(",")
    if not 1 <= len(items) <= MAX_SYMBOLS:
        raise invalid(name, f"must list 1 to {MAX_SYMBOLS} symbols")
    # Alpaca refuses a whole call for one bad symbol (400 "invalid symbol"): so does the face.
    return ",".join(dict.fromkeys(check(item) for item in items))


def one_of(*choices: str) -> Check:
    def check(name: str, value: str) -> str:
        if value not in choices:
            raise invalid(name, f"must be one of {', '.join(choices)}")
        return value

    return check


def matching(pattern: str, max_length: int = 64) -> Check:
    compiled = regex(pattern)

    def check(name: str, value: str) -> str:
        if len(value) > max_length or not compiled.match(value):
            raise invalid(name, f"must match {pattern}")
        return value

    return check


def integer(low: int, high: int) -> Check:
    def check(name: str, value: str) -> str:
        if not value.isdigit() or len(value) > len(str(high)) or not low <= int(value) <= high:
            raise invalid(name, f"must be an integer from {low} to {high}")
        return str(int(value))

    return check


def timeframe(name: str, value: str) -> str:
    timeframe_seconds(value)  # refuses what Alpaca would refuse
    return value


def moment(name: str, value: str) -> str:
    """RFC 3339 or YYYY-MM-DD, a real time (alpaca-py sends `2024-01-02T00:00:00+00:00`)."""
    matching(TIME_BOUND_PATTERN)(name, value)
    time_bound(name, value)
    return value


date = matching(DATE_PATTERN, 10)
page_token = matching(PAGE_TOKEN_PATTERN, 512)
strike = matching(STRIKE_PATTERN, 12)
root_symbol = matching(ROOT_SYMBOL_PATTERN, 6)
order_id = matching(ORDER_ID_PATTERN, 36)
sort = one_of("asc", "desc")


def single_stock_symbol(name: str, value: str) -> str:
    return stock_symbol(value)
