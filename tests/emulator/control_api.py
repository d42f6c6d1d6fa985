"""The ``/_emulator`` control API (not Alpaca's; no auth): store data, faults, config, calls.

Bodies are parsed with :mod:`wire_json` so numbers are stored with their exact text. Every
write answers 204 (a new fault 201); a malformed body answers 400 ``{"error": ...}`` and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from .occ import parse_occ
from .orders import move_order
from .params import canonical_timeframe
from .responses import json_response
from .scenario import ScenarioError, ScenarioSource
from .state import STATE_KEY, EmulatorState, calendar_days, stamped
from .wire_json import Json, JsonObject, WireJsonError, loads

PREFIX = "/_emulator"
_STATE_KEYS = frozenset({
    "quotes", "trades", "bars", "snapshots", "assets", "option_quotes", "option_trades",
    "option_snapshots", "option_contracts", "positions", "quotes_history", "trades_history",
})  # fmt: skip
Setter = Callable[[EmulatorState, str, JsonObject | None], None]
SeriesSetter = Callable[[EmulatorState, str, list[JsonObject] | None], None]


class ControlError(Exception):
    """A control request the emulator cannot apply; rendered as 400."""


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render :class:`ControlError` as 400 ``{"error": ...}``."""
    try:
        return await handler(request)
    except ControlError as exc:
        return json_response({"error": str(exc)}, status=400)


async def _body(request: web.Request) -> Json:
    try:
        return loads(await request.text())
    except WireJsonError as exc:
        raise ControlError(str(exc)) from exc


def _object_or_null(value: Json, what: str) -> JsonObject | None:
    if value is not None and not isinstance(value, dict):
        raise ControlError(f"{what} must be a JSON object or null")
    return value


def _series_or_null(value: Json, what: str, item: str = "bar") -> list[JsonObject] | None:
    """A JSON array of wire objects that each carry an RFC 3339 ``t``, or null."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(one, dict) for one in value):
        raise ControlError(f"{what} must be a JSON array of {item} objects or null")
    items = [one for one in value if isinstance(one, dict)]
    try:
        stamped(items, item)  # checks every t before anything is stored
    except ValueError as exc:
        raise ControlError(f"{what}: {exc}") from exc
    return items


def _symbol_map(body: JsonObject, name: str) -> dict[str, Json]:
    value = body.get(name, {})
    if not isinstance(value, dict):
        raise ControlError(f"{name} must be an object keyed by symbol")
    return value


def _objects(body: JsonObject, name: str) -> dict[str, JsonObject | None]:
    return {s: _object_or_null(v, f"{name}.{s}") for s, v in _symbol_map(body, name).items()}


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def _no_content() -> web.Response:
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    """POST /_emulator/reset: data, faults, config, counters and budgets back to start."""
    _state(request).reset()
    return _no_content()


def _put_object(setter: Setter, what: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        value = _object_or_null(await _body(request), what)
        try:
            setter(_state(request), request.match_info["symbol"], value)
        except ValueError as exc:  # e.g. an option setter given a symbol that is not OCC
            raise ControlError(f"{what}: {exc}") from exc
        return _no_content()

    return handle


async def put_bars(request: web.Request) -> web.Response:
    """PUT /_emulator/bars/{symbol}[?timeframe=1Min]: a JSON array of wire bars (stored sorted
    by t) or null, for every timeframe or only the one given."""
    timeframe = request.query.get("timeframe")
    if timeframe is not None:
        try:
            timeframe = canonical_timeframe(timeframe)
        except ValueError as exc:
            raise ControlError(str(exc)) from exc
    bars = _series_or_null(await _body(request), "bars")
    _state(request).set_bars(request.match_info["symbol"], bars, timeframe)
    return _no_content()


def _put_series(
    setter: SeriesSetter, what: str, item: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        items = _series_or_null(await _body(request), what, item)
        setter(_state(request), request.match_info["symbol"], items)
        return _no_content()

    return handle


async def put_calendar(request: web.Request) -> web.Response:
    """PUT /_emulator/calendar: the market days GET /v2/calendar answers (a JSON array, each day
    with a YYYY-MM-DD ``date``; ``[]`` or null for none), stored verbatim, sorted by date."""
    value = await _body(request)
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(day, dict) for day in value):
        raise ControlError("calendar must be a JSON array of market day objects or null")
    days = [day for day in value if isinstance(day, dict)]
    try:
        calendar_days(days)  # checks every date before anything is stored
    except ValueError as exc:
        raise ControlError(f"calendar: {exc}") from exc
    _state(request).set_calendar(days)
    return _no_content()


async def put_clock(request: web.Request) -> web.Response:
    """PUT /_emulator/clock: the wire clock answered by GET /v2/clock."""
    clock = _object_or_null(await _body(request), "clock")
    if clock is None:
        raise ControlError("clock must be a JSON object")
    _state(request).clock = clock
    return _no_content()


async def post_state(request: web.Request) -> web.Response:
    """POST /_emulator/state: merge many symbols' data at once (validated before applying)."""
    body = _object_or_null(await _body(request), "state") or {}
    unknown = set(body) - _STATE_KEYS
    if unknown:
        raise ControlError(f"unknown state keys: {sorted(unknown)}")
    quotes = _objects(body, "quotes")
    trades = _objects(body, "trades")
    snaps = _objects(body, "snapshots")
    bars = {s: _series_or_null(v, f"bars.{s}") for s, v in _symbol_map(body, "bars").items()}
    quote_history = {
        s: _series_or_null(v, f"quotes_history.{s}", "quote")
        for s, v in _symbol_map(body, "quotes_history").items()
    }
    trade_history = {
        s: _series_or_null(v, f"trades_history.{s}", "trade")
        for s, v in _symbol_map(body, "trades_history").items()
    }
    assets = _assets(body.get("assets", []), "assets")
    option_quotes = _option_objects(body, "option_quotes")
    option_trades = _option_objects(body, "option_trades")
    option_snaps = _option_objects(body, "option_snapshots")
    contracts = _assets(body.get("option_contracts", []), "option_contracts")
    _check_occ_keys(contracts, "option_contracts")
    positions = _objects(body, "positions")
    state = _state(request)
    for symbol, quote in quotes.items():
        state.set_quote(symbol, quote)
    for symbol, trade in trades.items():
        state.set_trade(symbol, trade)
    for symbol, snapshot in snaps.items():
        state.set_snapshot(symbol, snapshot)
    for symbol, symbol_bars in bars.items():
        state.set_bars(symbol, symbol_bars)
    for symbol, quote_series in quote_history.items():
        state.set_quote_history(symbol, quote_series)
    for symbol, trade_series in trade_history.items():
        state.set_trade_history(symbol, trade_series)
    for symbol, fields in assets.items():
        state.set_asset(symbol, fields)
    for occ, quote in option_quotes.items():
        state.set_option_quote(occ, quote)
    for occ, trade in option_trades.items():
        state.set_option_trade(occ, trade)
    for occ, snapshot in option_snaps.items():
        state.set_option_snapshot(occ, snapshot)
    for occ, fields in contracts.items():
        state.set_option_contract(occ, fields)
    for symbol, position in positions.items():
        state.set_position(symbol, position)
    return _no_content()


