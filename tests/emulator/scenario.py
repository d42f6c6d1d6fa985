"""Scenarios: a whole emulated market in one YAML or JSON file, checked before anything is stored.

``python -m tests.emulator --scenario FILE`` loads one at start (and again on every
``POST /_emulator/reset``); ``POST /_emulator/scenario`` loads one into a running emulator. Both
refuse a scenario with a named place and reason (``stocks.quotes.AAPL: the quote has no t``).
Loading starts from a clean emulator: the scenario is the whole market. The format is described
in ``tests/emulator/README.md`` and shown by ``tests/emulator/scenarios/example.yaml``.

A :class:`ScenarioSource` is a checked document. Its times may be relative to the moment it is
loaded (``t: "-2s"``), so :meth:`ScenarioSource.resolve` turns it into a :class:`Scenario` for
one moment; resolving again (a reset) restamps the data and restarts the fault timeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from .config import Config
from .faults import parse_fault
from .occ import parse_occ
from .params import canonical_timeframe, is_valid_symbol
from .samples import asset_id_of, default_option_contract
from .scenario_shapes import (
    ACCOUNT,
    ASSET,
    BAR,
    CALENDAR_DAY,
    CLOCK,
    OPTION_CONTRACT,
    OPTION_QUOTE,
    OPTION_SNAPSHOT,
    OPTION_TRADE,
    POSITION,
    QUOTE,
    SNAPSHOT,
    TRADE,
    ScenarioError,
    Shape,
    check_object,
)
from .scenario_text import ScenarioSyntaxError, parse_scenario_text, read_scenario_file
from .stream_scenario import TimedPush, timed_pushes
from .wire_json import Json, JsonObject

__all__ = ["REFUSED_SCENARIO_PREFIX", "Scenario", "ScenarioError", "ScenarioSource", "TimedFault"]

# How `python -m tests.emulator --scenario FILE` starts its stderr line when it refuses a file.
REFUSED_SCENARIO_PREFIX = "emulator: refusing the scenario "

SECTIONS = ("description", "config", "clock", "calendar", "account", "stocks", "options",
            "positions", "faults", "streams")  # fmt: skip
STOCK_SECTIONS = ("assets", "quotes", "trades", "bars", "snapshots", "quotes_history",
                  "trades_history")  # fmt: skip
OPTION_SECTIONS = ("contracts", "quotes", "trades", "snapshots")
FAULT_FIELDS = ("at_s", "until_s", "path", "kind", "count", "delay_ms", "retry_after_s")
# Bars keyed by timeframe; None holds the bars that answer every timeframe.
SymbolBars = dict[str | None, list[JsonObject]]


@dataclass(frozen=True)
class TimedFault:
    """A control-API fault body that starts ``at_s`` seconds after loading and, with
    ``until_s``, is removed then (requests it holds are released)."""

    at_s: Decimal
    until_s: Decimal | None
    body: JsonObject


@dataclass(frozen=True)
class Scenario:
    """A scenario for one load moment: wire objects with every time resolved."""

    config: JsonObject = field(default_factory=dict)
    clock: JsonObject | None = None
    calendar: tuple[JsonObject, ...] = ()
    account: JsonObject = field(default_factory=dict)
    assets: dict[str, JsonObject] = field(default_factory=dict)
    quotes: dict[str, JsonObject] = field(default_factory=dict)
    trades: dict[str, JsonObject] = field(default_factory=dict)
    bars: dict[str, SymbolBars] = field(default_factory=dict)
    snapshots: dict[str, JsonObject] = field(default_factory=dict)
    quote_history: dict[str, list[JsonObject]] = field(default_factory=dict)
    trade_history: dict[str, list[JsonObject]] = field(default_factory=dict)
    option_contracts: dict[str, JsonObject] = field(default_factory=dict)
    option_quotes: dict[str, JsonObject] = field(default_factory=dict)
    option_trades: dict[str, JsonObject] = field(default_factory=dict)
    option_snapshots: dict[str, JsonObject] = field(default_factory=dict)
    positions: dict[str, JsonObject] = field(default_factory=dict)
    faults: tuple[TimedFault, ...] = ()
    streams: tuple[TimedPush, ...] = ()


@dataclass(frozen=True)
class ScenarioSource:
    """A scenario document that resolves without error; ``name`` says where it came from."""

    name: str
    document: JsonObject

    @classmethod
    def from_document(cls, document: Json, name: str) -> ScenarioSource:
        """Check ``document``; ScenarioError (prefixed with ``name``) if it is refused."""
        if not isinstance(document, dict):
            raise ScenarioError(name, "a scenario must be an object (a YAML mapping)")
        source = cls(name, document)
        try:
            source.resolve(time.time_ns())
        except ScenarioError as exc:
            raise ScenarioError(f"{name}: {exc.where}" if exc.where else name, exc.reason) from None
        return source

    @classmethod
    def from_text(cls, text: str, *, is_yaml: bool, name: str) -> ScenarioSource:
        """Parse and check JSON or YAML text."""
        try:
            document = parse_scenario_text(text, is_yaml=is_yaml)
        except ScenarioSyntaxError as exc:
            raise ScenarioError(name, str(exc)) from None
        return cls.from_document(document, name)

    @classmethod
    def from_file(cls, path: Path) -> ScenarioSource:
        """Read and check a ``.yaml``/``.yml`` (YAML) or other (JSON) file."""
        try:
            document = read_scenario_file(path)
        except ScenarioSyntaxError as exc:
            raise ScenarioError(str(path), str(exc)) from None
        return cls.from_document(document, str(path))

    def resolve(self, now_ns: int) -> Scenario:
        """The scenario as loaded at ``now_ns``; ScenarioError names the first problem."""
        doc = self.document
        _refuse_unknown(doc, SECTIONS, "", "section")
        if "description" in doc and not isinstance(doc["description"], str):
            raise ScenarioError("description", "must be a string")
        stocks = _section(doc, "stocks", STOCK_SECTIONS)
        options = _section(doc, "options", OPTION_SECTIONS)
        assets = _assets(stocks.get("assets"), "stocks.assets", now_ns)
        option_contracts = _contracts(options.get("contracts"), "options.contracts", now_ns)
        return Scenario(
            config=_config(doc.get("config")),
            clock=None
            if "clock" not in doc
            else check_object(doc["clock"], CLOCK, "clock", now_ns),
            calendar=_calendar(doc.get("calendar", []), now_ns),
            account=check_object(doc.get("account", {}), ACCOUNT, "account", now_ns),
            assets=assets,
            quotes=_stock_objects(stocks, "quotes", QUOTE, now_ns),
            trades=_stock_objects(stocks, "trades", TRADE, now_ns),
            bars=_bars(stocks.get("bars", {}), "stocks.bars", now_ns),
            snapshots=_stock_objects(stocks, "snapshots", SNAPSHOT, now_ns),
            quote_history=_stock_series(stocks, "quotes_history", QUOTE, now_ns),
            trade_history=_stock_series(stocks, "trades_history", TRADE, now_ns),
            option_contracts=option_contracts,
            option_quotes=_option_objects(options, "quotes", OPTION_QUOTE, now_ns),
            option_trades=_option_objects(options, "trades", OPTION_TRADE, now_ns),
            option_snapshots=_option_objects(options, "snapshots", OPTION_SNAPSHOT, now_ns),
            positions=_positions(doc.get("positions", {}), assets, now_ns),
            faults=_faults(doc.get("faults", [])),
            streams=timed_pushes(doc.get("streams", []), now_ns),
        )


def _refuse_unknown(value: JsonObject, known: tuple[str, ...], where: str, what: str) -> None:
    for key in value:
        if key not in known:
            place = f"{where}.{key}" if where else key
            raise ScenarioError(place, f"unknown {what}; expected one of {', '.join(known)}")


def _mapping(value: Json, where: str, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise ScenarioError(where, f"must be {what}")
    return value


def _section(doc: JsonObject, name: str, known: tuple[str, ...]) -> JsonObject:
    section = _mapping(doc.get(name, {}), name, f"an object with {', '.join(known)}")
    _refuse_unknown(section, known, name, f"{name} section")
    return section


def _config(value: Json) -> JsonObject:
    changes = _mapping(value if value is not None else {}, "config", "an object")
    try:
        Config().merged(changes)
    except ValueError as exc:
        raise ScenarioError("config", str(exc)) from None
    return changes


def _stock_symbol(symbol: str, where: str) -> str:
    if not is_valid_symbol(symbol):
        raise ScenarioError(where, "not a stock symbol Alpaca accepts (upper case, e.g. BRK.B)")
    return symbol


def _occ_symbol(symbol: str, where: str) -> str:
    try:
        parse_occ(symbol)
    except ValueError as exc:
        raise ScenarioError(where, str(exc)) from None
    return symbol


def _stock_objects(
    section: JsonObject, name: str, shape: Shape, now_ns: int
) -> dict[str, JsonObject]:
    where = f"stocks.{name}"
    values = _mapping(section.get(name, {}), where, f"an object keyed by symbol ({shape.name}s)")
    return {
        _stock_symbol(symbol, f"{where}.{symbol}"): check_object(
            item, shape, f"{where}.{symbol}", now_ns
        )
        for symbol, item in values.items()
    }


def _stock_series(
    section: JsonObject, name: str, shape: Shape, now_ns: int
) -> dict[str, list[JsonObject]]:
    """Per symbol, a list of wire objects (historical quotes or trades), each checked."""
    where = f"stocks.{name}"
    values = _mapping(section.get(name, {}), where, f"an object keyed by symbol (lists of "
                      f"{shape.name}s)")  # fmt: skip
    series: dict[str, list[JsonObject]] = {}
    for symbol, items in values.items():
        place = f"{where}.{symbol}"
        _stock_symbol(symbol, place)
        if not isinstance(items, list):
            raise ScenarioError(place, f"must be a list of {shape.name}s")
        series[symbol] = [
            check_object(item, shape, f"{place}[{n}]", now_ns) for n, item in enumerate(items)
        ]
    return series


def _calendar(value: Json, now_ns: int) -> tuple[JsonObject, ...]:
    """Market days, each with every field Alpaca's calendar day requires, one per date."""
    if not isinstance(value, list):
        raise ScenarioError("calendar", "must be a list of market days {date, open, close, ...}")
    days: dict[Json, JsonObject] = {}
    for n, item in enumerate(value):
        day = check_object(item, CALENDAR_DAY, f"calendar[{n}]", now_ns)
        if day["date"] in days:
            raise ScenarioError(f"calendar[{n}].date", f"{day['date']} is listed twice")
        days[day["date"]] = day
    return tuple(days.values())


