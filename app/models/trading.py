"""The order a client submits, checked strictly before anything is recorded or sent, and the
trading objects the gateway answers with.

Field names are Alpaca's own. Numbers may arrive as JSON numbers or strings; they travel on as
decimal strings with the same value (a float is written with its shortest exact text). The JSON
Schema of each request type is declared beside its validation, so the OpenAPI document says
exactly what is accepted."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from app.models.numbers import NumberText
from app.models.patterns import (
    DECIMAL_TEXT_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    NOT_ZERO_PATTERN,
    OCC_PATTERN,
    SYMBOL_MAX_LENGTH,
    SYMBOL_PATTERN,
    string_problem,
)

_DECIMAL = re.compile(DECIMAL_TEXT_PATTERN.strip("^$"), re.ASCII)


_NOT_A_DECIMAL = "must be a non-negative decimal number, e.g. 10 or 150.25"


def _decimal_text(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, NumberText):
        # A JSON number read as its own text (never through a float, which could round a long
        # decimal): 1e2 and 1E-05 forms are written out exactly, digit for digit, once its size
        # is known to fit (1e20000000 would be twenty million digits).
        number = Decimal(value)
        if number.adjusted() > 11 or int(number.as_tuple().exponent) < -9:
            raise ValueError(_NOT_A_DECIMAL)
        value = format(number, "f")
    elif isinstance(value, float):
        # repr is the shortest text that reads back as this float; 'f' avoids 1e-05 forms.
        value = format(Decimal(repr(value)), "f")
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError(_NOT_A_DECIMAL)
    if Decimal(value) == 0:
        raise ValueError("must be greater than zero")
    return value


def _same_value(text: str) -> str:
    """One spelling per decimal value (`400.10`, `400.1` -> `400.1`; `2.0` -> `2`)."""
    return format(Decimal(text).normalize(), "f")


# JSON Schema sees a number's value, not its text: a JSON number is accepted when its own text
# has at most 9 decimals (0.1 yes, 0.30000000000000004 no), which the description says.
DECIMAL_SCHEMA: dict[str, Any] = {
    "description": "A positive decimal: a string (at most 12 integer and 9 fraction digits) or a"
    " JSON number whose text has at most 9 decimals. Passed on as the exact decimal string.",
    "anyOf": [
        {
            "type": "string",
            "pattern": DECIMAL_TEXT_PATTERN,
            "allOf": [{"pattern": NOT_ZERO_PATTERN}],
        },
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1_000_000_000_000},
    ],
}
DecimalText = Annotated[str, BeforeValidator(_decimal_text), WithJsonSchema(DECIMAL_SCHEMA)]
# What an order names: a stock symbol or an OCC option contract (upper-cased when sent).
SYMBOL_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "maxLength": SYMBOL_MAX_LENGTH, "pattern": SYMBOL_PATTERN},
        {"type": "string", "maxLength": 21, "pattern": OCC_PATTERN},
    ],
    "description": "A stock symbol or an OCC option contract; upper-cased when sent",
}


def _order_symbol(value: str) -> str:
    problem = string_problem(SYMBOL_SCHEMA, value)
    if problem is not None:
        raise ValueError(f"not a stock symbol or an OCC option contract ({problem})")
    return value.upper()


OrderSymbol = Annotated[str, AfterValidator(_order_symbol), WithJsonSchema(SYMBOL_SCHEMA)]
PositionIntent = Literal["buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close"]
_DECIMAL_FIELDS = frozenset(
    {"qty", "notional", "limit_price", "stop_price", "trail_price", "trail_percent"} | {"ratio_qty"}
)


def _canonical(value: Any, name: str = "") -> Any:
    """Decimals by value and no null members, all the way down (legs, take_profit...)."""
    if isinstance(value, dict):
        return {k: _canonical(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if name in _DECIMAL_FIELDS and isinstance(value, str):
        return _same_value(value)
    return value


_FORBID = ConfigDict(extra="forbid", frozen=True)


class TakeProfit(BaseModel):
    model_config = _FORBID
    limit_price: DecimalText


class StopLoss(BaseModel):
    model_config = _FORBID
    stop_price: DecimalText
    limit_price: DecimalText | None = None


class Leg(BaseModel):
    model_config = _FORBID
    symbol: OrderSymbol
    ratio_qty: DecimalText
    side: Literal["buy", "sell"] | None = None
    position_intent: PositionIntent | None = None


def _set(name: str) -> dict[str, Any]:
    """JSON Schema: the member is present and not null (null is the same as absent here)."""
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _is(member: str, *values: str) -> dict[str, Any]:
    return {"required": [member], "properties": {member: {"enum": list(values)}}}


# `OrderRequest._consistent`, as JSON Schema: the two say the same, one for the document.
_CONSISTENT: list[dict[str, Any]] = [
    {"if": _is("order_class", "mleg"), "else": {"oneOf": [_set("qty"), _set("notional")]}},
    {"if": _is("type", "limit", "stop_limit"), "then": _set("limit_price")},
    {"if": _is("type", "stop", "stop_limit"), "then": _set("stop_price")},
    {
        "if": _is("type", "trailing_stop"),
        "then": {"oneOf": [_set("trail_price"), _set("trail_percent")]},
    },
]


_ORDER_EXAMPLES = [
    {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"},
    {
        "symbol": "AAPL",
        "qty": 2,
        "side": "sell",
        "type": "limit",
        "time_in_force": "gtc",
        "limit_price": "250.5",
    },
]


def _document_order(schema: dict[str, Any]) -> None:
    schema["allOf"] = _CONSISTENT
    schema["examples"] = _ORDER_EXAMPLES


class OrderRequest(BaseModel):
    """POST /v1/orders body. `client_order_id` comes from the Idempotency-Key header."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_document_order)

    symbol: OrderSymbol
    qty: DecimalText | None = None
    notional: DecimalText | None = None
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
    time_in_force: Literal["day", "gtc", "opg", "cls", "ioc", "fok"]
    limit_price: DecimalText | None = None
    stop_price: DecimalText | None = None
    trail_price: DecimalText | None = None
    trail_percent: DecimalText | None = None
    # Strict: "true" or 1 is not a boolean, as the schema says.
    extended_hours: StrictBool | None = None
    order_class: Literal["simple", "bracket", "oco", "oto", "mleg", ""] | None = None
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    legs: list[Leg] | None = Field(default=None, max_length=4)
    position_intent: PositionIntent | None = None
    client_order_id: str | None = Field(
        default=None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="If sent, the Idempotency-Key header's value (it becomes this anyway)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OrderRequest:
        if (self.qty is None) == (self.notional is None) and self.order_class != "mleg":
            raise ValueError("exactly one of qty and notional is required")
        if self.type in ("limit", "stop_limit") and self.limit_price is None:
            raise ValueError(f"limit_price is required for a {self.type} order")
        if self.type in ("stop", "stop_limit") and self.stop_price is None:
            raise ValueError(f"stop_price is required for a {self.type} order")
        if self.type == "trailing_stop" and (self.trail_price is None) == (
            self.trail_percent is None
        ):
            raise ValueError(
                "a trailing_stop order needs exactly one of trail_price, trail_percent"
            )
        return self

    def meaning(self) -> dict[str, Any]:
        """What the order asks of Alpaca, one spelling each: decimals by value, Alpaca's
        defaults applied (`extended_hours` false, `order_class` simple), the id left out.

        Two bodies with the same meaning are the same order for the Idempotency-Key.
        """
        body = self.model_dump(exclude={"client_order_id"})
        body["extended_hours"] = bool(self.extended_hours)
        body["order_class"] = self.order_class or "simple"
        meaning: dict[str, Any] = _canonical(body)
        return meaning

    def wire(self, client_order_id: str) -> dict[str, Any]:
        """The JSON sent to Alpaca: only the fields the client set, plus the client_order_id."""
        body = self.model_dump(exclude_none=True, exclude={"client_order_id"})
        body["client_order_id"] = client_order_id
        return body


# --- what the trading routes answer -----------------------------------------------------------
# Alpaca's objects as Alpaca sent them (app/alpaca/trading.py checks the members below and keeps
# every other one): typed as loosely as alpaca-py's models take them, decimals as exact strings.
_AS_SENT = ConfigDict(extra="allow")
AlpacaDecimal = Annotated[str | None, Field(default=None, description="decimal string, exact")]


class Account(BaseModel):
    model_config = _AS_SENT

    id: str
    status: str
    cash: AlpacaDecimal
    equity: AlpacaDecimal
    last_equity: AlpacaDecimal
    buying_power: AlpacaDecimal
    regt_buying_power: AlpacaDecimal
    daytrading_buying_power: AlpacaDecimal
    non_marginable_buying_power: AlpacaDecimal
    options_buying_power: AlpacaDecimal
    portfolio_value: AlpacaDecimal
    long_market_value: AlpacaDecimal
    short_market_value: AlpacaDecimal
    accrued_fees: AlpacaDecimal
    pending_transfer_in: AlpacaDecimal
    pending_transfer_out: AlpacaDecimal
    initial_margin: AlpacaDecimal
    maintenance_margin: AlpacaDecimal
    last_maintenance_margin: AlpacaDecimal
    sma: AlpacaDecimal
    multiplier: AlpacaDecimal


class Position(BaseModel):
    model_config = _AS_SENT

    symbol: str
    qty: AlpacaDecimal
    qty_available: AlpacaDecimal
    avg_entry_price: AlpacaDecimal
    market_value: AlpacaDecimal
    cost_basis: AlpacaDecimal
    unrealized_pl: AlpacaDecimal
    unrealized_plpc: AlpacaDecimal
    unrealized_intraday_pl: AlpacaDecimal
    unrealized_intraday_plpc: AlpacaDecimal
    current_price: AlpacaDecimal
    lastday_price: AlpacaDecimal
    change_today: AlpacaDecimal
    swap_rate: AlpacaDecimal
    avg_entry_swap_rate: AlpacaDecimal


class Order(BaseModel):
    """An order as Alpaca holds it. An mleg order may leave symbol, side and type out."""

    model_config = _AS_SENT

    id: str
    client_order_id: str
    status: str
    time_in_force: str
    symbol: str | None = None
    side: str | None = None
    type: str | None = None
    order_type: str | None = None
    order_class: str | None = None
    qty: AlpacaDecimal
    notional: AlpacaDecimal
    filled_qty: AlpacaDecimal
    filled_avg_price: AlpacaDecimal
    limit_price: AlpacaDecimal
    stop_price: AlpacaDecimal
    trail_price: AlpacaDecimal
    trail_percent: AlpacaDecimal
    hwm: AlpacaDecimal
    ratio_qty: AlpacaDecimal
    legs: list[Order] | None = None


class OrderAsSent(BaseModel):
    """Alpaca accepted the order but its answer broke the order schema: passed on as sent, so
    only the order id is certain (refusing it would invite a second order)."""

    model_config = _AS_SENT

    id: str = Field(min_length=1)
