"""A scenario's ``streams`` section: ticks pushed onto a feed at set times after the load.

```yaml
streams:
  - at_s: 1                      # seconds after the scenario is loaded (0: at once)
    feed: iex                    # iex, sip, delayed_sip, test, indicative or opra
    messages:                    # Alpaca wire messages, checked as stream_shapes.py says
      - {T: q, S: AAPL, bx: V, bp: 229.85, bs: 2, ax: V, ap: 229.9, as: 1, c: [R], z: C, t: now}
```

Relative times (``now``, ``-250ms``) in a message are relative to the moment it is pushed
(``at_s`` after the load), so a tick's ``t`` is never older than the scenario says.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .scenario_shapes import ScenarioError
from .stream_paths import BY_FEED, StreamFamily
from .stream_shapes import check_messages
from .wire_json import Json, JsonObject

PUSH_FIELDS = ("at_s", "feed", "messages")
_NS_PER_S = 1_000_000_000
MARKET_DATA_FEEDS = tuple(e.feed for e in BY_FEED.values() if e.family is not StreamFamily.TRADING)


@dataclass(frozen=True)
class TimedPush:
    """Messages (checked, times resolved) pushed onto ``feed`` ``at_s`` after the load."""

    at_s: Decimal
    feed: str
    messages: list[JsonObject]


def timed_pushes(value: Json, now_ns: int) -> tuple[TimedPush, ...]:
    """The ``streams`` section checked and resolved for a load at ``now_ns``."""
    if not isinstance(value, list):
        raise ScenarioError("streams", "must be a list of {at_s, feed, messages}")
    return tuple(_push(item, f"streams[{n}]", now_ns) for n, item in enumerate(value))


def _push(value: Json, where: str, now_ns: int) -> TimedPush:
    if not isinstance(value, dict):
        raise ScenarioError(where, "must be an object with at_s, feed and messages")
    for key in value:
        if key not in PUSH_FIELDS:
            raise ScenarioError(
                f"{where}.{key}", f"unknown field; expected {', '.join(PUSH_FIELDS)}"
            )
    at_s = value.get("at_s")
    if isinstance(at_s, bool) or not isinstance(at_s, (int, Decimal)) or at_s < 0:
        raise ScenarioError(f"{where}.at_s", "must be a number of seconds >= 0 (since the load)")
    feed = value.get("feed")
    if not isinstance(feed, str) or feed not in MARKET_DATA_FEEDS:
        raise ScenarioError(f"{where}.feed", f"must be one of {', '.join(MARKET_DATA_FEEDS)}")
    push_ns = now_ns + int(Decimal(at_s) * _NS_PER_S)
    family = BY_FEED[feed].family
    messages = check_messages(value.get("messages"), family, f"{where}.messages", push_ns)
    return TimedPush(Decimal(at_s), feed, messages)
