"""Decimal numbers as Alpaca's trading API writes them: strings, normalised.

Alpaca's order service parses numeric fields (sent as JSON numbers or strings) into decimals
and writes them back with Go's shopspring ``decimal.String()``: no exponent, no trailing
zeros, no trailing point. So ``1.0`` comes back as ``"1"``, ``"150.10"`` as ``"150.1"`` and
``1e2`` as ``"100"``. The emulator does the same, deterministically.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from .wire_json import Json


def decimal_text(value: Decimal) -> str:
    """Normalised text: ``Decimal("150.10")`` -> ``"150.1"``, ``Decimal("1E+2")`` -> ``"100"``."""
    if value.is_zero():
        return "0"  # also turns -0 into 0
    return format(value.normalize(), "f")


def parse_decimal(value: Json) -> Decimal:
    """A JSON number or numeric string as a finite Decimal; ValueError otherwise.

    Booleans are refused even though Python treats them as integers.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if text != value or not text:
            raise ValueError(f"{value!r} is not a number")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    else:
        raise ValueError(f"{value!r} is not a number")
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a number")
    return number


def decimal_places(value: Decimal) -> int:
    """How many digits follow the point once trailing zeros are gone (0 for integers)."""
    exponent = value.normalize().as_tuple().exponent
    return 0 if not isinstance(exponent, int) or exponent >= 0 else -exponent