def _option_objects(
    section: JsonObject, name: str, shape: Shape, now_ns: int
) -> dict[str, JsonObject]:
    where = f"options.{name}"
    values = _mapping(
        section.get(name, {}), where, f"an object keyed by OCC symbol ({shape.name}s)"
    )
    return {
        _occ_symbol(occ, f"{where}.{occ}"): check_object(item, shape, f"{where}.{occ}", now_ns)
        for occ, item in values.items()
    }


def _assets(value: Json, where: str, now_ns: int) -> dict[str, JsonObject]:
    """A list of symbols (default fields) or a map symbol -> fields over the defaults."""
    if value is None:
        return {}
    if isinstance(value, list):
        named: JsonObject = {}
        for index, symbol in enumerate(value):
            if not isinstance(symbol, str):
                raise ScenarioError(f"{where}[{index}]", "must be a symbol")
            named[symbol] = {}
        value = named
    items = _mapping(value, where, "a list of symbols or an object keyed by symbol")
    assets: dict[str, JsonObject] = {}
    for symbol, fields in items.items():
        place = f"{where}.{symbol}"
        _stock_symbol(symbol, place)
        assets[symbol] = _same_symbol(
            check_object(fields or {}, ASSET, place, now_ns), symbol, place
        )
    return assets


def _contracts(value: Json, where: str, now_ns: int) -> dict[str, JsonObject]:
    """A list of OCC symbols (defaults derived from them) or a map OCC -> fields."""
    if value is None:
        return {}
    if isinstance(value, list):
        value = {str(occ): {} for occ in value}
    items = _mapping(value, where, "a list of OCC symbols or an object keyed by OCC symbol")
    contracts: dict[str, JsonObject] = {}
    for occ, fields in items.items():
        place = f"{where}.{occ}"
        _occ_symbol(occ, place)
        checked = check_object(fields or {}, OPTION_CONTRACT, place, now_ns)
        contracts[occ] = _same_symbol(checked, occ, place)
    return contracts


