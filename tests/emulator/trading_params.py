"""Trading-API query parameters, refused the way Alpaca's trading API refuses them.

Trading errors carry a code: a value Alpaca cannot use answers 422
``{"code": 40010000, "message": ...}``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import date
from decimal import Decimal

from .decimals import parse_decimal
from .responses import AlpacaError, trading_error
from .timestamps import query_time_ns, rfc3339_ns, strict_date

Query = Mapping[str, str]
INVALID = 40010000
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def invalid(message: str) -> AlpacaError:
    """422 ``{"code": 40010000, "message": ...}``."""
    return trading_error(422, INVALID, message)


def choice(query: Query, name: str, allowed: frozenset[str], default: str | None) -> str | None:
    """An enum value (or the default when absent)."""
    value = query.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise invalid(f"invalid {name}: {value}")
    return value


def boolean(query: Query, name: str) -> bool | None:
    """A boolean as Go's strconv.ParseBool reads it (true, 1, t, False ...)."""
    value = query.get(name)
    if value is None:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise invalid(f"invalid {name}: {value}")


def integer(query: Query, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer in ``minimum..maximum``."""
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or not minimum <= int(value) <= maximum:
        raise invalid(f"invalid {name}: {value}, must be between {minimum} and {maximum}")
    return int(value)


def decimal(query: Query, name: str) -> Decimal | None:
    """A decimal number."""
    value = query.get(name)
    if value is None:
        return None
    try:
        return parse_decimal(value)
    except ValueError:
        raise invalid(f"invalid {name}: {value}") from None


def day(query: Query, name: str) -> date | None:
    """A ``YYYY-MM-DD`` date."""
    value = query.get(name)
    if value is None:
        return None
    try:
        return strict_date(value)
    except ValueError:
        raise invalid(f"invalid {name}: {value}") from None


def calendar_date(query: Query, name: str) -> date | None:
    """A calendar bound: ``YYYY-MM-DD``, or an RFC 3339 time whose date, as written in its own
    offset, is the day meant (Alpaca reads both). Refused with 400, as the calendar documents."""
    value = query.get(name)
    if value is None:
        return None
    try:
        if len(value) > len("YYYY-MM-DD"):
            rfc3339_ns(value)
        return strict_date(value[: len("YYYY-MM-DD")])
    except ValueError:
        raise trading_error(400, INVALID, f"invalid {name}: {value}") from None


def moment_ns(query: Query, name: str) -> int | None:
    """An RFC 3339 timestamp or a date (its first nanosecond, UTC) in nanoseconds."""
    value = query.get(name)
    if value is None:
        return None
    try:
        return query_time_ns(value, end_of_day=False)
    except ValueError:
        raise invalid(f"invalid {name}: {value}") from None


def csv(query: Query, name: str) -> set[str] | None:
    """A comma-separated list (empty items dropped)."""
    value = query.get(name)
    if value is None:
        return None
    return {item for item in value.split(",") if item}


def offset_token(query: Query) -> int:
    """``page_token`` as Alpaca's contract listing writes it: base64 of the offset (MTAwMA==)."""
    token = query.get("page_token")
    if token is None or token == "":
        return 0
    try:
        text = base64.b64decode(token, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise invalid(f"invalid page_token: {token}") from None
    if not text.isdigit():
        raise invalid(f"invalid page_token: {token}")
    return int(text)


def encode_offset(offset: int) -> str:
    """The ``next_page_token`` for the item at ``offset``."""
    return base64.b64encode(str(offset).encode()).decode("ascii")
