"""Validation of identifiers before they go anywhere near an upstream URL or query."""

from __future__ import annotations

import re

from app.errors import ErrorCode, GatewayError

STOCK_SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,9}$"
_STOCK_SYMBOL = re.compile(STOCK_SYMBOL_PATTERN)


def stock_symbol(raw: str) -> str:
    """Upper-cased symbol, or VALIDATION_ERROR. A symbol of `..` never reaches Alpaca."""
    symbol = raw.strip().upper()
    if not _STOCK_SYMBOL.fullmatch(symbol):
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            f"{raw[:32]!r} is not a stock symbol ({STOCK_SYMBOL_PATTERN} after upper-casing)",
            extensions={"invalid_params": [{"name": "symbol", "reason": "not a stock symbol"}]},
        )
    return symbol
