"""Validation of identifiers before they go anywhere near an upstream URL or query."""

from __future__ import annotations

import re
from datetime import date

from app.errors import ErrorCode, GatewayError

STOCK_SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,9}$"
_STOCK_SYMBOL = re.compile(STOCK_SYMBOL_PATTERN, re.ASCII)
# Stricter than the contract's pattern: Alpaca answers 400 for a doubled or trailing separator
# (A..B, BRK.), and a 400 fails every symbol of a multi-symbol call.
_SEPARATED = re.compile(r"[A-Z](?:[A-Z0-9]|[.\-](?=[A-Z0-9]))*", re.ASCII)


def ascii_upper(raw: str) -> str | None:
    """Stripped and upper-cased, or None for text that is not plain ASCII.

    Checked before upper-casing: Unicode case mapping turns other letters into ASCII ones
    (long s + `py` -> SPY, the `fi` ligature -> FI, `a` + sharp s -> ASS), and a request for
    one instrument must never be
    answered with another's price.
    """
    if not raw.isascii():
        return None
    return raw.strip().upper()


def stock_symbol(raw: str) -> str:
    """Upper-cased symbol, or VALIDATION_ERROR. A symbol of `..` never reaches Alpaca."""
    symbol = ascii_upper(raw)
    if symbol is None or not (_STOCK_SYMBOL.fullmatch(symbol) and _SEPARATED.fullmatch(symbol)):
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            f"{raw[:32]!r} is not a stock symbol ({STOCK_SYMBOL_PATTERN} after upper-casing)",
            extensions={"invalid_params": [{"name": "symbol", "reason": "not a stock symbol"}]},
        )
    return symbol


OCC_PATTERN = r"^[A-Z]{1,6}\d{6}[CP]\d{8}$"
_OCC = re.compile(r"([A-Z]{1,6})(\d{2})(\d{2})(\d{2})([CP])(\d{8})", re.ASCII)


def option_contract(raw: str) -> str:
    """OCC contract symbol (ROOT + YYMMDD + C|P + strike x 1000, 8 digits), or VALIDATION_ERROR."""
    symbol = ascii_upper(raw)
    match = None if symbol is None else _OCC.fullmatch(symbol)
    valid = match is not None
    if match is not None:
        try:
            date(2000 + int(match[2]), int(match[3]), int(match[4]))
        except ValueError:
            valid = False
    if symbol is None or not valid:
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            f"{raw[:32]!r} is not an OCC option symbol (e.g. AAPL250117C00200000)",
            extensions={"invalid_params": [{"name": "contract", "reason": "not an OCC symbol"}]},
        )
    return symbol
