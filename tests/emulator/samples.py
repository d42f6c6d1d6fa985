"""Realistic default objects: trading-API defaults and the samples that faults fall back on.

Market data is never taken from here for a normal answer; these samples only fill the
``schema_*`` and ``malformed_json`` fault bodies when a test stored nothing for a symbol.
Values come from the examples in Alpaca's OpenAPI documents.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from .occ import parse_occ
from .wire_json import JsonObject

# Asset ids are derived from the symbol so that a test can predict them and they survive
# a re-registration of the same symbol.
_ASSET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://alpaca-emulator.invalid/assets")
_CONTRACT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://alpaca-emulator.invalid/contracts")


def asset_id_of(symbol: str) -> str:
    """The id :func:`default_asset` gives the symbol (predictable, stable across resets)."""
    return str(uuid.uuid5(_ASSET_NAMESPACE, symbol))


def default_clock() -> JsonObject:
    """The spec's clock example: a fixed moment during regular trading hours, ET offsets."""
    return {
        "timestamp": "2025-06-24T14:15:22-04:00",
        "is_open": True,
        "next_open": "2025-06-25T09:30:00-04:00",
        "next_close": "2025-06-24T16:00:00-04:00",
    }


def sample_calendar_day() -> JsonObject:
    """The spec's calendar day: regular hours, the session from 4:00 to 20:00, settled T+1."""
    return {
        "date": "2025-01-02",
        "open": "09:30",
        "close": "16:00",
        "session_open": "0400",
        "session_close": "2000",
        "settlement_date": "2025-01-03",
    }


def default_asset(symbol: str) -> JsonObject:
    """A tradable NASDAQ us_equity with the fields Alpaca sends for one."""
    return {
        "id": asset_id_of(symbol),
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


def default_option_contract(occ: str) -> JsonObject:
    """A standard, active, American contract as Alpaca lists it, derived from the OCC symbol.

    Market values (``open_interest``, ``close_price`` and their dates) are never invented:
    they are absent unless a test stores them. ValueError if ``occ`` is not an OCC symbol.
    """
    parsed = parse_occ(occ)
    underlying_id = asset_id_of(parsed.root)
    kind = parsed.type.capitalize()
    return {
        "id": str(uuid.uuid5(_CONTRACT_NAMESPACE, occ)),
        "symbol": occ,
        "name": f"{parsed.root} {parsed.expiration:%b %d %Y} {parsed.strike_text} {kind}",
        "status": "active",
        "tradable": True,
        "expiration_date": parsed.expiration.isoformat(),
        "root_symbol": parsed.root,
        "underlying_symbol": parsed.root,
        "underlying_asset_id": underlying_id,
        "type": parsed.type,
        "style": "american",
        "strike_price": parsed.strike_text,
        "multiplier": "100",
        "size": "100",
        "deliverables": [
            {
                "type": "equity",
                "symbol": parsed.root,
                "asset_id": underlying_id,
                "amount": "100",
                "allocation_percentage": "100",
                "settlement_type": "T+1",
                "settlement_method": "CCC",
                "delayed_settlement": False,
            }
        ],
    }


def sample_option_quote() -> JsonObject:
    """An option quote from the spec's option latest-quotes example (``c`` is one string)."""
    return {
        "t": "2024-02-28T15:30:28.046330624Z",
        "bx": "W",
        "bp": Decimal("0.15"),
        "bs": 164,
        "ax": "w",
        "ap": Decimal("0.16"),
        "as": 669,
        "c": "A",
    }


def sample_option_trade() -> JsonObject:
    """An option trade from the spec's option latest-trades example."""
    return {"t": "2024-02-28T15:26:12.728701696Z", "x": "B", "p": Decimal("17.15"), "s": 900,
            "c": "e"}  # fmt: skip


def sample_option_snapshot() -> JsonObject:
    """An option snapshot without greeks, as Alpaca often sends one."""
    return {"latestQuote": sample_option_quote(), "latestTrade": sample_option_trade()}


def sample_position() -> JsonObject:
    """The spec's Position example-2."""
    return {
        "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "symbol": "AAPL",
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "asset_marginable": False,
        "avg_entry_price": "174.78",
        "qty": "2",
        "qty_available": "2",
        "side": "long",
        "market_value": "348.58",
        "cost_basis": "349.56",
        "unrealized_pl": "-0.98",
        "unrealized_plpc": "-0.0028035244307129",
        "unrealized_intraday_pl": "-0.98",
        "unrealized_intraday_plpc": "-0.0028035244307129",
        "current_price": "174.29",
        "lastday_price": "174.61",
        "change_today": "-0.0018326556325525",
    }


def sample_order() -> JsonObject:
    """The spec's EquityOrderResponse example."""
    return {
        "id": "7b08df51-c1ac-453c-99f9-323a5f075f0d",
        "client_order_id": "5680c4bc-9ac1-4a12-a44c-df427ba53032",
        "created_at": "2023-12-12T22:31:24.668464435Z",
        "updated_at": "2023-12-12T22:31:24.668464435Z",
        "submitted_at": "2023-12-12T22:31:24.577215743Z",
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "symbol": "AAPL",
        "asset_class": "us_equity",
        "notional": None,
        "qty": "2",
        "filled_qty": "0",
        "filled_avg_price": None,
        "order_class": "",
        "order_type": "limit",
        "type": "limit",
        "side": "buy",
        "time_in_force": "gtc",
        "limit_price": "150",
        "stop_price": None,
        "status": "accepted",
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
        "source": None,
        "subtag": None,
    }
