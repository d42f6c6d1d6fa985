"""JSON that keeps numbers exactly as the test wrote them.

Stored market data must come back byte-for-byte equal in value, so numbers with a fraction or
exponent are parsed as :class:`~decimal.Decimal` (never float) and written back from their
decimal text. ``0.0001`` stays ``0.0001`` and ``172.6201`` stays ``172.6201`` even when the
test sent more digits than a float can hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import TypeAlias

Json: TypeAlias = bool | int | Decimal | str | list["Json"] | dict[str, "Json"] | None
JsonObject = dict[str, Json]


class WireJsonError(ValueError):
    """The text is not JSON, or holds NaN/Infinity (which JSON does not allow)."""


def _reject_constant(name: str) -> Json:
    raise WireJsonError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Json:
    """Parse JSON text; fractional numbers become Decimal so they round-trip exactly."""
    try:
        value: Json = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise WireJsonError(f"body is not valid JSON: {exc}") from exc
    return value


def dumps(value: object) -> str:
    """Serialise JSON types, Decimal and float; Decimals are written from their own text.

    Accepts any Mapping/list/tuple so test code can pass its own payloads; floats use Python's
    shortest round-trip repr, so 0.0001 is sent as ``0.0001``.
    """
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: object, parts: list[str]) -> None:
    # bool before int: True is an int in Python but must be written as `true`.
    if value is None or isinstance(value, (bool, str, float)):
        parts.append(json.dumps(value, allow_nan=False))
    elif isinstance(value, (int, Decimal)):
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValueError(f"{value} is not valid JSON")
        parts.append(str(value))
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    elif isinstance(value, Mapping):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {key!r}")
            if index:
                parts.append(",")
            parts.append(json.dumps(key))
            parts.append(":")
            _write(item, parts)
        parts.append("}")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
