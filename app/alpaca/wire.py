"""Strict readers for Alpaca's JSON: a field is what the schema says, or the answer is bad.

Nothing here defaults, coerces or patches a value: a wrong shape raises UPSTREAM_BAD_RESPONSE.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.errors import ErrorCode, GatewayError, Upstream
from app.models.numbers import NumberText

# RFC 3339 as Alpaca writes it: seconds required, up to nanoseconds, Z or an offset.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")

Number = int | float
_DECIMAL = re.compile(r"-?\d+(\.\d+)?", re.ASCII)


def decode_json(body: bytes | str) -> Any:
    """Market data: JSON numbers as Python reads them (Alpaca writes the shortest text of a
    float64, which reads back exactly); NaN/Infinity refused, and so is a number no float64
    holds (Alpaca's encoder cannot write one)."""
    return json.loads(body, parse_float=_float64, parse_constant=_reject_constant)


def decode_exact(body: bytes | str) -> Any:
    """JSON with every non-integer number as `NumberText`; NaN/Infinity refused."""
    return json.loads(body, parse_float=NumberText, parse_constant=_reject_constant)


def _float64(text: str) -> float:
    """A JSON number's text as a float; ValueError when no float64 holds it. Read anyway, 1e400
    would become infinity (no JSON can carry it on: a 500) and 1e-400 a zero (a price that is
    "not there")."""
    number = float(text)
    mantissa = text.lower().partition("e")[0]
    if math.isinf(number) or (number == 0 and any(d in mantissa for d in "123456789")):
        raise ValueError(f"the number {text[:40]} does not fit a float64")
    return number


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; no JSON schema of Alpaca's (or ours) has them.
    raise ValueError(f"non-JSON number {name}")


def bad_response(detail: str, upstream: Upstream = "data") -> GatewayError:
    return GatewayError(ErrorCode.UPSTREAM_BAD_RESPONSE, detail, upstream=upstream)


def mapping(value: Any, what: str, upstream: Upstream = "data") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise bad_response(f"{what}: expected an object, got {type(value).__name__}", upstream)
    return value


def optional_number(wire: Mapping[str, Any], key: str, what: str) -> Number | None:
    """A non-negative JSON number, passed on untouched (no float conversion, no rounding)."""
    value = wire.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_response(f"{what}: `{key}` is not a number")
    if value < 0:
        raise bad_response(f"{what}: `{key}` is negative")
    return value


def optional_signed_number(wire: Mapping[str, Any], key: str, what: str) -> Number | None:
    """A JSON number that may be negative (greeks), passed on untouched."""
    value = wire.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_response(f"{what}: `{key}` is not a number")
    return value


def number(wire: Mapping[str, Any], key: str, what: str) -> Number:
    value = optional_number(wire, key, what)
    if value is None:
        raise bad_response(f"{what}: `{key}` is missing")
    return value


def optional_integer(wire: Mapping[str, Any], key: str, what: str) -> int | None:
    value = optional_number(wire, key, what)
    if value is not None and not isinstance(value, int):
        raise bad_response(f"{what}: `{key}` is not an integer")
    return value


def optional_text(
    wire: Mapping[str, Any], key: str, what: str, upstream: Upstream = "data"
) -> str | None:
    value = wire.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_response(f"{what}: `{key}` is not a string", upstream)
    return value


def text(wire: Mapping[str, Any], key: str, what: str, upstream: Upstream = "data") -> str:
    value = optional_text(wire, key, what, upstream)
    if value is None:
        raise bad_response(f"{what}: `{key}` is missing", upstream)
    return value


def decimal_text(
    wire: Mapping[str, Any], key: str, what: str, upstream: Upstream = "trading"
) -> str | None:
    """A trading-API decimal (strike, size, qty...) as the exact text Alpaca sent: a decimal
    string as it is, a JSON number as the text it was written in. Absent or null is None."""
    value = wire.get(key)
    if value is None:
        return None
    if isinstance(value, NumberText):
        return str(value)  # the JSON grammar already guarantees a number
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        # Only from a decoder that kept no text; repr is the shortest text of the same value.
        return repr(value)
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise bad_response(f"{what}: `{key}` is not a decimal", upstream)
    return value


def plain_numbers(value: Any, *, lenient: bool = False) -> Any:
    """The same JSON value with every `NumberText` back to a JSON number, as Python reads it.

    For the members of a trading object that are not declared decimals (an extra `commission`,
    an asset's `min_order_size`): their type is kept; only declared decimals become text. A
    number no float64 holds is a bad response; with `lenient` (an answer that must be passed on
    all the same: an accepted order) it stays the exact text Alpaca wrote.
    """
    if isinstance(value, NumberText):
        try:
            return _float64(value)
        except ValueError as exc:
            if lenient:
                return str(value)
            raise bad_response(str(exc), "trading") from exc
    if isinstance(value, dict):
        return {key: plain_numbers(item, lenient=lenient) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_numbers(item, lenient=lenient) for item in value]
    return value


def with_decimals(wire: Mapping[str, Any], decimals: tuple[str, ...], what: str) -> dict[str, Any]:
    """A trading object as Alpaca sent it, its declared decimals as exact text (strings).

    A decimal Alpaca left out stays out; one it sent as null stays null.
    """
    return {
        key: decimal_text(wire, key, what) if key in decimals else plain_numbers(item)
        for key, item in wire.items()
    }


def boolean(wire: Mapping[str, Any], key: str, what: str, upstream: Upstream = "data") -> bool:
    value = wire.get(key)
    if not isinstance(value, bool):
        raise bad_response(f"{what}: `{key}` is not a boolean", upstream)
    return value


def text_list(wire: Mapping[str, Any], key: str, what: str) -> list[str] | None:
    value = wire.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_response(f"{what}: `{key}` is not a list of strings")
    return list(value)


def timestamp(wire: Mapping[str, Any], key: str, what: str, upstream: Upstream = "data") -> str:
    """Alpaca's timestamp text, kept verbatim; checked to be RFC 3339 so ages can be computed."""
    value = text(wire, key, what, upstream)
    if not _RFC3339.fullmatch(value):
        raise bad_response(f"{what}: `{key}` is not an RFC 3339 timestamp", upstream)
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:  # the right shape, an impossible moment (Feb 30, hour 25)
        raise bad_response(f"{what}: `{key}` is not a real time", upstream) from exc
    return value


def epoch_seconds(rfc3339: str) -> float:
    """Seconds since the epoch for an already-validated RFC 3339 text (sub-µs digits dropped)."""
    return datetime.fromisoformat(rfc3339).timestamp()


def epoch_ns(rfc3339: str) -> int:
    """Nanoseconds since the epoch for an already-validated RFC 3339 text, all nine digits kept
    (a float of seconds would blur two quotes a few hundred nanoseconds apart)."""
    head, dot, rest = rfc3339.partition(".")
    if not dot:
        return int(datetime.fromisoformat(rfc3339).timestamp()) * 1_000_000_000
    digits = len(rest) - len(rest.lstrip("0123456789"))
    seconds = int(datetime.fromisoformat(head + rest[digits:]).timestamp())
    return seconds * 1_000_000_000 + int(rest[:digits].ljust(9, "0"))