def _assets(value: Json, name: str) -> dict[str, JsonObject | None]:
    """A list of symbols (default fields) or a map symbol -> fields|null."""
    if isinstance(value, list) and all(isinstance(symbol, str) for symbol in value):
        return {str(symbol): {} for symbol in value}
    if isinstance(value, dict):
        return {s: _object_or_null(v, f"{name}.{s}") for s, v in value.items()}
    raise ControlError(f"{name} must be a list of symbols or an object keyed by symbol")


def _check_occ_keys(values: dict[str, JsonObject | None], name: str) -> None:
    for occ in values:
        try:
            parse_occ(occ)
        except ValueError as exc:
            raise ControlError(f"{name}: {exc}") from exc


def _option_objects(body: JsonObject, name: str) -> dict[str, JsonObject | None]:
    values = _objects(body, name)
    _check_occ_keys(values, name)
    return values


async def post_scenario(request: web.Request) -> web.Response:
    """POST /_emulator/scenario: a clean emulator holding this scenario (JSON, or YAML when the
    Content-Type names yaml), as of now; 400 with the place and reason if it is refused."""
    is_yaml = "yaml" in request.content_type
    try:
        source = ScenarioSource.from_text(
            await request.text(), is_yaml=is_yaml, name="scenario (request body)"
        )
    except ScenarioError as exc:
        raise ControlError(str(exc)) from exc
    _state(request).load_scenario(source)
    return _no_content()


async def put_account(request: web.Request) -> web.Response:
    """PUT /_emulator/account: fields merged over the current account (GET /v2/account)."""
    fields = _object_or_null(await _body(request), "account")
    if fields is None:
        raise ControlError("account must be a JSON object")
    state = _state(request)
    state.account = {**state.account, **fields}
    return _no_content()


async def get_orders(request: web.Request) -> web.Response:
    """GET /_emulator/orders: every order the account holds, in submission order."""
    return json_response([order.wire for order in _state(request).orders.all()])


async def put_order_status(request: web.Request) -> web.Response:
    """PUT /_emulator/orders/{order_id}/status: move an order along (404 if unknown)."""
    changes = _object_or_null(await _body(request), "status change")
    if changes is None:
        raise ControlError("status change must be a JSON object")
    order = _state(request).orders.get(request.match_info["order_id"])
    if order is None:
        return json_response({"error": "no such order"}, status=404)
    try:
        move_order(order, changes)
    except ValueError as exc:
        raise ControlError(str(exc)) from exc
    return _no_content()


async def get_config(request: web.Request) -> web.Response:
    """GET /_emulator/config"""
    return json_response(_state(request).config.to_wire())


