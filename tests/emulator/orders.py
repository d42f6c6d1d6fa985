"""Orders: submit, list, get (by id or client_order_id), replace and cancel, with Alpaca's
semantics.

Numbers in a submitted order may be JSON numbers or strings; the order keeps them as
normalised decimal strings (see :mod:`decimals`: ``1.0`` -> ``"1"``, ``"150.10"`` ->
``"150.1"``). Errors follow the trading API: a body Alpaca cannot read is 400 40010000, a
value it refuses 422 40010000 (42210000 for pricing and tradability), an unknown symbol 422
40010001, a reused ``client_order_id`` 422 40010001, too little buying power 403 40310000.
Orders never fill by themselves: tests move them with ``PUT /_emulator/orders/{id}/status``.
A replace (``PATCH``) closes the order as ``replaced`` and opens a new one with the new terms.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

from aiohttp import web

from . import trading_params as tp
from .decimals import decimal_places, decimal_text, parse_decimal
from .occ import parse_occ
from .order_book import ORDER_STATUSES, StoredOrder
from .responses import AlpacaError, json_response, trading_error
from .sdk_shapes import order_answer
from .state import STATE_KEY, EmulatorState
from .timestamps import format_ns
from .wire_json import Json, JsonObject, WireJsonError, loads

ORDER_TYPES = frozenset({"market", "limit", "stop", "stop_limit", "trailing_stop"})
TIMES_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
ORDER_CLASSES = frozenset({"simple", "bracket", "oco", "oto", "mleg", ""})
SIDES = frozenset({"buy", "sell"})
POSITION_INTENTS = frozenset({"buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close"})
MAX_CLIENT_ORDER_ID = 128
MAX_LEGS = 4
ORDERS_DEFAULT_LIMIT = 50
ORDERS_MAX_LIMIT = 500

INVALID = 40010000
ASSET_OR_DUPLICATE = 40010001
UNPROCESSABLE = 42210000
FORBIDDEN = 40310000
NOT_FOUND = 40410000


def _invalid(message: str) -> AlpacaError:
    return trading_error(422, INVALID, message)


@dataclass(frozen=True)
class _Instrument:
    """What an order trades: the asset or option contract behind its symbol."""

    symbol: str
    asset_id: str
    asset_class: str
    multiplier: Decimal


def _text(body: JsonObject, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    return value


def _enum(body: JsonObject, name: str, allowed: frozenset[str], *, required: bool) -> str | None:
    value = _text(body, name)
    if value is None:
        if required:
            raise _invalid(f"{name} is required")
        return None
    if value not in allowed:
        raise _invalid(f"invalid {name}: {value}")
    return value


def _number(body: JsonObject, name: str) -> Decimal | None:
    """A decimal sent as a JSON number or a string (alpaca-py sends numbers)."""
    value = body.get(name)
    if value is None:
        return None
    try:
        return parse_decimal(value)
    except ValueError:
        raise _invalid(f"invalid {name}: {value}") from None


def _positive(body: JsonObject, name: str) -> Decimal | None:
    value = _number(body, name)
    if value is not None and value <= 0:
        raise _invalid(f"{name} must be > 0")
    return value


def _check_price_increment(name: str, price: Decimal | None) -> None:
    """Alpaca refuses sub-penny prices: 2 decimals from $1, 4 below."""
    if price is None:
        return
    allowed = 2 if abs(price) >= 1 else 4
    if decimal_places(price) > allowed:
        raise trading_error(
            422,
            UNPROCESSABLE,
            f"invalid {name} {decimal_text(price)}. sub-penny increment does not fulfill "
            "minimum pricing criteria",
        )


def _instrument(state: EmulatorState, symbol_or_id: str) -> _Instrument:
    """The asset or option contract; 422 when unknown or not tradable."""
    contract = state.find_option_contract(symbol_or_id)
    if contract is not None:
        symbol = str(contract.get("symbol", symbol_or_id))
        if contract.get("tradable") is not True or contract.get("status") != "active":
            raise trading_error(422, UNPROCESSABLE, f"asset {symbol} is not tradable")
        try:
            multiplier = parse_decimal(contract.get("multiplier"))
        except ValueError:
            multiplier = Decimal(100)
        return _Instrument(symbol, str(contract.get("id")), "us_option", multiplier)
    asset = state.find_asset(symbol_or_id)
    if asset is None:
        raise trading_error(422, ASSET_OR_DUPLICATE, f"asset {symbol_or_id} not found")
    symbol = str(asset.get("symbol", symbol_or_id))
    if asset.get("tradable") is not True or asset.get("status", "active") != "active":
        raise trading_error(422, UNPROCESSABLE, f"asset {symbol} is not tradable")
    asset_class = asset.get("class")
    return _Instrument(
        symbol,
        str(asset.get("id")),
        asset_class if isinstance(asset_class, str) else "us_equity",
        Decimal(1),
    )


def _object(body: JsonObject, name: str) -> JsonObject | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"{name} must be an object")
    return value


def _check_legs(state: EmulatorState, body: JsonObject) -> None:
    legs = body.get("legs")
    if not isinstance(legs, list) or not 1 <= len(legs) <= MAX_LEGS:
        raise _invalid(f"mleg orders require 1 to {MAX_LEGS} legs")
    for leg in legs:
        if not isinstance(leg, dict):
            raise _invalid("each leg must be an object")
        symbol = _text(leg, "symbol")
        if symbol is None:
            raise _invalid("leg symbol is required")
        if _instrument(state, symbol).asset_class != "us_option":
            raise _invalid(f"leg {symbol} is not an option contract")
        if _positive(leg, "ratio_qty") is None:
            raise _invalid("leg ratio_qty is required")
        _enum(leg, "side", SIDES, required=False)
        _enum(leg, "position_intent", POSITION_INTENTS, required=False)


def _check_advanced(body: JsonObject, order_class: str) -> tuple[JsonObject | None, ...]:
    take_profit = _object(body, "take_profit")
    stop_loss = _object(body, "stop_loss")
    if take_profit is not None:
        if _positive(take_profit, "limit_price") is None:
            raise _invalid("take_profit.limit_price is required")
        _check_price_increment("take_profit.limit_price", _number(take_profit, "limit_price"))
    if stop_loss is not None:
        if _positive(stop_loss, "stop_price") is None:
            raise _invalid("stop_loss.stop_price is required")
        _check_price_increment("stop_loss.stop_price", _number(stop_loss, "stop_price"))
        _check_price_increment("stop_loss.limit_price", _positive(stop_loss, "limit_price"))
    if order_class in ("bracket", "oco") and (take_profit is None or stop_loss is None):
        raise _invalid(f"{order_class} orders require take_profit and stop_loss")
    if order_class == "oto" and take_profit is None and stop_loss is None:
        raise _invalid("oto orders require take_profit or stop_loss")
    return take_profit, stop_loss


def _reference_price(state: EmulatorState, instrument: _Instrument) -> Decimal | None:
    """The stored last trade price (else ask) a market order's cost is estimated from."""
    if instrument.asset_class == "us_option":
        trade, quote = (
            state.options.trades.get(instrument.symbol),
            state.options.quotes.get(instrument.symbol),
        )
    else:
        trade = state.market.trades.get(instrument.symbol)
        quote = state.market.quotes.get(instrument.symbol)
    for source, field in ((trade, "p"), (quote, "ap")):
        if source is not None:
            try:
                price = parse_decimal(source.get(field))
            except ValueError:
                continue
            if price > 0:
                return price
    return None


