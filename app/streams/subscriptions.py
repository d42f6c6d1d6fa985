"""What each client subscribed to, and what the one upstream connection must hold for all of
them. Pure: sets in, sets and Alpaca-shaped messages out."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from app.errors import GatewayError
from app.streams.feeds import CHANNEL_OF_TYPE, FOLLOW_TRADES, WILDCARD, Feed, FeedFamily
from app.symbols import option_contract, stock_symbol

# channel -> symbols, in the order the client named them (Alpaca lists them so).
Subscriptions = dict[str, list[str]]
# channel -> symbols: the union the upstream connection holds.
Wanted = dict[str, frozenset[str]]

INVALID_SYNTAX = 400
INVALID_ACTION = 410
STAR_NOT_ALLOWED = 413


@dataclass(frozen=True, slots=True)
class Refusal:
    """A subscribe Alpaca would refuse, with its error code."""

    code: int


def empty(feed: Feed) -> Subscriptions:
    return {channel: [] for channel in feed.channels if channel not in FOLLOW_TRADES}


def requested(
    feed: Feed, message: Mapping[str, object], *, subscribe: bool
) -> dict[str, list[str]] | Refusal:
    """The channels and symbols of a `subscribe`/`unsubscribe` message, checked as Alpaca
    checks them: known channels only (stock channels on an option feed: 410), lists of valid
    symbols (400), no `*` for option quotes (413). Empty or null channels are ignored."""
    asked: dict[str, list[str]] = {}
    channels = empty(feed)
    for channel, symbols in message.items():
        if channel == "action" or symbols is None or symbols == []:
            continue
        if channel not in channels:
            if feed.family is FeedFamily.OPTIONS and channel in CHANNEL_OF_TYPE.values():
                return Refusal(INVALID_ACTION)
            continue  # Alpaca's Go client sends channels a feed does not have, as null
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            return Refusal(INVALID_SYNTAX)
        for symbol in symbols:
            if symbol == WILDCARD:
                if feed.family is FeedFamily.OPTIONS and channel == "quotes" and subscribe:
                    return Refusal(STAR_NOT_ALLOWED)
            elif not _valid_symbol(feed, symbol):
                return Refusal(INVALID_SYNTAX)
        asked[channel] = list(symbols)
    return asked


def _valid_symbol(feed: Feed, symbol: str) -> bool:
    check = option_contract if feed.family is FeedFamily.OPTIONS else stock_symbol
    try:
        # Alpaca does not upper-case stream symbols: `aapl` is a different (unknown) symbol.
        return check(symbol) == symbol
    except GatewayError:
        return False


def applied(
    current: Subscriptions, asked: Mapping[str, list[str]], *, subscribe: bool
) -> Subscriptions:
    """`current` after a subscribe (symbols appended once) or an unsubscribe."""
    # Ordered sets (dicts): a long list of symbols costs its length, not its square.
    changed = {channel: dict.fromkeys(symbols) for channel, symbols in current.items()}
    for channel, symbols in asked.items():
        held = changed[channel]
        for symbol in symbols:
            if subscribe:
                held.setdefault(symbol)
            else:
                held.pop(symbol, None)
    return {channel: list(held) for channel, held in changed.items()}


def symbol_count(subscriptions: Subscriptions) -> int:
    """Symbols held over every channel (one symbol on quotes and trades counts twice)."""
    return sum(len(symbols) for symbols in subscriptions.values())


def subscription_message(feed: Feed, current: Subscriptions) -> dict[str, object]:
    """Alpaca's `subscription` answer: every channel, corrections and cancelErrors listing
    the trades symbols."""
    message: dict[str, object] = {"T": "subscription"}
    for channel in feed.channels:
        source = "trades" if channel in FOLLOW_TRADES else channel
        message[channel] = list(current.get(source, []))
    return message


def union(feed: Feed, every: Iterable[Subscriptions]) -> Wanted:
    """What the upstream connection must hold so every client gets what it asked for."""
    wanted: dict[str, set[str]] = {channel: set() for channel in empty(feed)}
    for subscriptions in every:
        for channel, symbols in subscriptions.items():
            wanted[channel].update(symbols)
    return {channel: frozenset(symbols) for channel, symbols in wanted.items()}


def changes(held: Wanted, wanted: Wanted) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(to subscribe, to unsubscribe) to go from `held` to `wanted`; channels with nothing to
    do are left out (Alpaca's own clients send only non-empty channels)."""
    add: dict[str, list[str]] = {}
    drop: dict[str, list[str]] = {}
    for channel in wanted.keys() | held.keys():
        now, then = wanted.get(channel, frozenset()), held.get(channel, frozenset())
        if now - then:
            add[channel] = sorted(now - then)
        if then - now:
            drop[channel] = sorted(then - now)
    return add, drop


