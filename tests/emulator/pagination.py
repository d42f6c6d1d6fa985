"""Historical pages (bars, quotes, trades): symbol-then-time order, a total ``limit`` and opaque
page tokens.

A token names the first item of the next page by (symbol, t in ns, how many items with that
same symbol and t were already sent), base64-encoded like Alpaca's own
``QUFQTHxNfDIwMjIt...`` tokens. Keying on the item rather than an offset keeps paging
correct when a test adds data to other symbols between pages; counting the items already sent
at one t keeps it correct for trades that share a nanosecond.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .params import TimeRange
from .state import Stamped
from .wire_json import JsonObject


@dataclass(frozen=True)
class _Item:
    symbol: str
    stamped: Stamped

    def key(self, descending: bool) -> tuple[str, int]:
        return self.symbol, -self.stamped.t_ns if descending else self.stamped.t_ns


@dataclass(frozen=True)
class PageCursor:
    """Where the next page starts."""

    symbol: str
    t_ns: int
    skip: int

    def encode(self) -> str:
        """The opaque next_page_token."""
        raw = f"{self.symbol}|{self.t_ns}|{self.skip}".encode()
        return base64.b64encode(raw).decode("ascii")

    @classmethod
    def decode(cls, token: str) -> PageCursor:
        """Parse a next_page_token; ValueError if it is not one of ours."""
        try:
            symbol, t_ns, skip = base64.b64decode(token, validate=True).decode().split("|")
            return cls(symbol, int(t_ns), int(skip))
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"invalid page token: {token}") from exc


@dataclass(frozen=True)
class SeriesPage:
    """One page: items per symbol (only symbols with items on this page) and the next cursor."""

    items: dict[str, list[JsonObject]]
    next_cursor: PageCursor | None


def series_page(
    stored: Mapping[str, Sequence[Stamped]],
    symbols: Sequence[str],
    window: TimeRange,
    *,
    limit: int,
    descending: bool,
    cursor: PageCursor | None,
) -> SeriesPage:
    """Select one page of items for ``symbols`` inside ``window`` starting at ``cursor``."""
    items = [
        _Item(symbol, one)
        for symbol in sorted(set(symbols))
        for one in _ordered(stored.get(symbol, ()), descending)
        if window.contains(one.t_ns)
    ]
    start = 0 if cursor is None else _resume_index(items, cursor, descending)
    page = items[start : start + limit]
    by_symbol: dict[str, list[JsonObject]] = {}
    for item in page:
        by_symbol.setdefault(item.symbol, []).append(item.stamped.wire)
    end = start + len(page)
    return SeriesPage(by_symbol, _cursor_at(items, end, descending) if end < len(items) else None)


def _ordered(items: Sequence[Stamped], descending: bool) -> Sequence[Stamped]:
    return items[::-1] if descending else items


def _resume_index(items: Sequence[_Item], cursor: PageCursor, descending: bool) -> int:
    wanted = (cursor.symbol, -cursor.t_ns if descending else cursor.t_ns)
    for index, item in enumerate(items):
        if item.key(descending) >= wanted:
            same_key = item.key(descending) == wanted
            return index + cursor.skip if same_key else index
    return len(items)


def _cursor_at(items: Sequence[_Item], index: int, descending: bool) -> PageCursor:
    item = items[index]
    first = index
    while first > 0 and items[first - 1].key(descending) == item.key(descending):
        first -= 1
    return PageCursor(item.symbol, item.stamped.t_ns, index - first)
