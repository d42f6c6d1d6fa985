"""Request parameters of the gateway's routes: declared once, for parsing and for OpenAPI.

The routes take the `Request` and read their few parameters here instead of through FastAPI's
per-parameter dependency solving, which `make bench` (py-spy) showed to be a quarter of the CPU
of a cached quote. Each `Param` also renders its OpenAPI entry, so the document and the parsing
cannot drift apart: a value is accepted exactly when it is valid against the schema the document
shows (the schema keywords used here are the ones `string_problem` checks). A bad value is
VALIDATION_ERROR with `invalid_params`, as everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import unquote

from fastapi import Request

from app.errors import ErrorCode, GatewayError
from app.models.patterns import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN, regex, string_problem
from app.settings import STOCK_FEEDS
from app.state import GatewayState


def gateway_of(request: Request) -> GatewayState:
    # The lifespan's state, as the server copies it into every request's scope (read directly:
    # request.state builds a wrapper object, and this runs several times per request).
    gateway: GatewayState = request.scope["state"]["gateway"]
    return gateway


_QUERY = "gateway.query"


def query_of(request: Request) -> dict[str, str]:
    """The query string's parameters, parsed once per request (the last of a repeated name
    wins), exactly as `request.query_params` reads them: urllib's `parse_qsl` with blank values
    kept. Written out because Starlette's QueryParams cost a cached quote 12 us per request."""
    scope = request.scope
    parsed: dict[str, str] | None = scope.get(_QUERY)
    if parsed is None:
        parsed = {}
        raw = scope["query_string"]
        if raw:
            for field in raw.decode("latin-1").split("&"):
                if field:
                    name, _, value = field.partition("=")
                    parsed[_unquoted(name)] = _unquoted(value)
        scope[_QUERY] = parsed
    return parsed


def _unquoted(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    return unquote(text.replace("+", " "))


def invalid(name: str, reason: str) -> GatewayError:
    return GatewayError(
        ErrorCode.VALIDATION_ERROR,
        f"{name}: {reason}",
        extensions={"invalid_params": [{"name": name, "reason": reason}]},
    )


_STRING_KEYWORDS = frozenset(
    {"type", "maxLength", "minLength", "enum", "pattern", "allOf", "anyOf", "format"}
)
_ARRAY_KEYWORDS = frozenset({"type", "items", "minItems", "maxItems", "contains"})
_INTEGER_KEYWORDS = frozenset({"type", "minimum", "maximum"})


def _bounded_length(schema: dict[str, Any]) -> int | None:
    if "anyOf" in schema:
        lengths = [_bounded_length(option) for option in schema["anyOf"]]
        return None if None in lengths else max(cast(list[int], lengths))
    if "enum" in schema:
        return max(len(value) for value in schema["enum"])
    return cast(int | None, schema.get("maxLength"))


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any]
    location: Literal["path", "query", "header"] = "query"
    required: bool = False
    example: Any = None
    _max_text: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kind = str(self.schema.get("type"))
        allowed = {"string": _STRING_KEYWORDS, "array": _ARRAY_KEYWORDS}.get(
            kind, _INTEGER_KEYWORDS
        )
        if kind not in ("string", "array", "integer") or set(self.schema) - allowed:
            raise ValueError(f"parameter {self.name}: schema keywords not checked by Param")
        # An unbounded value is a way in: 312 digits once overflowed a float division (500).
        if kind == "integer" and "maximum" not in self.schema:
            raise ValueError(f"integer parameter {self.name} needs a maximum")
        if kind == "string" and (limit := _bounded_length(self.schema)) is not None:
            max_text = limit
        elif kind == "array" and (item := _bounded_length(self.schema["items"])) is not None:
            max_text = self.schema["maxItems"] * (item + 1)
        elif kind == "integer":
            max_text = len(str(self.schema["maximum"]))
        else:
            raise ValueError(f"parameter {self.name} needs a maxLength")
        object.__setattr__(self, "_max_text", max_text)

    def openapi(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "in": self.location,
            "required": self.required or self.location == "path",
            "description": self.description,
            "schema": self.schema,
        }
        if self.schema["type"] == "array":
            entry |= {"style": "form", "explode": False}  # one parameter, comma-separated
        if self.example is not None:
            entry["example"] = self.example
        return entry

    def raw(self, request: Request) -> str | None:
        value: str | None
        if self.location == "path":
            value = request.path_params.get(self.name)
        elif self.location == "query":
            value = query_of(request).get(self.name)
        else:
            value = request.headers.get(self.name)
        if value is None:
            if self.required:
                raise invalid(self.name, "is required")
            return None
        if len(value) > self._max_text:
            # Refused before any pattern or conversion runs over it.
            raise invalid(self.name, self._refusal())
        return value

    def _refusal(self) -> str:
        if self.schema["type"] == "integer":
            low, high = self.schema.get("minimum", 0), self.schema["maximum"]
            return f"must be an integer from {low} to {high}"
        return "is too long"

    def text(self, request: Request) -> str | None:
        value = self.raw(request)
        if value is not None and (problem := string_problem(self.schema, value)) is not None:
            raise invalid(self.name, problem)
        return value

    def integer(self, request: Request) -> int | None:
        value = self.raw(request)
        if value is None:
            return None
        low, high = self.schema.get("minimum", 0), self.schema["maximum"]
        # Digits only (no sign, no spaces), already bounded by length before this conversion.
        if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            raise invalid(self.name, self._refusal())
        return int(value)

    def items(self, request: Request) -> list[str] | None:
        """A comma-separated list (`style: form, explode: false`), each item checked."""
        value = self.raw(request)
        if value is None:
            return None
        items = value.split(",")
        low, high = self.schema.get("minItems", 0), self.schema["maxItems"]
        if not low <= len(items) <= high:
            raise invalid(self.name, f"must list {low} to {high} items")
        for item in items:
            if (problem := string_problem(self.schema["items"], item)) is not None:
                raise invalid(self.name, f"{item[:32]!r} {problem}")
        contains = self.schema.get("contains")
        if contains is not None and all(string_problem(contains, i) for i in items):
            raise invalid(self.name, f"needs an item matching {contains['pattern']}")
        return items