def _check_buying_power(
    state: EmulatorState,
    instrument: _Instrument,
    qty: Decimal | None,
    notional: Decimal | None,
    price: Decimal | None,
) -> None:
    """Buys must fit the account's buying power (options: ``options_buying_power``)."""
    if notional is not None:
        cost: Decimal | None = notional
    elif qty is not None and price is not None:
        cost = qty * price * instrument.multiplier
    else:
        cost = None
    field = "buying_power"
    if instrument.asset_class == "us_option" and "options_buying_power" in state.account:
        field = "options_buying_power"
    try:
        available = parse_decimal(state.account.get(field))
    except ValueError:
        return  # a test stored a non-number: nothing to compare with
    if cost is not None and cost > available:
        raise trading_error(403, FORBIDDEN, "insufficient buying power")


def _new_order(state: EmulatorState, body: JsonObject, now_ns: int) -> JsonObject:
    """Validate a submitted order against the state; the new order's wire object."""
    order_type = _enum(body, "type", ORDER_TYPES, required=True)
    time_in_force = _enum(body, "time_in_force", TIMES_IN_FORCE, required=True)
    order_class = _enum(body, "order_class", ORDER_CLASSES, required=False) or ""
    is_mleg = order_class == "mleg"
    side = _enum(body, "side", SIDES, required=not is_mleg)
    intent = _enum(body, "position_intent", POSITION_INTENTS, required=False)
    symbol = _text(body, "symbol")
    if symbol is None and not is_mleg:
        raise _invalid("symbol is required")
    client_order_id = _text(body, "client_order_id")
    if client_order_id is not None and len(client_order_id) > MAX_CLIENT_ORDER_ID:
        raise _invalid(f"client_order_id must be no more than {MAX_CLIENT_ORDER_ID} characters")
    qty = _positive(body, "qty")
    notional = _positive(body, "notional")
    if qty is not None and notional is not None:
        raise _invalid("qty and notional cannot both be specified")
    if qty is None and notional is None:
        raise _invalid("qty or notional is required")
    if qty is not None and decimal_places(qty) > 9:
        raise _invalid("qty must have at most 9 decimal places")
    limit_price = _number(body, "limit_price")
    if limit_price is not None and limit_price <= 0 and not is_mleg:
        raise _invalid("limit_price must be > 0")
    stop_price = _positive(body, "stop_price")
    trail_price = _positive(body, "trail_price")
    trail_percent = _positive(body, "trail_percent")
    extended_hours = body.get("extended_hours", False)
    if not isinstance(extended_hours, bool):
        raise _invalid("extended_hours must be a boolean")

    if order_type == "market" and (limit_price is not None or stop_price is not None):
        raise _invalid("market orders require no stop or limit price")
    if order_type in ("limit", "stop_limit") and limit_price is None:
        raise _invalid(f"limit_price is required for {order_type} orders")
    if order_type in ("stop", "stop_limit") and stop_price is None:
        raise _invalid(f"stop_price is required for {order_type} orders")
    if order_type == "trailing_stop" and (trail_price is None) == (trail_percent is None):
        raise _invalid("trailing_stop orders require exactly one of trail_price or trail_percent")
    if notional is not None and (order_type != "market" or time_in_force != "day"):
        raise _invalid("notional orders must be market day orders")
    if extended_hours and (order_type != "limit" or time_in_force not in ("day", "gtc")):
        raise _invalid("extended hours order must be DAY or GTC limit orders")
    _check_price_increment("limit_price", limit_price)
    _check_price_increment("stop_price", stop_price)
    _check_advanced(body, order_class)

    if is_mleg:
        _check_legs(state, body)
        if qty is None:
            raise _invalid("qty is required for mleg orders")
        instrument = None
    else:
        instrument = _instrument(state, str(symbol))
        if instrument.asset_class == "us_option":
            if qty is None or qty != qty.to_integral_value():
                raise _invalid("option orders require a whole number qty")
            if order_type not in ("market", "limit") or time_in_force != "day":
                raise _invalid("option orders must be market or limit day orders")
    if client_order_id is not None and state.orders.by_client_order_id(client_order_id):
        raise trading_error(422, ASSET_OR_DUPLICATE, "client_order_id must be unique")
    if instrument is not None and side == "buy":
        price = limit_price or stop_price or _reference_price(state, instrument)
        _check_buying_power(state, instrument, qty, notional, price)

    now = format_ns(now_ns)
    wire: JsonObject = {
        "id": str(uuid.uuid4()),
        "client_order_id": client_order_id or str(uuid.uuid4()),
        "created_at": now,
        "updated_at": now,
        "submitted_at": now,
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        # An mleg order has no single instrument: Alpaca sends "" (its own example does).
        "asset_id": "" if instrument is None else instrument.asset_id,
        "symbol": "" if instrument is None else instrument.symbol,
        "asset_class": "" if instrument is None else instrument.asset_class,
        "notional": _optional_text(notional),
        "qty": _optional_text(qty),
        "filled_qty": "0",
        "filled_avg_price": None,
        "order_class": order_class,
        "order_type": order_type,
        "type": order_type,
        "side": side or "",
        "time_in_force": time_in_force,
        "limit_price": _optional_text(limit_price),
        "stop_price": _optional_text(stop_price),
        "status": "accepted",
        "extended_hours": extended_hours,
        "legs": None,
        "trail_percent": _optional_text(trail_percent),
        "trail_price": _optional_text(trail_price),
        "hwm": None,
        "source": None,
        "subtag": None,
    }
    if intent is not None:
        wire["position_intent"] = intent
    return wire