def _same_symbol(fields: JsonObject, symbol: str, where: str) -> JsonObject:
    if "symbol" in fields and fields["symbol"] != symbol:
        raise ScenarioError(f"{where}.symbol", f"must be {symbol!r}, the key it is stored under")
    return fields


def _bars(value: Json, where: str, now_ns: int) -> dict[str, SymbolBars]:
    """Per symbol: a list (answers every timeframe) or a map timeframe -> list."""
    bars: dict[str, SymbolBars] = {}
    for symbol, series in _mapping(value, where, "an object keyed by symbol").items():
        place = f"{where}.{symbol}"
        _stock_symbol(symbol, place)
        if isinstance(series, list):
            bars[symbol] = {None: _bar_list(series, place, now_ns)}
            continue
        by_timeframe: SymbolBars = {}
        for timeframe, items in _mapping(series, place, "a list of bars or an object keyed by "
                                         "timeframe (1Min, 1Day ...)").items():  # fmt: skip
            try:
                canonical = canonical_timeframe(timeframe)
            except ValueError as exc:
                raise ScenarioError(f"{place}.{timeframe}", str(exc)) from None
            by_timeframe[canonical] = _bar_list(items, f"{place}.{timeframe}", now_ns)
        bars[symbol] = by_timeframe
    return bars


