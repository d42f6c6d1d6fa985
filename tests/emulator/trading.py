"""Trading-API handlers: clock, calendar, assets, account, positions and option contracts.

Decimals stay strings as Alpaca's documents give them (``sdk_shapes`` changes option contracts:
see :mod:`sdk_shapes`). Orders live in :mod:`orders`.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import TypeVar

from aiohttp import web

from . import trading_params as tp
from .decimals import parse_decimal
from .responses import json_response, trading_error
from .sdk_shapes import contract_answer
from .state import STATE_KEY, EmulatorState
from .timestamps import strict_date
from .wire_json import Json, JsonObject

CONTRACTS_DEFAULT_LIMIT = 100
CONTRACTS_MAX_LIMIT = 10_000
NOT_FOUND = 40410000
INVALID = 40010000
# Alpaca's documented enums for the asset listing's filters (its Assets, AssetClass and
# Exchange schemas).
ASSET_STATUSES = frozenset({"active", "inactive"})
ASSET_CLASSES = frozenset({"us_equity", "us_option", "crypto", "ipo"})
EXCHANGES = frozenset({"AMEX", "ARCA", "BATS", "NYSE", "NASDAQ", "NYSEARCA", "OTC"})
ASSET_ATTRIBUTES = frozenset({
    "ptp_no_exception", "ptp_with_exception", "ipo", "has_options", "options_late_close",
    "fractional_eh_enabled", "overnight_tradable", "overnight_halted",
})  # fmt: skip
DATE_TYPES = {"TRADING": "date", "SETTLEMENT": "settlement_date"}
_Bound = TypeVar("_Bound", Decimal, date)


async def clock(request: web.Request) -> web.Response:
    """GET /v2/clock"""
    return json_response(request.app[STATE_KEY].clock)


async def calendar(request: web.Request) -> web.Response:
    """GET /v2/calendar: the stored market days whose trading date (or, with
    ``date_type=SETTLEMENT``, settlement date) lies within ``start``..``end``, inclusive.

    Nothing is generated: with no days stored the answer is ``[]``. Bad values are 400, the one
    error status Alpaca documents for this endpoint.
    """
    query = request.query
    start = tp.calendar_date(query, "start")
    end = tp.calendar_date(query, "end")
    date_type = query.get("date_type", "TRADING")
    if date_type not in DATE_TYPES:
        raise trading_error(400, INVALID, f"invalid date_type: {date_type}")
    days: list[Json] = [
        day
        for day in request.app[STATE_KEY].calendar
        if _between(_field_date(day, DATE_TYPES[date_type]), start, end)
    ]
    return json_response(days)


def _listing_key(found: JsonObject) -> tuple[str, str, str]:
    return str(found.get("class")), str(found.get("exchange")), str(found.get("symbol"))


async def assets(request: web.Request) -> web.Response:
    """GET /v2/assets: the registered assets, sorted by asset class, exchange and symbol, as
    Alpaca sorts its master list.

    ``status`` defaults to every status and ``asset_class`` to ``us_equity``, as documented;
    ``attributes`` keeps assets holding any of the given attributes.
    """
    query = request.query
    status = tp.choice(query, "status", ASSET_STATUSES, None)
    asset_class = tp.choice(query, "asset_class", ASSET_CLASSES, "us_equity")
    exchange = tp.choice(query, "exchange", EXCHANGES, None)
    wanted = tp.csv(query, "attributes") or None  # an empty list filters nothing
    if wanted is not None and not wanted <= ASSET_ATTRIBUTES:
        raise tp.invalid(f"invalid attributes: {query['attributes']}")
    listed: list[Json] = []
    for found in sorted(request.app[STATE_KEY].assets.values(), key=_listing_key):
        held = found.get("attributes")
        held_attributes = (
            {a for a in held if isinstance(a, str)} if isinstance(held, list) else set()
        )
        if (
            (status is not None and found.get("status") != status)
            or found.get("class") != asset_class
            or (exchange is not None and found.get("exchange") != exchange)
            or (wanted is not None and not wanted & held_attributes)
        ):
            continue
        listed.append(found)
    return json_response(listed)


async def account(request: web.Request) -> web.Response:
    """GET /v2/account"""
    return json_response(request.app[STATE_KEY].account)


async def asset(request: web.Request) -> web.Response:
    """GET /v2/assets/{symbol_or_asset_id}: by symbol or id; unknown gives 404 40410000."""
    found = request.app[STATE_KEY].find_asset(request.match_info["symbol_or_asset_id"])
    if found is None:
        raise trading_error(404, NOT_FOUND, "asset not found")
    return json_response(found)


# --- positions ---------------------------------------------------------------------------------


async def positions(request: web.Request) -> web.Response:
    """GET /v2/positions: every stored position, sorted by symbol."""
    held = request.app[STATE_KEY].positions
    return json_response([held[symbol] for symbol in sorted(held)])


async def position(request: web.Request) -> web.Response:
    """GET /v2/positions/{symbol_or_asset_id}: 404 40410000 when there is no position."""
    found = request.app[STATE_KEY].find_position(request.match_info["symbol_or_asset_id"])
    if found is None:
        raise trading_error(404, NOT_FOUND, "position does not exist")
    return json_response(found)


# --- option contracts --------------------------------------------------------------------------


def upcoming_weekend(state: EmulatorState) -> date | None:
    """The first Sunday on or after the emulated clock's date (Alpaca's default upper bound)."""
    timestamp = state.clock.get("timestamp")
    if not isinstance(timestamp, str):
        return None
    try:
        today = strict_date(timestamp[:10])  # the date in the clock's own (ET) offset
    except ValueError:
        return None
    return today + timedelta(days=6 - today.weekday())


def _field_decimal(contract: JsonObject, name: str) -> Decimal | None:
    try:
        return parse_decimal(contract.get(name))
    except ValueError:
        return None


def _field_date(contract: JsonObject, name: str) -> date | None:
    value = contract.get(name)
    try:
        return strict_date(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _between(value: _Bound | None, low: _Bound | None, high: _Bound | None) -> bool:
    """Inclusive bounds; a missing value fails any bound."""
    if low is None and high is None:
        return True
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


async def option_contracts(request: web.Request) -> web.Response:
    """GET /v2/options/contracts: filtered, sorted by symbol, offset-paged like Alpaca.

    As at Alpaca, only ``active`` contracts are listed unless ``status`` says otherwise, and
    without ``expiration_date``/``expiration_date_lte`` only contracts expiring on or before
    the upcoming weekend (the first Sunday on or after the ``/v2/clock`` date) are listed.
    """
    query = request.query
    state = request.app[STATE_KEY]
    underlyings = tp.csv(query, "underlying_symbols")
    status = tp.choice(query, "status", frozenset({"active", "inactive"}), "active")
    kind = tp.choice(query, "type", frozenset({"call", "put"}), None)
    style = tp.choice(query, "style", frozenset({"american", "european"}), None)
    strike_gte = tp.decimal(query, "strike_price_gte")
    strike_lte = tp.decimal(query, "strike_price_lte")
    expiration = tp.day(query, "expiration_date")
    expiration_gte = tp.day(query, "expiration_date_gte")
    expiration_lte = tp.day(query, "expiration_date_lte")
    if expiration is None and expiration_lte is None:
        expiration_lte = upcoming_weekend(state)
    root = query.get("root_symbol")
    show_deliverables = tp.boolean(query, "show_deliverables") is True
    tp.boolean(query, "ppind")  # penny-program filter: validated, not modelled
    limit = tp.integer(
        query, "limit", default=CONTRACTS_DEFAULT_LIMIT, minimum=1, maximum=CONTRACTS_MAX_LIMIT
    )
    if state.config.max_page_size is not None:
        limit = min(limit, state.config.max_page_size)
    offset = tp.offset_token(query)

    matching: list[JsonObject] = []
    for symbol in sorted(state.option_contracts):
        contract = state.option_contracts[symbol]
        expires = _field_date(contract, "expiration_date")
        if (
            (underlyings is not None and contract.get("underlying_symbol") not in underlyings)
            or contract.get("status") != status
            or (kind is not None and contract.get("type") != kind)
            or (style is not None and contract.get("style") != style)
            or (root is not None and contract.get("root_symbol") != root)
            or not _between(_field_decimal(contract, "strike_price"), strike_gte, strike_lte)
            or not _between(expires, expiration_gte, expiration_lte)
            or (expiration is not None and expires != expiration)
        ):
            continue
        listed = contract_answer(contract, state.config)
        if not show_deliverables:
            listed = {name: value for name, value in listed.items() if name != "deliverables"}
        matching.append(listed)
    page = matching[offset : offset + limit]
    end = offset + len(page)
    token: Json = tp.encode_offset(end) if end < len(matching) else None
    return json_response({"option_contracts": list[Json](page), "next_page_token": token})


async def option_contract(request: web.Request) -> web.Response:
    """GET /v2/options/contracts/{symbol_or_id}: 404 40410000 names the unknown contract."""
    wanted = request.match_info["symbol_or_id"]
    state = request.app[STATE_KEY]
    found = state.find_option_contract(wanted)
    if found is None:
        raise trading_error(404, NOT_FOUND, f"option contract {wanted} not found")
    return json_response(contract_answer(found, state.config))
