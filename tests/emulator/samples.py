"""Realistic default objects: trading-API defaults and the samples that faults fall back on.

Market data is never taken from here for a normal answer; these samples only fill the
``schema_*`` and ``malformed_json`` fault bodies when a test stored nothing for a symbol.
Values come from the examples in Alpaca's OpenAPI documents.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from .wire_json import JsonObject

# Asset ids are derived from the symbol so that a test can predict them and they survive
# a re-registration of the same symbol.
_ASSET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://alpaca-emulator.invalid/assets")


def default_clock() -> JsonObject:
    """The spec's clock example: a fixed moment during regular trading hours, ET offsets."""
    return {
        "timestamp": "2025-06-24T14:15:22-04:00",
        "is_open": True,
        "next_open": "2025-06-25T09:30:00-04:00",
        "next_close": "2025-06-24T16:00:00-04:00",
    }


def default_asset(symbol: str) -> JsonObject:
    """A tradable NASDAQ us_equity with the fields Alpaca sends for one."""
    return {
        "id": str(uuid.uuid5(_ASSET_NAMESPACE, symbol)),
        "class": "us_equity",
        "exchange": "NASDAQ",
        "symbol": symbol,
        "name": f"{symbol} Common Stock",
        "status": "active",
        "tradable": True,
        "marginable": True,
        "shortable": True,
        "easy_to_borrow": True,
        "borrow_status": "easy_to_borrow",
        "fractionable": True,
        "maintenance_margin_requirement": 30,
        "margin_requirement_long": "30",
        "margin_requirement_short": "30",
        "attributes": ["has_options"],
    }


def default_account() -> JsonObject:
    """The spec's account example: decimals as strings, a few integers, an ACTIVE status."""
    return {
        "id": "1d9eed04-be39-4e01-9b84-a48ac5bbafcf",
        "account_number": "PALPACA_123",
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "buying_power": "245432.61",
        "regt_buying_power": "245432.61",
        "daytrading_buying_power": "0",
        "effective_buying_power": "245432.61",
        "non_marginable_buying_power": "122086.5",
        "options_buying_power": "122716.305",
        "bod_dtbp": 0,
        "cash": "122086.5",
        "accrued_fees": "0",
        "portfolio_value": "123346.11",
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "created_at": "2023-01-01T18:20:20.272275Z",
        "trade_suspended_by_user": False,
        "multiplier": "2",
        "shorting_enabled": True,
        "equity": "123346.11",
        "last_equity": "122011.09751111286868",
        "long_market_value": "1259.61",
        "short_market_value": "0",
        "position_market_value": "1259.61",
        "initial_margin": "629.8",
        "maintenance_margin": "377.88",
        "last_maintenance_margin": "480.73",
        "sma": "123369.74",
        "daytrade_count": 0,
        "balance_asof": "2023-09-27",
        "crypto_tier": 1,
        "intraday_adjustments": "0",
        "pending_reg_taf_fees": "0",
        "pending_transfer_in": "0",
        "options_trading_level": 2,
        "options_approved_level": 2,
        "admin_configurations": {},
        "user_configurations": None,
    }


def sample_quote() -> JsonObject:
    """A stock quote from the spec's latest-quote example."""
    return {
        "t": "2022-08-17T10:09:34.055031265Z",
        "bx": "Q",
        "bp": Decimal("172.6"),
        "bs": 2,
        "ax": "Q",
        "ap": Decimal("172.7"),
        "as": 1,
        "c": ["R"],
        "z": "C",
    }


def sample_trade() -> JsonObject:
    """A stock trade from the spec's snapshot example."""
    return {
        "t": "2022-08-17T10:18:24.114694956Z",
        "x": "Q",
        "p": Decimal("172.61"),
        "s": 160,
        "i": 1011,
        "c": ["@", "T"],
        "z": "C",
    }


def sample_bar() -> JsonObject:
    """A minute bar from the spec's bars example."""
    return {
        "t": "2022-01-03T09:00:00Z",
        "o": Decimal("178.26"),
        "h": Decimal("178.26"),
        "l": Decimal("178.21"),
        "c": Decimal("178.21"),
        "v": 1118,
        "n": 65,
        "vw": Decimal("178.235733"),
    }


def sample_snapshot() -> JsonObject:
    """A full snapshot built from the samples above."""
    return {
        "latestTrade": sample_trade(),
        "latestQuote": sample_quote(),
        "minuteBar": sample_bar(),
        "dailyBar": sample_bar(),
        "prevDailyBar": sample_bar(),
    }
