"""Alpaca's answer and error shapes, for both API families.

Market data errors are ``{"message": ...}`` with no code; trading errors add an 8-digit
``code`` (alpaca-notes section 4.1). Handlers raise :class:`AlpacaError` and the pipeline in
``middleware.py`` renders it, so every error also carries the rate-limit headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from aiohttp import web

from .wire_json import Json, JsonObject, dumps


class ApiFamily(Enum):
    """Which Alpaca API a path belongs to; it decides error body shapes."""

    MARKET_DATA = "market-data"
    TRADING = "trading"


# Prefixes of Alpaca's market-data host; everything else under /v2 is the trading API.
_DATA_PREFIXES = ("/v2/stocks", "/v1beta1/", "/v1beta3/", "/v1/")


def family_of(path: str) -> ApiFamily:
    """The API family of a request path, used where no route matched (404s, faults)."""
    return ApiFamily.MARKET_DATA if path.startswith(_DATA_PREFIXES) else ApiFamily.TRADING


class AlpacaError(Exception):
    """An Alpaca error answer: HTTP status plus the JSON body Alpaca would send."""

    def __init__(self, status: int, body: JsonObject) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def data_error(status: int, message: str) -> AlpacaError:
    """A market-data error: message only."""
    return AlpacaError(status, {"message": message})


def trading_error(status: int, code: int, message: str) -> AlpacaError:
    """A trading-API error: 8-digit code plus message."""
    return AlpacaError(status, {"code": code, "message": message})


def family_error(family: ApiFamily, status: int, code: int, message: str) -> AlpacaError:
    """The error in the shape of the given family (the code is dropped for market data)."""
    if family is ApiFamily.MARKET_DATA:
        return data_error(status, message)
    return trading_error(status, code, message)


def unauthorized(family: ApiFamily) -> AlpacaError:
    """401 for missing or wrong API keys."""
    if family is ApiFamily.MARKET_DATA:
        return data_error(401, "unauthorized.")
    return trading_error(401, 40110000, "request is not authorized")


def too_many_requests(family: ApiFamily) -> AlpacaError:
    """429 once the per-minute budget is spent."""
    if family is ApiFamily.MARKET_DATA:
        return data_error(429, "too many requests.")
    return trading_error(429, 42910000, "rate limit exceeded")


def json_response(
    value: Json, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer written with :func:`wire_json.dumps`, so stored numbers keep their text."""
    return web.Response(
        text=dumps(value), status=status, content_type="application/json", headers=headers
    )
