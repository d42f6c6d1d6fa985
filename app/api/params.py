"""Request parameters of the gateway's routes: declared once, for parsing and for OpenAPI.

The routes take the `Request` and read their few parameters here instead of through FastAPI's
per-parameter dependency solving, which `make bench` (py-spy) showed to be a quarter of the CPU
of a cached quote. Each `Param` also renders its OpenAPI entry, so the document and the parsing
cannot drift apart. A bad value is VALIDATION_ERROR with `invalid_params`, as everywhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from fastapi import Request

from app.errors import ErrorCode, GatewayError
from app.settings import STOCK_FEEDS
from app.state import GatewayState
from app.symbols import stock_symbol


def gateway_of(request: Request) -> GatewayState:
    return cast(GatewayState, request.state.gateway)


def invalid(name: str, reason: str) -> GatewayError:
    return GatewayError(
        ErrorCode.VALIDATION_ERROR,
        f"{name}: {reason}",
        extensions={"invalid_params": [{"name": name, "reason": reason}]},
    )


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any]
    location: Literal["path", "query"] = "query"
    required: bool = False
    example: Any = None
    # False only for a list whose items are validated one by one (a batch's symbols: one bad
    # item fails alone, as the contract says).
    ascii_only: bool = True

    def __post_init__(self) -> None:
        # An unbounded number is a way in: 312 digits once overflowed a float division (500).
        if self.schema.get("type") == "integer" and "maximum" not in self.schema:
            raise ValueError(f"integer parameter {self.name} needs a maximum")

    def openapi(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "in": self.location,
            "required": self.required or self.location == "path",
            "description": self.description,
            "schema": self.schema,
        }
        if self.example is not None:
            entry["example"] = self.example
        return entry

    def text(self, request: Request) -> str | None:
        source = request.path_params if self.location == "path" else request.query_params
        value = source.get(self.name)
        if value is None:
            if self.required:
                raise invalid(self.name, "is required")
            return None
        if len(value) > self.schema.get("maxLength", 1024):
            raise invalid(self.name, "is too long")
        if self.ascii_only and not value.isascii():
            # Every parameter of ours is ASCII; anything else could only be misread (`\d`
            # matches Arabic-Indic digits, Unicode case maps the long s to S).
            raise invalid(self.name, "must be ASCII")
        if "enum" in self.schema and value not in self.schema["enum"]:
            raise invalid(self.name, f"must be one of {', '.join(self.schema['enum'])}")
        pattern = self.schema.get("pattern")
        if pattern is not None and not re.fullmatch(pattern, value, re.ASCII):
            raise invalid(self.name, f"must match {pattern}")
        return value

    def integer(self, request: Request) -> int | None:
        value = self.text(request)
        if value is None:
            return None
        low, high = self.schema.get("minimum", 0), self.schema["maximum"]
        # Length first: no need to turn a thousand digits into a number to refuse them.
        if not value.isdigit() or len(value) > len(str(high)) or not low <= int(value) <= high:
            raise invalid(self.name, f"must be an integer from {low} to {high}")
        return int(value)


def documented(*params: Param) -> dict[str, Any]:
    """`openapi_extra` for a route that reads these parameters itself."""
    return {"parameters": [p.openapi() for p in params]}


SYMBOL = Param(
    "symbol",
    "Stock symbol; upper-cased, then `^[A-Z][A-Z0-9.\\-]{0,9}$`",
    {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9.\-]{0,9}$"},
    location="path",
    example="AAPL",
)
FEED = Param(
    "feed",
    "Alpaca feed; default from ALPACA_DATA_FEED. Always sent to Alpaca explicitly.",
    {"type": "string", "enum": list(STOCK_FEEDS)},
)
# A year, in ms: past any sensible age bound, far below where arithmetic on it could overflow.
MAX_MS = 31_536_000_000
MAX_AGE_MS = Param(
    "max_age_ms",
    "Answer DATA_STALE instead of a value older than this (ms); default DEFAULT_MAX_AGE_MS",
    {"type": "integer", "minimum": 0, "maximum": MAX_MS},
)
STALE_IF_ERROR_MS = Param(
    "stale_if_error_ms",
    "Opt-in: if Alpaca fails, serve a cached real value fetched at most this long ago,"
    " marked cache=stale",
    {"type": "integer", "minimum": 0, "maximum": MAX_MS},
)


def symbol(request: Request) -> str:
    return stock_symbol(request.path_params["symbol"])


def stale_if_error_s(request: Request) -> float | None:
    value = STALE_IF_ERROR_MS.integer(request)
    return None if value is None else value / 1000