def _bar_list(value: Json, where: str, now_ns: int) -> list[JsonObject]:
    if not isinstance(value, list):
        raise ScenarioError(where, "must be a list of bars")
    return [check_object(bar, BAR, f"{where}[{n}]", now_ns) for n, bar in enumerate(value)]


def _positions(value: Json, assets: dict[str, JsonObject], now_ns: int) -> dict[str, JsonObject]:
    """Positions keyed by stock or OCC symbol; the identity fields default from the symbol."""
    positions: dict[str, JsonObject] = {}
    for symbol, fields in _mapping(value, "positions", "an object keyed by symbol").items():
        place = f"positions.{symbol}"
        if not isinstance(fields, dict):
            raise ScenarioError(place, "a position must be an object")
        identity = _position_identity(symbol, assets.get(symbol, {}), place)
        checked = check_object({**identity, **fields}, POSITION, place, now_ns)
        positions[symbol] = _same_symbol(checked, symbol, place)
    return positions


def _position_identity(symbol: str, asset: JsonObject, where: str) -> JsonObject:
    if is_valid_symbol(symbol):
        return {"asset_id": asset.get("id", asset_id_of(symbol)), "symbol": symbol,
                "exchange": asset.get("exchange", "NASDAQ"), "asset_class": "us_equity",
                "asset_marginable": asset.get("marginable", True)}  # fmt: skip
    contract = default_option_contract(_occ_symbol(symbol, where))
    return {"asset_id": contract["id"], "symbol": symbol, "exchange": "",
            "asset_class": "us_option", "asset_marginable": False}  # fmt: skip


def _faults(value: Json) -> tuple[TimedFault, ...]:
    if not isinstance(value, list):
        raise ScenarioError("faults", "must be a list of {at_s, path, kind, ...}")
    return tuple(_fault(item, f"faults[{n}]") for n, item in enumerate(value))


def _fault(value: Json, where: str) -> TimedFault:
    item = _mapping(value, where, "an object with at_s, path and kind")
    _refuse_unknown(item, FAULT_FIELDS, where, "fault field")
    at_s = _seconds(item.get("at_s"), f"{where}.at_s")
    until_s = None if item.get("until_s") is None else _seconds(item["until_s"], f"{where}.until_s")
    if until_s is not None and until_s <= at_s:
        raise ScenarioError(f"{where}.until_s", "must be later than at_s")
    body = {key: item[key] for key in FAULT_FIELDS[2:] if key in item}
    try:
        parse_fault(body, "check")
    except ValueError as exc:
        raise ScenarioError(where, str(exc)) from None
    return TimedFault(at_s, until_s, body)


def _seconds(value: Json, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or value < 0:
        raise ScenarioError(where, "must be a number of seconds >= 0 (since the scenario loaded)")
    return Decimal(value)