def holds_any(wanted: Wanted) -> bool:
    return any(wanted.values())


def routing(current: Subscriptions) -> Wanted:
    """`current` as sets, for routing each message in constant time."""
    return {channel: frozenset(symbols) for channel, symbols in current.items()}


def wants(routes: Wanted, kind: str | None, symbol: str | None) -> bool:
    """Whether a client with these routes receives a message of type `kind` about `symbol`
    (corrections and cancel/errors go to the symbol's trades subscribers)."""
    channel = CHANNEL_OF_TYPE.get(kind or "")
    if channel is None or symbol is None:
        return False
    held = routes.get(channel)
    return held is not None and (symbol in held or WILDCARD in held)


def without(channels: Mapping[str, Iterable[str]], refused: Wanted) -> dict[str, list[str]]:
    """`channels` less the refused symbols; channels left empty are left out."""
    kept: dict[str, list[str]] = {}
    for channel, symbols in channels.items():
        held_back = refused.get(channel, frozenset())
        if remaining := [s for s in symbols if s not in held_back]:
            kept[channel] = remaining
    return kept


@dataclass(slots=True)
class UpstreamHoldings:
    """What one upstream connection holds at Alpaca, as far as Alpaca's answers tell.

    Alpaca answers each subscribe and unsubscribe, in order, with the whole `subscription` or an
    error; a subscribe it refuses (405 symbol limit exceeded and the like) leaves its set as it
    was. So every message sent waits in `pending` for its answer, a refused subscribe's symbols
    are held back, and they are asked for again only once an unsubscribe may have made room:
    re-asking at every change would be refused again each time, and would take every new
    symbol that fits down with it."""

    held: Wanted = field(default_factory=dict)  # asked for, and not refused
    acknowledged: Wanted = field(default_factory=dict)  # Alpaca's last `subscription`
    refused: Wanted = field(default_factory=dict)
    pending: deque[tuple[bool, dict[str, list[str]]]] = field(default_factory=deque)

    def plan(self, wanted: Wanted) -> list[tuple[str, dict[str, list[str]]]]:
        """The (action, channels) messages that take the connection to `wanted`, unsubscribes
        first (what they free no longer counts against Alpaca's limit); recorded as sent."""
        self.refused = _meet(self.refused, wanted)
        add, drop = changes(self.held, wanted)
        if drop:
            self.refused = {}  # room may be free now: ask again for what was refused
        add = without(add, self.refused)
        messages: list[tuple[str, dict[str, list[str]]]] = []
        if drop:
            messages.append(("unsubscribe", drop))
            self.pending.append((False, drop))
        if add:
            messages.append(("subscribe", add))
            self.pending.append((True, add))
        self.held = _moved(self.held, add, drop)
        return messages

    def confirmed(self, subscription: Wanted) -> None:
        """Alpaca's `subscription`: the answer to the oldest message waiting for one."""
        self.acknowledged = subscription
        if self.pending:
            self.pending.popleft()

    def refusal(self) -> dict[str, list[str]]:
        """Alpaca refused the oldest message waiting for an answer: its symbols, if it was a
        subscribe (held back from now on), else nothing."""
        if not self.pending:
            return {}
        subscribe, channels = self.pending.popleft()
        if not subscribe:
            return {}
        self.held = _moved(self.held, {}, channels)
        self.refused = _moved(self.refused, channels, {})
        return channels


def _meet(refused: Wanted, wanted: Wanted) -> Wanted:
    """What is still refused of what is still wanted."""
    met = {
        channel: symbols & wanted.get(channel, frozenset()) for channel, symbols in refused.items()
    }
    return {channel: symbols for channel, symbols in met.items() if symbols}


def _moved(
    held: Wanted, add: Mapping[str, Iterable[str]], drop: Mapping[str, Iterable[str]]
) -> Wanted:
    """`held` with `add` added and `drop` taken away."""
    moved = {channel: set(symbols) for channel, symbols in held.items()}
    for channel, symbols in add.items():
        moved.setdefault(channel, set()).update(symbols)
    for channel, symbols in drop.items():
        moved.get(channel, set()).difference_update(symbols)
    return {channel: frozenset(symbols) for channel, symbols in moved.items() if symbols}
