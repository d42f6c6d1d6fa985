"""Which cached bar series already answers a request: by what Alpaca returned, not by spelling.

Two facts of Alpaca's bars endpoint make many requests one answer:

- `start` and `end` name instants. `2024-01-02T00:00:00Z`, `...+00:00`, `...000Z` and
  `2024-01-01T19:00:00-05:00` are one instant, so one answer: `instant_text` spells each one way.
  A bare `YYYY-MM-DD` is not an instant: Alpaca does not document its time zone (the notes say
  only that it is accepted), so a date keeps its own spelling and is never compared with a time.
- Alpaca returns the bars with `t >= start`. A request whose series came back complete (no
  `next_page_token`) with its first bar at `f` proves there is no bar in `[start, f)`: every
  start in `[start, f]` gets the very same bars. For a closed range (every bar's interval over,
  so none may still change) that span is remembered (`BarSpans`), and a later request whose start
  falls in it is answered by the entry already cached, instead of adding another copy of the
  same bars (a wide range is megabytes; a client sweeping `start` would fill the cache).

A span is never widened by guesswork: a start before it or after its first bar is a different
request (bars may exist there, or fewer bars are due), answered by its own call.
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

_NS_PER_S = 1_000_000_000
_RFC3339 = re.compile(
    r"(?P<second>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})"
)


def instant_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (nanoseconds kept, offset applied);
    None for anything else, a bare date included (it names a day, not an instant)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    try:
        # Whole seconds through datetime (it holds only microseconds); the fraction apart.
        whole = datetime.fromisoformat(match["second"] + zone)
    except ValueError:
        return None
    fraction = (match["fraction"] or "").ljust(9, "0")
    ns = int(whole.timestamp()) * _NS_PER_S + int(fraction)
    try:
        instant_text(ns)
    except (ValueError, OverflowError, OSError):
        # An offset took it past year 1 or 9999 in UTC: no one spelling, keyed as given.
        return None
    return ns


def instant_text(ns: int) -> str:
    """One spelling per instant: UTC, nine fraction digits, `Z` (as Alpaca writes times)."""
    seconds, fraction = divmod(ns, _NS_PER_S)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def bound_key(text: str | None) -> str:
    """A `start`/`end` as the cache key part: the instant's one spelling, a date as given
    (its reading is Alpaca's, undocumented), `-` when absent."""
    if text is None:
        return "-"
    ns = instant_ns(text)
    return text if ns is None else instant_text(ns)


# Everything a bars request is besides its start: requests differing only by start share one.
Family = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Span:
    """Starts in [start_ns, first_bar_ns] all get the series cached under `key`."""

    start_ns: int
    first_bar_ns: int
    key: str


class BarSpans:
    """The bounded index of spans, per family, least recently used evicted first.

    Spans of one family never overlap (between a span's start and its first bar there is no
    bar, and every span ends on a bar), so they are kept sorted by first bar and found by
    bisection. A span whose first bar another span shares is the same answer: the wider is kept.
    """

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._families: OrderedDict[Family, list[Span]] = OrderedDict()
        self._entries = 0

    def size(self) -> int:
        """Spans held (the gauge gateway_inprocess_entries{structure="bar_spans"})."""
        return self._entries

    def find(self, family: Family, start_ns: int) -> Span | None:
        """The span whose series answers a request of `family` starting at `start_ns`."""
        spans = self._families.get(family)
        if spans is None:
            return None
        self._families.move_to_end(family)
        at = bisect.bisect_left(spans, start_ns, key=lambda span: span.first_bar_ns)
        if at < len(spans) and spans[at].start_ns <= start_ns:
            return spans[at]
        return None

    def record(self, family: Family, span: Span) -> None:
        """Remember that starts in `span` get the series under `span.key`."""
        if span.first_bar_ns < span.start_ns:
            return  # a bar before the start Alpaca was given: not the endpoint described above
        spans = self._families.setdefault(family, [])
        self._families.move_to_end(family)
        at = bisect.bisect_left(spans, span.first_bar_ns, key=lambda s: s.first_bar_ns)
        if at < len(spans) and spans[at].first_bar_ns == span.first_bar_ns:
            if spans[at].start_ns > span.start_ns:
                spans[at] = span  # the wider span of the same answer
            return
        spans.insert(at, span)
        self._entries += 1
        while self._entries > self._max_entries:
            self._evict()

    def _evict(self) -> None:
        family, spans = next(iter(self._families.items()))
        spans.pop(0)
        self._entries -= 1
        if not spans:
            del self._families[family]