_SENT_NUMBERS = ("qty", "limit_price", "stop_price")


def _optional_text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


async def submit_order(request: web.Request) -> web.Response:
    """POST /v2/orders: 200 with the new order (status ``accepted``)."""
    try:
        body: Json = loads(await request.text())
    except WireJsonError:
        body = None
    if not isinstance(body, dict):
        raise trading_error(400, INVALID, "request body format is invalid")
    state = request.app[STATE_KEY]
    now_ns = time.time_ns()
    wire = _new_order(state, body, now_ns)
    # Validated above; kept as sent (not normalised) for the sdk_shapes answers.
    numbers = {n: parse_decimal(body[n]) for n in _SENT_NUMBERS if wire.get(n) is not None}
    numbers["filled_qty"] = Decimal(0)
    order = StoredOrder(submitted_ns=now_ns, wire=wire, numbers=numbers)
    state.orders.add(order)
    return json_response(order_answer(order, state.config))


def _underlying(state: EmulatorState, order: StoredOrder) -> str | None:
    if order.wire.get("asset_class") != "us_option":
        return None
    symbol = str(order.wire.get("symbol"))
    contract = state.option_contracts.get(symbol)
    underlying = None if contract is None else contract.get("underlying_symbol")
    if isinstance(underlying, str):
        return underlying
    try:
        return parse_occ(symbol).root
    except ValueError:
        return None


