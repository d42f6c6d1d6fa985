"""The wire objects a scenario may hold, field by field, as Alpaca's OpenAPI documents give them.

A scenario's quotes, trades, bars, snapshots and option data must carry every field Alpaca's
schema requires, with its JSON type, and nothing else: the emulator answers them verbatim, so a
scenario that loads gives answers that validate (faults break answers on purpose, on a timeline).
Trading objects (account, assets, contracts, positions) are merged over the emulator's realistic
defaults, so only their field names and types are checked. ``tests/contract`` holds these tables
equal to the documents (``test_scenario_shapes_are_alpacas_schemas``).

Times (``Kind.TIME``) are RFC 3339, or relative to the moment the scenario is loaded: ``now``,
``-2s``, ``+1h30m``, ``-250ms`` (units d, h, m, s, ms, us, ns). They are written out as RFC 3339
UTC with nanoseconds, as Alpaca stamps market data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from .timestamps import format_ns, rfc3339_ns, strict_date
from .wire_json import Json, JsonObject

_RELATIVE = re.compile(r"[+-](?:\d+(?:ms|us|ns|d|h|m|s))+")
_RELATIVE_PART = re.compile(r"(\d+)(ms|us|ns|d|h|m|s)")
_NS_PER_UNIT = {"d": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9,
                "ms": 10**6, "us": 10**3, "ns": 1}  # fmt: skip


class ScenarioError(ValueError):
    """A scenario the emulator refuses: ``where`` in the document, and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where = where
        self.reason = reason


class Kind(StrEnum):
    """The JSON value a field holds."""

    NUMBER = "a number"
    INTEGER = "a whole number >= 0"
    STRING = "a string"
    STRINGS = "a list of strings"
    BOOL = "true or false"
    TIME = 'an RFC 3339 time or a relative one ("now", "-2s", "+1h30m")'
    DATE = "a YYYY-MM-DD date"
    DECIMAL = 'a decimal number as a string (quoted, e.g. "100.5")'
    UUID = "a UUID string"
    OBJECT = "an object"
    HOUR_MINUTE = 'an HH:MM time of day as a string ("09:30")'
    HOUR_MINUTE_COMPACT = 'an HHMM time of day as a string ("0400")'


@dataclass(frozen=True)
class Field:
    """One field: its kind (or a nested shape), allowed values, and whether null is allowed."""

    kind: Kind | Shape
    enum: tuple[Json, ...] = ()
    nullable: bool = False
    many: bool = False  # a list of `kind` (deliverables)


@dataclass(frozen=True)
class Shape:
    """An object's fields; ``required`` must all be present."""

    name: str
    fields: Mapping[str, Field]
    required: frozenset[str] = field(default_factory=frozenset)


def _shape(name: str, fields: Mapping[str, Kind | Field], *, required: str = "") -> Shape:
    typed = {key: kind if isinstance(kind, Field) else Field(kind) for key, kind in fields.items()}
    needed = frozenset(typed) if required == "all" else frozenset(required.split())
    return Shape(name, typed, needed)


# Short names keep the tables one line per few fields, as Alpaca's documents list them.
N, U, S, T, D, B = Kind.NUMBER, Kind.INTEGER, Kind.STRING, Kind.TIME, Kind.DECIMAL, Kind.BOOL
TAPES = ("A", "B", "C", "N", "O")

# --- market data (required: everything Alpaca's schema requires) -------------------------------
QUOTE = _shape("quote", {"t": T, "bx": S, "bp": N, "bs": U, "ax": S, "ap": N, "as": U,
                         "c": Kind.STRINGS, "z": Field(S, TAPES)}, required="all")  # fmt: skip
TRADE = _shape("trade", {"t": T, "x": S, "p": N, "s": U, "i": U, "c": Kind.STRINGS,
                         "z": Field(S, TAPES), "u": S}, required="t x p s i c z")  # fmt: skip
BAR = _shape("bar", {"t": T, "o": N, "h": N, "l": N, "c": N, "v": U, "n": U, "vw": N},
             required="all")  # fmt: skip
SNAPSHOT = _shape("snapshot", {"latestTrade": Field(TRADE), "latestQuote": Field(QUOTE),
                               "minuteBar": Field(BAR), "dailyBar": Field(BAR),
                               "prevDailyBar": Field(BAR)})  # fmt: skip
OPTION_QUOTE = _shape("option quote", {"t": T, "bx": S, "bp": N, "bs": U, "ax": S, "ap": N,
                                       "as": U, "c": S}, required="all")  # fmt: skip
OPTION_TRADE = _shape("option trade", {"t": T, "x": S, "p": N, "s": U, "c": S}, required="all")
GREEKS = _shape("greeks", {"delta": N, "gamma": N, "rho": N, "theta": N, "vega": N},
                required="all")  # fmt: skip
OPTION_SNAPSHOT = _shape("option snapshot", {
    "latestQuote": Field(OPTION_QUOTE), "latestTrade": Field(OPTION_TRADE),
    "minuteBar": Field(BAR), "dailyBar": Field(BAR), "prevDailyBar": Field(BAR),
    "greeks": Field(GREEKS), "impliedVolatility": N,
})  # fmt: skip