def documented(*params: Param) -> dict[str, Any]:
    """`openapi_extra` for a route that reads these parameters itself."""
    return {"parameters": [p.openapi() for p in params]}


SYMBOL = Param(
    "symbol",
    "Stock symbol; upper-cased, then `^[A-Z][A-Z0-9.\\-]{0,9}$` with no doubled or trailing"
    " `.`/`-`",
    {"type": "string", "maxLength": SYMBOL_MAX_LENGTH, "pattern": SYMBOL_PATTERN},
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
    "Answer 503 DATA_STALE instead of a value older than this (ms); default DEFAULT_MAX_AGE_MS",
    {"type": "integer", "minimum": 0, "maximum": MAX_MS},
)
STALE_IF_ERROR_MS = Param(
    "stale_if_error_ms",
    "Opt-in: if Alpaca fails, serve a cached real value fetched at most this long ago,"
    " marked cache=stale",
    {"type": "integer", "minimum": 0, "maximum": MAX_MS},
)
_SYMBOL_REGEX = regex(SYMBOL_PATTERN)


def symbol(request: Request) -> str:
    """The path's stock symbol, upper-cased, or VALIDATION_ERROR. One length check and one
    compiled regex: this runs on every cached quote."""
    raw: str = request.path_params["symbol"]
    if len(raw) > SYMBOL_MAX_LENGTH or not _SYMBOL_REGEX.match(raw):
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            f"{raw[:32]!r} is not a stock symbol ({SYMBOL_PATTERN}, at most 10 characters)",
            extensions={"invalid_params": [{"name": "symbol", "reason": "not a stock symbol"}]},
        )
    return raw.upper()


def stale_if_error_s(request: Request) -> float | None:
    value = STALE_IF_ERROR_MS.integer(request)
    return None if value is None else value / 1000