async def list_orders(request: web.Request) -> web.Response:
    """GET /v2/orders: open (default), closed or all; newest first unless direction=asc.

    ``after`` and ``until`` are exclusive bounds on ``submitted_at``; ``symbols`` also
    matches option orders by their underlying; ``limit`` 1..500 (default 50).
    """
    query = request.query
    state = request.app[STATE_KEY]
    status = tp.choice(query, "status", frozenset({"open", "closed", "all"}), "open")
    limit = tp.integer(
        query, "limit", default=ORDERS_DEFAULT_LIMIT, minimum=1, maximum=ORDERS_MAX_LIMIT
    )
    after_ns = tp.moment_ns(query, "after")
    until_ns = tp.moment_ns(query, "until")
    direction = tp.choice(query, "direction", frozenset({"asc", "desc"}), "desc")
    tp.boolean(query, "nested")  # legs are never nested: child orders are not modelled
    symbols = tp.csv(query, "symbols")
    side = tp.choice(query, "side", SIDES, None)
    classes = tp.csv(query, "asset_class")
    if classes is not None and "all" in classes:
        classes = None

    selected: list[StoredOrder] = []
    for order in state.orders.all():
        if (
            (status == "open" and not order.is_open)
            or (status == "closed" and order.is_open)
            or (after_ns is not None and order.submitted_ns <= after_ns)
            or (until_ns is not None and order.submitted_ns >= until_ns)
            or (side is not None and order.wire.get("side") != side)
            or (classes is not None and order.wire.get("asset_class") not in classes)
            or (
                symbols is not None
                and order.wire.get("symbol") not in symbols
                and _underlying(state, order) not in symbols
            )
        ):
            continue
        selected.append(order)
    if direction == "desc":
        selected.reverse()
    return json_response([order_answer(order, state.config) for order in selected[:limit]])


def _order_or_404(state: EmulatorState, order_id: str) -> StoredOrder:
    order = state.orders.get(order_id)
    if order is None:
        raise trading_error(404, NOT_FOUND, "order not found")
    return order


