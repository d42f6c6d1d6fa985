"""The order a client submits, checked strictly before anything is recorded or sent.

Field names are Alpaca's own. Numbers may arrive as JSON numbers or strings; they travel on as
decimal strings with the same value (a float is written with its shortest exact text)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from app.models.numbers import NumberText

_DECIMAL = re.compile(r"\d{1,12}(\.\d{1,9})?")


def _decimal_text(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, NumberText):
        # A JSON number read as its own text (never through a float, which could round a long
        # decimal): 1e2 and 1E-05 forms are written out exactly, digit for digit.
        value = format(Decimal(value), "f")
    elif isinstance(value, float):
        # repr is the shortest text that reads back as this float; 'f' avoids 1e-05 forms.
        value = format(Decimal(repr(value)), "f")
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError("must be a non-negative decimal number, e.g. 10 or 150.25")
    if Decimal(value) == 0:
        raise ValueError("must be greater than zero")
    return value


def _same_value(text: str) -> str:
    """One spelling per decimal value (`400.10`, `400.1` -> `400.1`; `2.0` -> `2`)."""
    return format(Decimal(text).normalize(), "f")


DecimalText = Annotated[str, BeforeValidator(_decimal_text)]
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
    symbol: str
    ratio_qty: DecimalText
    side: Literal["buy", "sell"] | None = None
    position_intent: str | None = None


class OrderRequest(BaseModel):
    """POST /v1/orders body. `client_order_id` comes from the Idempotency-Key header."""

    model_config = _FORBID

    symbol: str
    qty: DecimalText | None = None
    notional: DecimalText | None = None
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
    time_in_force: Literal["day", "gtc", "opg", "cls", "ioc", "fok"]
    limit_price: DecimalText | None = None
    stop_price: DecimalText | None = None
    trail_price: DecimalText | None = None
    trail_percent: DecimalText | None = None
    extended_hours: bool | None = None
    order_class: Literal["simple", "bracket", "oco", "oto", "mleg", ""] | None = None
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    legs: list[Leg] | None = None
    position_intent: str | None = None
    client_order_id: str | None = None

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
        if self.legs is not None and len(self.legs) > 4:
            raise ValueError("at most 4 legs")
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
