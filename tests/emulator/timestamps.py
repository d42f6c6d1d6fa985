"""RFC 3339 timestamps as integer nanoseconds, so nanosecond ``t`` values order exactly.

Python's datetime stops at microseconds; Alpaca's ``t`` has nanoseconds. Comparing integer
nanoseconds since the epoch keeps ``...10:07:40.286587431Z`` and ``...10:07:40.286587432Z``
apart.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S = 1_000_000_000
_LAST_NS_OF_DAY = 86_400 * _NS_PER_S - 1


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch for an RFC 3339 date-time; ValueError if it is not one."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7) or "", match.group(8)
    tz = UTC
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    moment = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * _NS_PER_S + int(fraction.ljust(9, "0") or "0")


def query_time_ns(text: str, *, end_of_day: bool) -> int:
    """Parse a ``start``/``end`` query value: RFC 3339, or YYYY-MM-DD.

    Alpaca does not document the time zone of a bare date. The emulator reads it as a UTC day:
    a ``start`` date is that day's first nanosecond and an ``end`` date its last, so an
    inclusive ``end=2022-08-16`` still covers the daily bar stamped ``2022-08-16T04:00:00Z``.
    """
    match = _DATE.fullmatch(text)
    if match is None:
        return rfc3339_ns(text)
    day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    first_ns = ((midnight - _EPOCH) // timedelta(seconds=1)) * _NS_PER_S
    return first_ns + _LAST_NS_OF_DAY if end_of_day else first_ns


def format_ns(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC with nine fraction digits, like Alpaca's
    ``2023-12-12T22:31:24.668464435Z``."""
    seconds, fraction = divmod(ns, _NS_PER_S)
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def strict_date(text: str) -> date:
    """A ``YYYY-MM-DD`` date (nothing else); ValueError otherwise."""
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a YYYY-MM-DD date: {text!r}")
    return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