async def get_order(request: web.Request) -> web.Response:
    """GET /v2/orders/{order_id}"""
    tp.boolean(request.query, "nested")
    state = request.app[STATE_KEY]
    order = _order_or_404(state, request.match_info["order_id"])
    return json_response(order_answer(order, state.config))


async def order_by_client_order_id(request: web.Request) -> web.Response:
    """GET /v2/orders:by_client_order_id?client_order_id=X (the colon is part of the path)."""
    client_order_id = request.query.get("client_order_id")
    if not client_order_id:
        raise _invalid("client_order_id is required")
    state = request.app[STATE_KEY]
    order = state.orders.by_client_order_id(client_order_id)
    if order is None:
        raise trading_error(404, NOT_FOUND, "order not found")
    return json_response(order_answer(order, state.config))


def cancel(order: StoredOrder) -> None:
    """Mark an open order canceled now."""
    now = format_ns(time.time_ns())
    order.wire.update({"status": "canceled", "canceled_at": now, "updated_at": now})


# Alpaca refuses to replace an order its venue has not acknowledged yet, or one already being
# canceled or replaced (the note on its Replace Order document). The messages are Alpaca's.
_NOT_AT_VENUE = frozenset({"accepted", "pending_new"})
_BEING_CHANGED = frozenset({"pending_cancel", "pending_replace"})
# The terms a replace may change, in the order they are compared.
_TERMS = ("qty", "notional", "time_in_force", "limit_price", "stop_price", "trail")


def _check_replaceable(order: StoredOrder) -> None:
    status = order.status
    if status in _NOT_AT_VENUE:
        raise trading_error(
            422, UNPROCESSABLE, "unable to replace order, order isn't sent to exchange yet"
        )
    if not order.is_open or status in _BEING_CHANGED:
        raise trading_error(422, UNPROCESSABLE, f'order is already in "{status}" state')
    if order.wire.get("notional") is not None and order.wire.get("asset_class") != "ipo":
        raise trading_error(422, UNPROCESSABLE, "notional orders cannot be replaced")


def _held_decimal(order: StoredOrder, name: str) -> Decimal | None:
    try:
        return parse_decimal(order.wire.get(name))
    except ValueError:
        return None


def _trail_field(order: StoredOrder) -> str:
    return "trail_percent" if order.wire.get("trail_percent") is not None else "trail_price"


def _current_terms(order: StoredOrder) -> dict[str, Decimal | str | None]:
    tif = order.wire.get("time_in_force")
    return {
        "qty": _held_decimal(order, "qty"),
        "notional": _held_decimal(order, "notional"),
        "time_in_force": tif if isinstance(tif, str) else None,
        "limit_price": _held_decimal(order, "limit_price"),
        "stop_price": _held_decimal(order, "stop_price"),
        "trail": _held_decimal(order, _trail_field(order)),
    }


def _new_terms(order: StoredOrder, body: JsonObject) -> dict[str, Decimal | str | None]:
    """The terms the body asks for (None: keep the order's); 422 for a value Alpaca refuses."""
    order_type = str(order.wire.get("type"))
    asset_class = order.wire.get("asset_class")
    qty = _positive(body, "qty")
    notional = _positive(body, "notional")
    if qty is not None and notional is not None:
        raise _invalid("qty and notional cannot both be specified")
    if qty is not None:
        if qty != qty.to_integral_value():
            raise _invalid("qty must be a whole number of shares")
        held = _held_decimal(order, "qty")
        if held is None or held != held.to_integral_value():
            raise _invalid("qty of a fractional or notional order cannot be changed")
    if notional is not None and asset_class != "ipo":
        raise _invalid("notional can only be replaced on ipo orders")
    limit_price = _number(body, "limit_price")
    if limit_price is not None:
        if order_type not in ("limit", "stop_limit"):
            raise _invalid(f"limit_price cannot be set on a {order_type} order")
        if limit_price <= 0 and order.wire.get("order_class") != "mleg":
            raise _invalid("limit_price must be > 0")
    stop_price = _positive(body, "stop_price")
    if stop_price is not None and order_type not in ("stop", "stop_limit"):
        raise _invalid(f"stop_price cannot be set on a {order_type} order")
    trail = _positive(body, "trail")
    if trail is not None and order_type != "trailing_stop":
        raise _invalid(f"trail cannot be set on a {order_type} order")
    time_in_force = _enum(body, "time_in_force", TIMES_IN_FORCE, required=False)
    effective_tif = time_in_force or order.wire.get("time_in_force")
    if asset_class == "us_option" and effective_tif != "day":
        raise _invalid("option orders must be market or limit day orders")
    if order.wire.get("extended_hours") is True and effective_tif not in ("day", "gtc"):
        raise _invalid("extended hours order must be DAY or GTC limit orders")
    _check_price_increment("limit_price", limit_price)
    _check_price_increment("stop_price", stop_price)
    _object(body, "advanced_instructions")  # validated; algorithmic routing is not modelled
    return {"qty": qty, "notional": notional, "time_in_force": time_in_force,
            "limit_price": limit_price, "stop_price": stop_price, "trail": trail}  # fmt: skip


