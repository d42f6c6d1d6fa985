"""Historical bar pages: symbol-then-time order, a total ``limit`` and opaque page tokens.

A token names the first item of the next page by (symbol, t in ns, how many items with that
same symbol and t were already sent), base64-encoded like Alpaca's own
``QUFQTHxNfDIwMjIt...`` tokens. Keying on the item rather than an offset keeps paging
correct when a test adds bars to other symbols between pages.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .params import TimeRange
from .state import StoredBar
from .wire_json import JsonObject


@dataclass(frozen=True)
class _Item:
    symbol: str
    bar: StoredBar

    def key(self, descending: bool) -> tuple[str, int]:
        return self.symbol, -self.bar.t_ns if descending else self.bar.t_ns


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
class BarPage:
    """One page: bars per symbol (only symbols with bars on this page) and the next cursor."""

    bars: dict[str, list[JsonObject]]
    next_cursor: PageCursor | None


def bar_page(
    stored: Mapping[str, Sequence[StoredBar]],
    symbols: Sequence[str],
    window: TimeRange,
    *,
    limit: int,
    descending: bool,
    cursor: PageCursor | None,
) -> BarPage:
    """Select one page of bars for ``symbols`` inside ``window`` starting at ``cursor``."""
    items = [
        _Item(symbol, bar)
        for symbol in sorted(set(symbols))
        for bar in _ordered(stored.get(symbol, ()), descending)
        if window.contains(bar.t_ns)
    ]
    start = 0 if cursor is None else _resume_index(items, cursor, descending)
    page = items[start : start + limit]
    bars: dict[str, list[JsonObject]] = {}
    for item in page:
        bars.setdefault(item.symbol, []).append(item.bar.wire)
    end = start + len(page)
    return BarPage(bars, _cursor_at(items, end, descending) if end < len(items) else None)


def _ordered(bars: Sequence[StoredBar], descending: bool) -> Sequence[StoredBar]:
    return bars[::-1] if descending else bars


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
    return PageCursor(item.symbol, item.bar.t_ns, index - first)