# --- trading objects ---------------------------------------------------------------------------
_ACCOUNT_STATUSES = ("INACTIVE", "PAPER_ONLY", "ONBOARDING", "SUBMISSION_FAILED", "SUBMITTED",
                     "ACCOUNT_UPDATED", "APPROVAL_PENDING", "ACTIVE", "REJECTED",
                     "ACCOUNT_CLOSED", "APPROVED", "ACCOUNT_CLOSED_PENDING", "ACTION_REQUIRED",
                     "LIMITED")  # fmt: skip
_LEVELS = (0, 1, 2, 3)
_EXCHANGES = ("AMEX", "ARCA", "BATS", "NYSE", "NASDAQ", "NYSEARCA", "OTC")
_ASSET_CLASSES = ("us_equity", "us_option", "crypto", "ipo")
_ATTRIBUTES = ("ptp_no_exception", "ptp_with_exception", "ipo", "has_options",
               "options_late_close", "fractional_eh_enabled", "overnight_tradable",
               "overnight_halted")  # fmt: skip

CLOCK = _shape("clock", {"timestamp": T, "is_open": B, "next_open": T, "next_close": T},
               required="all")  # fmt: skip
CALENDAR_DAY = _shape("calendar day", {
    "date": Kind.DATE, "open": Kind.HOUR_MINUTE, "close": Kind.HOUR_MINUTE,
    "session_open": Kind.HOUR_MINUTE_COMPACT, "session_close": Kind.HOUR_MINUTE_COMPACT,
    "settlement_date": Kind.DATE,
}, required="all")  # fmt: skip
# Every field Alpaca documents, plus the ones its answers carry beyond the document (the
# emulator's default account has them: effective_buying_power, bod_dtbp, crypto_tier, ...).
ACCOUNT = _shape("account", {
    "id": Kind.UUID, "account_number": S, "status": Field(S, _ACCOUNT_STATUSES),
    "crypto_status": Field(S, _ACCOUNT_STATUSES), "currency": S, "buying_power": D,
    "regt_buying_power": D, "daytrading_buying_power": D, "effective_buying_power": D,
    "non_marginable_buying_power": D, "options_buying_power": D, "bod_dtbp": N, "cash": D,
    "accrued_fees": D, "portfolio_value": D, "pattern_day_trader": B, "trading_blocked": B,
    "transfers_blocked": B, "account_blocked": B, "created_at": T, "trade_suspended_by_user": B,
    "multiplier": D, "shorting_enabled": B, "equity": D, "last_equity": D,
    "long_market_value": D, "short_market_value": D, "position_market_value": D,
    "initial_margin": D, "maintenance_margin": D, "last_maintenance_margin": D, "sma": D,
    "daytrade_count": U, "balance_asof": Kind.DATE, "crypto_tier": U,
    "intraday_adjustments": D, "pending_reg_taf_fees": D, "pending_transfer_in": D,
    "pending_transfer_out": D, "options_trading_level": Field(U, _LEVELS),
    "options_approved_level": Field(U, _LEVELS), "admin_configurations": Kind.OBJECT,
    "user_configurations": Field(Kind.OBJECT, nullable=True),
})  # fmt: skip
ASSET = _shape("asset", {
    "id": Kind.UUID, "class": Field(S, _ASSET_CLASSES), "exchange": Field(S, _EXCHANGES),
    "symbol": S, "name": S, "status": Field(S, ("active", "inactive")), "tradable": B,
    "marginable": B, "shortable": B, "easy_to_borrow": B, "fractionable": B,
    "borrow_status": Field(S, ("easy_to_borrow", "hard_to_borrow")),
    "cusip": Field(S, nullable=True),
    "maintenance_margin_requirement": N, "margin_requirement_long": D,
    "margin_requirement_short": D, "min_order_size": D, "min_trade_increment": D,
    "price_increment": D, "attributes": Field(Kind.STRINGS, _ATTRIBUTES),
})  # fmt: skip
DELIVERABLE = _shape("deliverable", {
    "type": Field(S, ("cash", "equity")), "symbol": S, "asset_id": Kind.UUID, "amount": D,
    "allocation_percentage": D, "settlement_type": Field(S, ("T+0", "T+1", "T+2", "T+3", "T+4",
                                                              "T+5")),
    "settlement_method": Field(S, ("BTOB", "CADF", "CAFX", "CCC")), "delayed_settlement": B,
}, required="allocation_percentage amount delayed_settlement settlement_method settlement_type "
            "symbol type")  # fmt: skip