def _held_instrument(state: EmulatorState, order: StoredOrder) -> _Instrument | None:
    """What the order trades, for the cost of its replacement; None for mleg orders."""
    asset_class = order.wire.get("asset_class")
    if not isinstance(asset_class, str) or not asset_class:
        return None
    symbol = str(order.wire.get("symbol"))
    multiplier = Decimal(1)
    if asset_class == "us_option":
        contract = state.find_option_contract(symbol)
        try:
            multiplier = parse_decimal(None if contract is None else contract.get("multiplier"))
        except ValueError:
            multiplier = Decimal(100)
    return _Instrument(symbol, str(order.wire.get("asset_id")), asset_class, multiplier)


def _replacement(
    state: EmulatorState, order: StoredOrder, body: JsonObject, now_ns: int
) -> StoredOrder:
    """Validate a replace against the order and the state; the new order (not yet stored)."""
    _check_replaceable(order)
    asked = _new_terms(order, body)
    client_order_id = _text(body, "client_order_id")
    if client_order_id is not None and len(client_order_id) > MAX_CLIENT_ORDER_ID:
        raise _invalid(f"client_order_id must be no more than {MAX_CLIENT_ORDER_ID} characters")
    current = _current_terms(order)
    if all(asked[name] is None or asked[name] == current[name] for name in _TERMS):
        raise trading_error(403, FORBIDDEN, "order parameters are not changed")
    if client_order_id is not None and state.orders.by_client_order_id(client_order_id):
        raise trading_error(422, ASSET_OR_DUPLICATE, "client_order_id must be unique")
    terms = {name: current[name] if asked[name] is None else asked[name] for name in _TERMS}
    instrument = _held_instrument(state, order)
    if instrument is not None and order.wire.get("side") == "buy":
        qty, notional = terms["qty"], terms["notional"]
        price = terms["limit_price"] or terms["stop_price"]
        _check_buying_power(
            state,
            instrument,
            qty if isinstance(qty, Decimal) else None,
            notional if isinstance(notional, Decimal) else None,
            price if isinstance(price, Decimal) else _reference_price(state, instrument),
        )

    now = format_ns(now_ns)
    wire = dict(order.wire)
    wire.update({
        "id": str(uuid.uuid4()), "client_order_id": client_order_id or str(uuid.uuid4()),
        "created_at": now, "updated_at": now, "submitted_at": now, "filled_at": None,
        "expired_at": None, "canceled_at": None, "failed_at": None, "replaced_at": None,
        "replaced_by": None, "replaces": order.id, "filled_qty": "0", "filled_avg_price": None,
        "status": "accepted", "hwm": None,
    })  # fmt: skip
    for name in ("qty", "notional", "limit_price", "stop_price"):
        value = asked[name]
        if isinstance(value, Decimal):
            wire[name] = decimal_text(value)
    if isinstance(asked["time_in_force"], str):
        wire["time_in_force"] = asked["time_in_force"]
    if isinstance(asked["trail"], Decimal):
        wire[_trail_field(order)] = decimal_text(asked["trail"])
    numbers = {
        n: v for n, v in order.numbers.items() if n not in ("filled_qty", "filled_avg_price")
    }
    numbers["filled_qty"] = Decimal(0)
    for name in _SENT_NUMBERS:
        if asked[name] is not None:
            numbers[name] = parse_decimal(body[name])  # as sent, for the sdk_shapes answers
    return StoredOrder(submitted_ns=now_ns, wire=wire, numbers=numbers)


