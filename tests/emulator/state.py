"""Everything the emulator remembers: configuration, stored data, faults, calls and budgets.

One :class:`EmulatorState` lives for the life of the process; ``POST /_emulator/reset`` puts
it back to its initial condition without restarting the server.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from .config import Config
from .faults import FaultRegistry
from .occ import parse_occ
from .order_book import OrderBook
from .random_walk import MarketWalk
from .ratelimit import RateLimiter
from .samples import default_account, default_asset, default_clock, default_option_contract
from .scenario import Scenario, ScenarioSource
from .timeline import FaultTimeline
from .timestamps import rfc3339_ns, strict_date
from .wire_json import Json, JsonObject

DEFAULT_KEY_ID = "emulator-key-id"
DEFAULT_SECRET_KEY = "emulator-secret-key"

# Alpaca's latest-bar endpoints answer the latest minute bar.
LATEST_BAR_TIMEFRAME = "1Min"


@dataclass(frozen=True)
class Credentials:
    """The one API key pair the emulator accepts."""

    key_id: str
    secret_key: str


@dataclass(frozen=True)
class Stamped:
    """A bar, quote or trade exactly as stored, with its ``t`` parsed once for ordering and
    filtering."""

    t_ns: int
    wire: JsonObject


def stamped(items: list[JsonObject], what: str = "bar") -> list[Stamped]:
    """Items sorted by ``t`` (stable for equal times, so prints sharing a nanosecond keep the
    order they were given); ValueError if one lacks an RFC 3339 t."""
    parsed: list[Stamped] = []
    for index, item in enumerate(items):
        t = item.get("t")
        if not isinstance(t, str):
            raise ValueError(f"{what} {index} needs a string t (use a schema_missing_t fault)")
        parsed.append(Stamped(rfc3339_ns(t), item))
    return sorted(parsed, key=lambda item: item.t_ns)


def calendar_days(days: list[JsonObject]) -> list[JsonObject]:
    """Market days sorted by ``date``; ValueError if one has no YYYY-MM-DD ``date`` or a date
    comes twice (Alpaca's calendar has one entry per day)."""
    by_date: dict[str, JsonObject] = {}
    for index, day in enumerate(days):
        value = day.get("date")
        try:
            strict_date(value if isinstance(value, str) else "")
        except ValueError:
            raise ValueError(f"calendar day {index} needs a YYYY-MM-DD date") from None
        if str(value) in by_date:
            raise ValueError(f"calendar day {index}: {value} is listed twice")
        by_date[str(value)] = day
    return [by_date[date] for date in sorted(by_date)]


@dataclass
class RequestRecord:
    """One Alpaca-path request as ``GET /_emulator/requests`` reports it (no header values)."""

    method: str
    path: str
    query: dict[str, str]
    has_auth: bool

    def to_wire(self) -> JsonObject:
        """The record as JSON."""
        query: JsonObject = dict(self.query)
        return {"method": self.method, "path": self.path, "query": query, "has_auth": self.has_auth}


@dataclass
class MarketData:
    """Stored market data per symbol, all in wire shape."""

    quotes: dict[str, JsonObject] = field(default_factory=dict)
    trades: dict[str, JsonObject] = field(default_factory=dict)
    # Bars stored without a timeframe answer every timeframe; bars stored for one (canonical
    # name, e.g. "1Min") answer only that one, and win over the former for their symbol.
    bars: dict[str, list[Stamped]] = field(default_factory=dict)
    timeframe_bars: dict[str, dict[str, list[Stamped]]] = field(default_factory=dict)
    snapshots: dict[str, JsonObject] = field(default_factory=dict)
    # Historical quotes and trades are their own series, apart from the latest quote and trade:
    # at Alpaca too the latest values and the tick history come from different queries.
    quote_history: dict[str, list[Stamped]] = field(default_factory=dict)
    trade_history: dict[str, list[Stamped]] = field(default_factory=dict)

    def bars_for(self, timeframe: str | None) -> dict[str, list[Stamped]]:
        """Each symbol's bars for a canonical ``timeframe``: its own if stored, else untimed."""
        own = self.timeframe_bars.get(timeframe, {}) if timeframe is not None else {}
        return {**self.bars, **own}

    def latest_bar(self, symbol: str) -> JsonObject | None:
        """The newest minute bar if minute bars are stored, else the newest untimed bar."""
        bars: Sequence[Stamped] | None = self.bars_for(LATEST_BAR_TIMEFRAME).get(symbol)
        return bars[-1].wire if bars else None


@dataclass
class OptionData:
    """Stored option market data per OCC symbol, all in wire shape."""

    quotes: dict[str, JsonObject] = field(default_factory=dict)
    trades: dict[str, JsonObject] = field(default_factory=dict)
    snapshots: dict[str, JsonObject] = field(default_factory=dict)


def _check_occ(occ: str) -> None:
    parse_occ(occ)  # ValueError names a symbol that is not OCC


class EmulatorState:
    """The whole mutable state of one emulator process."""

    def __init__(
        self,
        credentials: Credentials,
        start_config: Config | None = None,
        start_scenario: ScenarioSource | None = None,
    ) -> None:
        """``start_config`` and ``start_scenario`` are what :meth:`reset` goes back to. The
        scenario is not loaded here (its fault timeline needs the event loop): call reset()."""
        self.credentials = credentials
        self.start_config = start_config or Config()
        self.start_scenario = start_scenario
        self.config = self.start_config
        self.market = MarketData()
        self.options = OptionData()
        self.assets: dict[str, JsonObject] = {}
        self.option_contracts: dict[str, JsonObject] = {}
        self.positions: dict[str, JsonObject] = {}
        self.orders = OrderBook()
        # Nothing is assumed about holidays or early closes: the calendar is what a test stored.
        self.calendar: list[JsonObject] = []
        self.clock: JsonObject = default_clock()
        self.account: JsonObject = default_account()
        self.faults = FaultRegistry()
        self.timeline = FaultTimeline()
        self.walk = MarketWalk()
        self.rate_limiter = RateLimiter(self.config.rate_limit_per_minute)
        self.call_counts: Counter[str] = Counter()
        self.requests: list[RequestRecord] = []
        # Called at every reset (before a scenario loads) and with every loaded scenario: the
        # streams (streams.py) end their connections and run the scenario's timed pushes.
        self.on_clean: list[Callable[[], None]] = []
        self.on_load: list[Callable[[Scenario], None]] = []

    def reset(self) -> None:
        """Back to the state of a freshly started process (credentials are kept), with the
        start scenario, if any, loaded again: its relative times and fault timeline start now."""
        self._clean()
        if self.start_scenario is not None:
            self._load(self.start_scenario.resolve(time.time_ns()))

    def load_scenario(self, source: ScenarioSource) -> None:
        """A clean emulator (start configuration, no data) holding ``source`` as of now."""
        scenario = source.resolve(time.time_ns())  # checked before anything is cleared
        self._clean()
        self._load(scenario)

    def _clean(self) -> None:
        self.config = self.start_config
        self.market = MarketData()
        self.options = OptionData()
        self.assets = {}
        self.option_contracts = {}
        self.positions = {}
        self.orders = OrderBook()
        self.calendar = []
        self.clock = default_clock()
        self.account = default_account()
        self.timeline.cancel()
        self.faults.clear()
        self.walk.clear()
        self.rate_limiter.reconfigure(self.config.rate_limit_per_minute)
        self.clear_calls()
        for callback in self.on_clean:
            callback()

    def _load(self, scenario: Scenario) -> None:
        """Store a resolved scenario over a clean state and start its fault timeline."""
        self.configure(scenario.config)
        self.clock = scenario.clock or self.clock
        self.set_calendar(list(scenario.calendar))
        self.account = {**self.account, **scenario.account}
        for symbol, fields in scenario.assets.items():  # first: data keeps their fields
            self.set_asset(symbol, fields)
        for symbol, quote in scenario.quotes.items():
            self.set_quote(symbol, quote)
        for symbol, trade in scenario.trades.items():
            self.set_trade(symbol, trade)
        for symbol, by_timeframe in scenario.bars.items():
            for timeframe, bars in by_timeframe.items():
                self.set_bars(symbol, bars, timeframe)
        for symbol, snapshot in scenario.snapshots.items():
            self.set_snapshot(symbol, snapshot)
        for symbol, quotes in scenario.quote_history.items():
            self.set_quote_history(symbol, quotes)
        for symbol, trades in scenario.trade_history.items():
            self.set_trade_history(symbol, trades)
        for occ, fields in scenario.option_contracts.items():
            self.set_option_contract(occ, fields)
        for occ, quote in scenario.option_quotes.items():
            self.set_option_quote(occ, quote)
        for occ, trade in scenario.option_trades.items():
            self.set_option_trade(occ, trade)
        for occ, snapshot in scenario.option_snapshots.items():
            self.set_option_snapshot(occ, snapshot)
        for symbol, position in scenario.positions.items():
            self.set_position(symbol, position)
        self.timeline.start(self.faults, scenario.faults)
        for callback in self.on_load:
            callback(scenario)

    def configure(self, changes: Mapping[str, Json]) -> None:
        """Merge configuration changes; a new rate limit starts fresh budgets."""
        self.config = self.config.merged(changes)
        if "rate_limit_per_minute" in changes:
            self.rate_limiter.reconfigure(self.config.rate_limit_per_minute)
        if "random_walk" in changes:
            self.walk.clear()  # a walk switched on (again) starts from the stored data

    def record_call(self, record: RequestRecord) -> None:
        """Count and log one Alpaca-path request."""
        self.call_counts[record.path] += 1
        self.requests.append(record)

    def clear_calls(self) -> None:
        """Forget call counts and the request log."""
        self.call_counts.clear()
        self.requests.clear()

    def set_quote(self, symbol: str, quote: JsonObject | None) -> None:
        """Store (or with None remove) the latest quote; a random walk re-anchors on it."""
        self._put(self.market.quotes, symbol, quote)
        self.walk.forget(symbol)

    def set_trade(self, symbol: str, trade: JsonObject | None) -> None:
        """Store (or with None remove) the latest trade; a random walk re-anchors on it."""
        self._put(self.market.trades, symbol, trade)
        self.walk.forget(symbol)

    def set_snapshot(self, symbol: str, snapshot: JsonObject | None) -> None:
        """Store (or with None remove) the snapshot."""
        self._put(self.market.snapshots, symbol, snapshot)

    def set_bars(
        self, symbol: str, bars: list[JsonObject] | None, timeframe: str | None = None
    ) -> None:
        """Replace (or with None remove) the bars, for every timeframe or one canonical one.

        ValueError if a bar has no usable ``t``.
        """
        store = (
            self.market.bars
            if timeframe is None
            else self.market.timeframe_bars.setdefault(timeframe, {})
        )
        if bars is None:
            store.pop(symbol, None)
            return
        store[symbol] = stamped(bars)
        self.register_asset(symbol)

    def set_quote_history(self, symbol: str, quotes: list[JsonObject] | None) -> None:
        """Replace (or with None remove) the historical quotes; ValueError if one has no t."""
        self._put_series(self.market.quote_history, symbol, quotes, "quote")

    def set_trade_history(self, symbol: str, trades: list[JsonObject] | None) -> None:
        """Replace (or with None remove) the historical trades; ValueError if one has no t."""
        self._put_series(self.market.trade_history, symbol, trades, "trade")

    def set_calendar(self, days: list[JsonObject]) -> None:
        """The market days GET /v2/calendar answers (sorted by date); ValueError if a day has
        no usable ``date``."""
        self.calendar = calendar_days(days)

    def set_asset(self, symbol: str, fields: JsonObject | None) -> None:
        """Register the asset as realistic defaults overlaid with ``fields``; None removes it."""
        if fields is None:
            self.assets.pop(symbol, None)
        else:
            self.assets[symbol] = {**default_asset(symbol), **fields}

    def register_asset(self, symbol: str) -> None:
        """Make the symbol a known asset, keeping any fields a test already set."""
        if symbol not in self.assets:
            self.assets[symbol] = default_asset(symbol)

    def find_asset(self, symbol_or_id: str) -> JsonObject | None:
        """Look an asset up by exact symbol, or by id (UUIDs compare case-insensitively)."""
        return _find(self.assets, symbol_or_id, "id")

    def set_option_quote(self, occ: str, quote: JsonObject | None) -> None:
        """Store (or with None remove) an option's latest quote; ValueError if not OCC."""
        _check_occ(occ)
        _put_or_pop(self.options.quotes, occ, quote)

    def set_option_trade(self, occ: str, trade: JsonObject | None) -> None:
        """Store (or with None remove) an option's latest trade; ValueError if not OCC."""
        _check_occ(occ)
        _put_or_pop(self.options.trades, occ, trade)

    def set_option_snapshot(self, occ: str, snapshot: JsonObject | None) -> None:
        """Store (or with None remove) an option snapshot; ValueError if not OCC."""
        _check_occ(occ)
        _put_or_pop(self.options.snapshots, occ, snapshot)

    def set_option_contract(self, occ: str, fields: JsonObject | None) -> None:
        """Register the contract as OCC-derived defaults overlaid with ``fields``; None removes.

        ValueError if ``occ`` is not an OCC symbol.
        """
        contract = default_option_contract(occ)
        if fields is None:
            self.option_contracts.pop(occ, None)
        else:
            self.option_contracts[occ] = {**contract, **fields}

    def find_option_contract(self, symbol_or_id: str) -> JsonObject | None:
        """A stored contract by OCC symbol or by id (case-insensitive UUID)."""
        return _find(self.option_contracts, symbol_or_id, "id")

    def set_position(self, symbol: str, position: JsonObject | None) -> None:
        """Store (or with None remove) the open position in ``symbol``, verbatim."""
        _put_or_pop(self.positions, symbol, position)

    def find_position(self, symbol_or_asset_id: str) -> JsonObject | None:
        """The open position by symbol or by its ``asset_id``."""
        return _find(self.positions, symbol_or_asset_id, "asset_id")

    def _put_series(
        self,
        store: dict[str, list[Stamped]],
        symbol: str,
        items: list[JsonObject] | None,
        what: str,
    ) -> None:
        if items is None:
            store.pop(symbol, None)
            return
        store[symbol] = stamped(items, what)
        self.register_asset(symbol)

    def _put(self, store: dict[str, JsonObject], symbol: str, value: JsonObject | None) -> None:
        if value is None:
            store.pop(symbol, None)
        else:
            store[symbol] = value
            self.register_asset(symbol)


def _put_or_pop(store: dict[str, JsonObject], key: str, value: JsonObject | None) -> None:
    if value is None:
        store.pop(key, None)
    else:
        store[key] = value


def _find(store: dict[str, JsonObject], key_or_id: str, id_field: str) -> JsonObject | None:
    found = store.get(key_or_id)
    if found is not None:
        return found
    wanted = key_or_id.lower()
    for candidate in store.values():
        value = candidate.get(id_field)
        if isinstance(value, str) and value.lower() == wanted:
            return candidate
    return None


STATE_KEY = web.AppKey("emulator_state", EmulatorState)
