"""The messages a market-data stream carries, and the channels a client subscribes to.

Tests push Alpaca wire objects (``POST /_emulator/stream/{feed}/messages`` or a scenario's
``streams``); they are checked here as strictly as a scenario's REST data: the ``T`` must be a
type the feed sends, ``S`` a symbol Alpaca would send (a stock symbol, or an OCC symbol on the
option feeds), and the other fields those of Alpaca's documented message, each with its type,
all present, nothing else. The one control message a test may push is an error,
``{"T": "error", "code": N, "msg": "..."}``, which goes to every authenticated client of the
feed. ``T`` and then ``S`` are written first, as Alpaca does (its Go client requires ``T``
first); the other fields keep the order given.
"""

from __future__ import annotations

from collections.abc import Mapping

from .occ import parse_occ
from .params import is_valid_symbol
from .scenario_shapes import (
    BAR,
    OPTION_QUOTE,
    OPTION_TRADE,
    QUOTE,
    TAPES,
    TRADE,
    Field,
    Kind,
    ScenarioError,
    Shape,
    check_object,
)
from .stream_paths import StreamFamily
from .wire_json import Json, JsonObject

ERROR_TYPE = "error"
WILDCARD = "*"


def _shape(name: str, fields: Mapping[str, Kind | Field]) -> Shape:
    """A stream message's fields besides T and S; all of them are required."""
    typed = {key: kind if isinstance(kind, Field) else Field(kind) for key, kind in fields.items()}
    return Shape(name, typed, frozenset(typed))


N, U, S, T = Kind.NUMBER, Kind.INTEGER, Kind.STRING, Kind.TIME
_TAPE = Field(S, TAPES)
# Alpaca's stream documents: stock trading statuses, LULD bands, trade corrections and
# cancel/errors; trades, quotes and bars are the REST shapes (without the REST-only "u").
STATUS = _shape("trading status", {"sc": S, "sm": S, "rc": S, "rm": S, "t": T, "z": _TAPE})
LULD = _shape("LULD", {"u": N, "d": N, "i": S, "t": T, "z": _TAPE})
CORRECTION = _shape("trade correction", {
    "x": S, "oi": U, "op": N, "os": U, "oc": Kind.STRINGS, "ci": U, "cp": N, "cs": U,
    "cc": Kind.STRINGS, "t": T, "z": _TAPE,
})  # fmt: skip
CANCEL_ERROR = _shape("trade cancel/error", {
    "i": U, "x": S, "p": N, "s": U, "a": S, "t": T, "z": _TAPE,
})  # fmt: skip
STREAM_TRADE = Shape("trade", {k: v for k, v in TRADE.fields.items() if k != "u"}, TRADE.required)

# Message type -> (shape, the channel a client subscribes to receive it).
MESSAGES: dict[StreamFamily, dict[str, tuple[Shape, str]]] = {
    StreamFamily.STOCKS: {
        "t": (STREAM_TRADE, "trades"),
        "q": (QUOTE, "quotes"),
        "b": (BAR, "bars"),
        "u": (BAR, "updatedBars"),
        "d": (BAR, "dailyBars"),
        "s": (STATUS, "statuses"),
        "l": (LULD, "lulds"),
        "c": (CORRECTION, "corrections"),
        "x": (CANCEL_ERROR, "cancelErrors"),
    },
    StreamFamily.OPTIONS: {"t": (OPTION_TRADE, "trades"), "q": (OPTION_QUOTE, "quotes")},
}
# The channels a `subscription` message lists, in Alpaca's order.
CHANNELS: dict[StreamFamily, tuple[str, ...]] = {
    StreamFamily.STOCKS: (
        *("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds"),
        *("corrections", "cancelErrors"),
    ),
    StreamFamily.OPTIONS: ("trades", "quotes"),
}
# Corrections and cancel/errors are not subscribed to: they follow the trades channel.
FOLLOW_TRADES = frozenset({"corrections", "cancelErrors"})
# Channels of Alpaca's stock streams that an option stream refuses with 410 when asked for.
STOCK_ONLY_CHANNELS = frozenset({"bars", "updatedBars", "dailyBars", "statuses", "lulds",
                                 "imbalances", "corrections", "cancelErrors"})  # fmt: skip


def valid_stream_symbol(family: StreamFamily, symbol: str) -> bool:
    """A symbol Alpaca's stream accepts for this family (``*`` is checked by the caller)."""
    if family is StreamFamily.OPTIONS:
        try:
            parse_occ(symbol)
        except ValueError:
            return False
        return True
    return is_valid_symbol(symbol)


def check_messages(value: Json, family: StreamFamily, where: str, now_ns: int) -> list[JsonObject]:
    """Pushed messages checked for a feed of ``family``, T and S first, relative times
    resolved against ``now_ns``; ScenarioError names the first problem."""
    if not isinstance(value, list) or not value:
        raise ScenarioError(where, "must be a non-empty list of stream messages ({T: ..., ...})")
    return [_check_message(item, family, f"{where}[{n}]", now_ns) for n, item in enumerate(value)]


def _check_message(value: Json, family: StreamFamily, where: str, now_ns: int) -> JsonObject:
    if not isinstance(value, dict):
        raise ScenarioError(where, "a stream message must be an object")
    kind = value.get("T")
    known = MESSAGES[family]
    if kind == ERROR_TYPE:
        return _check_error(value, where)
    if not isinstance(kind, str) or kind not in known:
        types = ", ".join([*known, ERROR_TYPE])
        raise ScenarioError(f"{where}.T", f"must be one of {types} on a {family.value} feed")
    symbol = value.get("S")
    if not isinstance(symbol, str) or not valid_stream_symbol(family, symbol):
        what = "an OCC option symbol" if family is StreamFamily.OPTIONS else "a stock symbol"
        raise ScenarioError(f"{where}.S", f"must be {what} Alpaca sends, not {symbol!r}")
    shape, _ = known[kind]
    rest = {name: item for name, item in value.items() if name not in ("T", "S")}
    return {"T": kind, "S": symbol, **check_object(rest, shape, where, now_ns)}


def _check_error(value: JsonObject, where: str) -> JsonObject:
    code, msg = value.get("code"), value.get("msg")
    if set(value) != {"T", "code", "msg"}:
        raise ScenarioError(where, "an error message has exactly T, code and msg")
    if isinstance(code, bool) or not isinstance(code, int) or not isinstance(msg, str):
        raise ScenarioError(where, "an error message needs an integer code and a string msg")
    return {"T": ERROR_TYPE, "code": code, "msg": msg}