async def replace_order(request: web.Request) -> web.Response:
    """PATCH /v2/orders/{order_id}: 200 with the new order (``replaces`` the old id); the old
    one is ``replaced`` at once, with ``replaced_by``. 404 unknown order; 422 42210000 for an
    order that cannot be replaced; 403 40310000 when no term changes."""
    state = request.app[STATE_KEY]
    order = _order_or_404(state, request.match_info["order_id"])
    try:
        body: Json = loads(await request.text())
    except WireJsonError:
        body = None
    if not isinstance(body, dict):
        raise trading_error(400, INVALID, "request body format is invalid")
    now_ns = time.time_ns()
    replacement = _replacement(state, order, body, now_ns)
    now = format_ns(now_ns)
    order.wire.update(
        {"status": "replaced", "replaced_at": now, "replaced_by": replacement.id, "updated_at": now}
    )
    state.orders.add(replacement)
    return json_response(order_answer(replacement, state.config))


async def cancel_order(request: web.Request) -> web.Response:
    """DELETE /v2/orders/{order_id}: 204 empty; 422 42210000 if closed; 404 if unknown."""
    order = _order_or_404(request.app[STATE_KEY], request.match_info["order_id"])
    if not order.is_open:
        raise trading_error(422, UNPROCESSABLE, "order is not cancelable")
    cancel(order)
    return web.Response(status=204)


async def cancel_all_orders(request: web.Request) -> web.Response:
    """DELETE /v2/orders: cancels every open order; 207 with ``[{"id", "status": 200}]``."""
    results: list[Json] = []
    for order in request.app[STATE_KEY].orders.all():
        if order.is_open:
            cancel(order)
            results.append({"id": order.id, "status": 200})
    return json_response(results, status=207)


_STATUS_TIMESTAMPS = {
    "filled": "filled_at",
    "canceled": "canceled_at",
    "expired": "expired_at",
    "rejected": "failed_at",
    "replaced": "replaced_at",
}
MOVABLE_FIELDS = frozenset({"status", "filled_qty", "filled_avg_price"})


def move_order(order: StoredOrder, changes: JsonObject) -> None:
    """Apply a control-API status change; ValueError (and no change) on a bad body.

    ``filled_qty`` and ``filled_avg_price`` may be numbers or strings and are stored
    normalised; ``filled`` without ``filled_qty`` fills the whole ``qty``. The status's own
    timestamp (``filled_at``, ``canceled_at`` ...) and ``updated_at`` become now.
    """
    unknown = set(changes) - MOVABLE_FIELDS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; allowed: {sorted(MOVABLE_FIELDS)}")
    status = changes.get("status")
    if not isinstance(status, str) or status not in ORDER_STATUSES:
        raise ValueError(f"status must be one of {sorted(ORDER_STATUSES)}")
    update: JsonObject = {"status": status}
    numbers = dict(order.numbers)
    for name in ("filled_qty", "filled_avg_price"):
        if name in changes:
            value = changes[name]
            if value is None and name == "filled_avg_price":
                update[name] = None
                numbers.pop(name, None)
                continue
            try:
                numbers[name] = parse_decimal(value)
            except ValueError:
                raise ValueError(f"{name} must be a decimal number or string") from None
            update[name] = decimal_text(numbers[name])
    if status == "filled" and "filled_qty" not in update and order.wire.get("qty") is not None:
        update["filled_qty"] = order.wire["qty"]
        if "qty" in order.numbers:
            numbers["filled_qty"] = order.numbers["qty"]
    now = format_ns(time.time_ns())
    stamp = _STATUS_TIMESTAMPS.get(status)
    if stamp is not None:
        update[stamp] = now
    update["updated_at"] = now
    order.wire.update(update)
    order.numbers = numbers