OPTION_CONTRACT = _shape("option contract", {
    "id": Kind.UUID, "symbol": S, "name": S, "status": Field(S, ("active", "inactive")),
    "tradable": B, "expiration_date": Kind.DATE, "root_symbol": S, "underlying_symbol": S,
    "underlying_asset_id": Kind.UUID, "type": Field(S, ("call", "put")),
    "style": Field(S, ("american", "european")), "strike_price": D, "multiplier": D, "size": S,
    "open_interest": S, "open_interest_date": Kind.DATE, "close_price": S,
    "close_price_date": Kind.DATE, "deliverables": Field(DELIVERABLE, many=True),
})  # fmt: skip
POSITION = _shape("position", {
    "asset_id": Kind.UUID, "symbol": S, "exchange": Field(S, (*_EXCHANGES, "")),
    "asset_class": Field(S, _ASSET_CLASSES), "asset_marginable": B, "avg_entry_price": D,
    "qty": D, "qty_available": D, "side": Field(S, ("long", "short")), "market_value": D,
    "cost_basis": D, "unrealized_pl": D, "unrealized_plpc": D, "unrealized_intraday_pl": D,
    "unrealized_intraday_plpc": D, "current_price": D, "lastday_price": D, "change_today": D,
    "avg_entry_swap_rate": D, "swap_rate": D, "prev_swap_rate": D, "usd": Kind.OBJECT,
}, required="asset_class asset_id asset_marginable avg_entry_price change_today cost_basis "
            "current_price exchange lastday_price market_value qty side symbol unrealized_pl "
            "unrealized_intraday_pl unrealized_intraday_plpc unrealized_plpc")  # fmt: skip


# --- checking ----------------------------------------------------------------------------------


def resolve_time(value: Json, where: str, now_ns: int) -> str:
    """An RFC 3339 time as written, or a relative one as RFC 3339 UTC from ``now_ns``."""
    if not isinstance(value, str):
        raise ScenarioError(where, f"must be {Kind.TIME}, not {_show(value)}")
    if value == "now":
        return format_ns(now_ns)
    if _RELATIVE.fullmatch(value):
        offset = sum(int(n) * _NS_PER_UNIT[unit] for n, unit in _RELATIVE_PART.findall(value))
        return format_ns(now_ns + (offset if value[0] == "+" else -offset))
    try:
        rfc3339_ns(value)
    except ValueError:
        raise ScenarioError(where, f"must be {Kind.TIME}, not {value!r}") from None
    return value


def check_object(value: Json, shape: Shape, where: str, now_ns: int) -> JsonObject:
    """``value`` checked against ``shape``, its times resolved; ScenarioError otherwise."""
    if not isinstance(value, dict):
        raise ScenarioError(where, f"a {shape.name} must be an object, not {_show(value)}")
    unknown = sorted(set(value) - set(shape.fields))
    if unknown:
        raise ScenarioError(
            f"{where}.{unknown[0]}",
            f"unknown {shape.name} field; {shape.name} fields are {', '.join(shape.fields)}",
        )
    missing = [name for name in shape.fields if name in shape.required and name not in value]
    if missing:
        them = "it" if len(missing) == 1 else "them"
        raise ScenarioError(
            where, f"the {shape.name} has no {', '.join(missing)}; Alpaca's schema requires {them}"
        )
    return {name: _check_field(item, shape.fields[name], f"{where}.{name}", now_ns)
            for name, item in value.items()}  # fmt: skip


def _check_field(value: Json, spec: Field, where: str, now_ns: int) -> Json:
    if value is None and spec.nullable:
        return None
    if spec.many:
        if not isinstance(value, list):
            raise ScenarioError(where, f"must be a list, not {_show(value)}")
        single = Field(spec.kind, spec.enum)
        return [_check_field(item, single, f"{where}[{n}]", now_ns) for n, item in enumerate(value)]
    if isinstance(spec.kind, Shape):
        return check_object(value, spec.kind, where, now_ns)
    if spec.kind is Kind.TIME:
        return resolve_time(value, where, now_ns)
    if not _is_kind(value, spec.kind):
        raise ScenarioError(where, f"must be {spec.kind}, not {_show(value)}")
    items = value if spec.kind is Kind.STRINGS and isinstance(value, list) else [value]
    for item in items:
        if spec.enum and item not in spec.enum:
            allowed = ", ".join(repr(choice) for choice in spec.enum)
            raise ScenarioError(where, f"{item!r} is not one of {allowed}")
    return value


def _is_kind(value: Json, kind: Kind) -> bool:
    if kind is Kind.NUMBER:
        return isinstance(value, (int, Decimal)) and not isinstance(value, bool)
    if kind is Kind.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind is Kind.BOOL:
        return isinstance(value, bool)
    if kind is Kind.STRINGS:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind is Kind.OBJECT:
        return isinstance(value, dict)
    if not isinstance(value, str):
        return False
    return _is_text_kind(value, kind)


_TIMES_OF_DAY = {
    Kind.HOUR_MINUTE: re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d"),
    Kind.HOUR_MINUTE_COMPACT: re.compile(r"(?:[01]\d|2[0-3])[0-5]\d"),
}


def _is_text_kind(text: str, kind: Kind) -> bool:
    if kind in _TIMES_OF_DAY:
        return _TIMES_OF_DAY[kind].fullmatch(text) is not None
    try:
        if kind is Kind.DATE:
            strict_date(text)
        elif kind is Kind.UUID:
            uuid.UUID(text)
        elif kind is Kind.DECIMAL:
            return Decimal(text).is_finite()
    except (ValueError, InvalidOperation):
        return False
    return True


def _show(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    return repr(value) if isinstance(value, str) else str(value)
