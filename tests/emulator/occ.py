"""OCC option symbols: ``ROOT + YYMMDD + C|P + strike x 1000 (8 digits)``.

``AAPL240426C00162500`` is the AAPL call expiring 2024-04-26 with strike 162.5. The strike is
kept as a Decimal and written as Alpaca writes it in contracts: ``"162.5"``, ``"170"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from .decimals import decimal_text

_OCC = re.compile(r"([A-Z]{1,6})(\d{2})(\d{2})(\d{2})([CP])(\d{8})")

ContractType = Literal["call", "put"]


@dataclass(frozen=True)
class OccSymbol:
    """The parts of one OCC symbol."""

    symbol: str
    root: str
    expiration: date
    type: ContractType
    strike: Decimal

    @property
    def strike_text(self) -> str:
        """The strike as Alpaca's contracts write it, e.g. ``"162.5"``."""
        return decimal_text(self.strike)


def is_occ(symbol: str) -> bool:
    """Whether the text has the OCC shape (``^[A-Z]{1,6}\\d{6}[CP]\\d{8}$``)."""
    return _OCC.fullmatch(symbol) is not None


def parse_occ(symbol: str) -> OccSymbol:
    """Split an OCC symbol; ValueError if it is not one (bad shape or impossible date)."""
    match = _OCC.fullmatch(symbol)
    if match is None:
        raise ValueError(f"not an OCC option symbol: {symbol!r}")
    root, yy, mm, dd, kind, strike = match.groups()
    try:
        expiration = date(2000 + int(yy), int(mm), int(dd))
    except ValueError:
        raise ValueError(f"not an OCC option symbol (bad date): {symbol!r}") from None
    return OccSymbol(
        symbol=symbol,
        root=root,
        expiration=expiration,
        type="call" if kind == "C" else "put",
        strike=Decimal(int(strike)) / 1000,
    )