async def put_config(request: web.Request) -> web.Response:
    """PUT /_emulator/config: merge the members given (see :class:`config.Config`)."""
    changes = _object_or_null(await _body(request), "config") or {}
    try:
        _state(request).configure(changes)
    except ValueError as exc:
        raise ControlError(str(exc)) from exc
    return _no_content()


async def add_fault(request: web.Request) -> web.Response:
    """POST /_emulator/faults: append a fault; answers 201 ``{"id": ...}``."""
    try:
        fault = _state(request).faults.add_from_wire(await _body(request))
    except ValueError as exc:
        raise ControlError(str(exc)) from exc
    return json_response({"id": fault.id}, status=201)


async def list_faults(request: web.Request) -> web.Response:
    """GET /_emulator/faults: active faults in matching order, with their remaining counts."""
    return json_response([fault.to_wire() for fault in _state(request).faults.active()])


async def clear_faults(request: web.Request) -> web.Response:
    """DELETE /_emulator/faults: remove all faults and release hung requests."""
    _state(request).faults.clear()
    return _no_content()


async def delete_fault(request: web.Request) -> web.Response:
    """DELETE /_emulator/faults/{id}: remove one fault (404 if unknown)."""
    if not _state(request).faults.remove(request.match_info["fault_id"]):
        return json_response({"error": "no such fault"}, status=404)
    return _no_content()


async def get_calls(request: web.Request) -> web.Response:
    """GET /_emulator/calls: request count per Alpaca path."""
    counts: JsonObject = dict(_state(request).call_counts)
    return json_response(counts)


async def clear_calls(request: web.Request) -> web.Response:
    """DELETE /_emulator/calls: reset counts and the request log."""
    _state(request).clear_calls()
    return _no_content()


async def get_requests(request: web.Request) -> web.Response:
    """GET /_emulator/requests: every Alpaca-path request in order, without header values."""
    return json_response([record.to_wire() for record in _state(request).requests])


def add_control_routes(app: web.Application) -> None:
    """Register the control API under ``/_emulator``."""
    symbol = "{symbol:.+}"  # control paths accept any symbol text, including BRK/B
    router = app.router
    router.add_post(f"{PREFIX}/reset", reset)
    router.add_put(f"{PREFIX}/quotes/{symbol}", _put_object(EmulatorState.set_quote, "quote"))
    router.add_put(f"{PREFIX}/trades/{symbol}", _put_object(EmulatorState.set_trade, "trade"))
    router.add_put(
        f"{PREFIX}/snapshots/{symbol}", _put_object(EmulatorState.set_snapshot, "snapshot")
    )
    router.add_put(f"{PREFIX}/assets/{symbol}", _put_object(EmulatorState.set_asset, "asset"))
    router.add_put(f"{PREFIX}/bars/{symbol}", put_bars)
    history = f"{PREFIX}/history"
    router.add_put(
        f"{history}/quotes/{symbol}",
        _put_series(EmulatorState.set_quote_history, "quotes history", "quote"),
    )
    router.add_put(
        f"{history}/trades/{symbol}",
        _put_series(EmulatorState.set_trade_history, "trades history", "trade"),
    )
    router.add_put(f"{PREFIX}/calendar", put_calendar)
    options = f"{PREFIX}/options"
    router.add_put(
        f"{options}/quotes/{symbol}", _put_object(EmulatorState.set_option_quote, "option quote")
    )
    router.add_put(
        f"{options}/trades/{symbol}", _put_object(EmulatorState.set_option_trade, "option trade")
    )
    router.add_put(
        f"{options}/snapshots/{symbol}",
        _put_object(EmulatorState.set_option_snapshot, "option snapshot"),
    )
    router.add_put(
        f"{options}/contracts/{symbol}",
        _put_object(EmulatorState.set_option_contract, "option contract"),
    )
    router.add_put(f"{PREFIX}/account", put_account)
    router.add_put(
        f"{PREFIX}/positions/{symbol}", _put_object(EmulatorState.set_position, "position")
    )
    router.add_get(f"{PREFIX}/orders", get_orders)
    router.add_put(f"{PREFIX}/orders/{{order_id}}/status", put_order_status)
    router.add_put(f"{PREFIX}/clock", put_clock)
    router.add_post(f"{PREFIX}/state", post_state)
    router.add_post(f"{PREFIX}/scenario", post_scenario)
    router.add_get(f"{PREFIX}/config", get_config)
    router.add_put(f"{PREFIX}/config", put_config)
    router.add_post(f"{PREFIX}/faults", add_fault)
    router.add_get(f"{PREFIX}/faults", list_faults)
    router.add_delete(f"{PREFIX}/faults", clear_faults)
    router.add_delete(f"{PREFIX}/faults/{{fault_id}}", delete_fault)
    router.add_get(f"{PREFIX}/calls", get_calls)
    router.add_delete(f"{PREFIX}/calls", clear_calls)
    router.add_get(f"{PREFIX}/requests", get_requests)
