"""The exact text of identifiers and times, as JSON Schema patterns: declared once, used by the
OpenAPI document and by the parsing (`regex` compiles them with JSON Schema's meaning).

ASCII classes only: `\\d` and `\\s` differ between ECMA-262 (what OpenAPI tools use), Python and
Rust regex engines, and Unicode digits or spaces must never pass for ASCII ones.
"""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from typing import Any

_SYMBOL_TEXT = r"[A-Za-z][A-Za-z0-9]*(?:[.\-][A-Za-z0-9]+)*"
# A stock symbol as a client may write it: upper-cased, it is `^[A-Z][A-Z0-9.\-]{0,9}$` with no
# doubled or trailing separator (app/symbols.py; Alpaca answers 400 for `A..B` and `BRK.`).
SYMBOL_PATTERN = f"^{_SYMBOL_TEXT}$"
SYMBOL_MAX_LENGTH = 10


def _month_day(separator: str) -> str:
    """MMDD (or MM-DD) of a calendar month; 29 February is the leap-year patterns' own."""
    return (
        f"(?:(?:0[13578]|1[02]){separator}(?:0[1-9]|[12][0-9]|3[01])"
        f"|(?:0[469]|11){separator}(?:0[1-9]|[12][0-9]|30)"
        f"|02{separator}(?:0[1-9]|1[0-9]|2[0-8]))"
    )


# YYMMDD of 2000-2099, calendar dates only (29 February in leap years).
_OCC_DATE = f"(?:[0-9]{{2}}{_month_day('')}|(?:[02468][048]|[13579][26])0229)"
# ROOT + YYMMDD + C|P + strike x 1000; upper-cased by the server.
OCC_PATTERN = f"^[A-Za-z]{{1,6}}{_OCC_DATE}[CPcp][0-9]{{8}}$"
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001-9999
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DAY = f"(?:{_YEAR}-{_month_day('-')}|{_LEAP_YEAR}-02-29)"
# A calendar date, exactly what `date.fromisoformat` takes in the YYYY-MM-DD form.
DATE_PATTERN = f"^{_DAY}$"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?"
_OFFSET = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# RFC 3339 as Alpaca takes it (upper-case T and Z), or a date (UTC midnight).
TIME_BOUND_PATTERN = f"^{_DAY}(?:T{_TIME}{_OFFSET})?$"
# The bar sizes Alpaca takes: 1-59 Min, 1-23 Hour, 1 Day, 1 Week, 1/2/3/4/6/12 Month (and the
# short unit names T, H, D, W, M); app/market_data.py refuses the same set.
TIMEFRAME_PATTERN = (
    "^(?:(?:[1-9]|[1-5][0-9])(?:Min|T)|(?:[1-9]|1[0-9]|2[0-3])(?:Hour|H)|1(?:Day|D|Week|W)"
    "|(?:[1-46]|12)(?:Month|M))$"
)
ORDER_ID_PATTERN = "^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
# Printable ASCII without spaces: the key is echoed into logs and Alpaca's client_order_id.
IDEMPOTENCY_KEY_PATTERN = "^[!-~]{1,128}$"
PAGE_TOKEN_PATTERN = "^[A-Za-z0-9+/=_\\-]{1,512}$"  # noqa: S105 (a pattern, not a secret)
STRIKE_PATTERN = "^[0-9]{1,6}(?:\\.[0-9]{1,4})?$"
ROOT_SYMBOL_PATTERN = "^[A-Z]{1,6}$"
# An order's decimal as a string: at most 12 digits before the point and 9 after; and not zero.
DECIMAL_TEXT_PATTERN = "^[0-9]{1,12}(?:\\.[0-9]{1,9})?$"
NOT_ZERO_PATTERN = "[1-9]"


@cache
def regex(pattern: str) -> re.Pattern[str]:
    """The pattern with JSON Schema's meaning, for `.search`: ECMA-262's `$` is the end of the
    text only, where Python's also matches before a final newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


def string_problem(schema: dict[str, Any], value: str) -> str | None:
    """Why `value` is invalid against this string schema, or None. Checks the keywords the
    gateway's own string schemas use (`Param` refuses any other): anyOf, maxLength, minLength,
    enum, pattern (also inside allOf) and format `date`."""
    if "anyOf" in schema:
        problems = [string_problem(option, value) for option in schema["anyOf"]]
        return None if None in problems else problems[0]
    if len(value) > schema.get("maxLength", len(value)):
        return "is too long"
    if len(value) < schema.get("minLength", 0):
        return "is too short"
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(schema['enum'])}"
    for pattern in (schema.get("pattern"), *(s["pattern"] for s in schema.get("allOf", ()))):
        if pattern is not None and not regex(pattern).search(value):
            return f"must match {pattern}"
    if schema.get("format") == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            return "must be a calendar date (YYYY-MM-DD)"
    return None
