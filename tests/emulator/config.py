"""Behaviour switches a test changes through ``GET``/``PUT /_emulator/config``.

Every switch defaults to the behaviour the existing tests rely on: exact stored values, Alpaca's
documented shapes, no random walk. ``POST /_emulator/reset`` goes back to the process's start
configuration (``python -m tests.emulator --random-walk SEED`` starts with a walk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, TypeGuard, cast

from .wire_json import Json, JsonObject

UnknownSymbols = Literal["omit", "null"]
Plan = Literal["free", "unlimited"]
MIN_STEP_MS = 10
MAX_STEP_MS = 3_600_000
DEFAULT_STEP_MS = 1_000


def _is_int(value: Json) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RandomWalk:
    """A seeded walk of latest quotes and trades (see :mod:`random_walk`): one step per
    ``step_ms`` of wall time, the same prices for the same seed and elapsed steps."""

    seed: int
    step_ms: int = DEFAULT_STEP_MS

    def to_wire(self) -> JsonObject:
        """As the control API shows it."""
        return {"seed": self.seed, "step_ms": self.step_ms}

    @classmethod
    def from_wire(cls, value: Json) -> RandomWalk | None:
        """``null`` (off) or ``{"seed": int, "step_ms"?: int}``; ValueError otherwise."""
        if value is None:
            return None
        if not isinstance(value, dict) or not set(value) <= {"seed", "step_ms"}:
            raise ValueError(f"invalid config random_walk={value!r}")
        seed, step_ms = value.get("seed"), value.get("step_ms", DEFAULT_STEP_MS)
        if not _is_int(seed) or not _is_int(step_ms):
            raise ValueError(f"invalid config random_walk={value!r}")
        if not MIN_STEP_MS <= step_ms <= MAX_STEP_MS:
            raise ValueError(f"random_walk.step_ms must be {MIN_STEP_MS}..{MAX_STEP_MS}")
        return cls(seed, step_ms)


@dataclass(frozen=True)
class Config:
    """The switches. ``unknown_symbols``: how multi-symbol latest/snapshot answers show a valid
    symbol with no data ("omit" the key, or send ``SYM: null``). ``plan``: "free" denies
    ``feed=sip`` on latest and snapshot endpoints, and ``feed=opra`` on option data, with 403, as
    Alpaca's Basic plan does. ``sdk_shapes``: orders and option contracts in the shapes
    alpaca-py's own tests record (see :mod:`sdk_shapes`). ``order_extra_fields``: members added
    to every order answer. ``random_walk``: None, or latest quotes and trades that move.
    """

    unknown_symbols: UnknownSymbols = "omit"
    plan: Plan = "free"
    rate_limit_per_minute: int = 10_000
    # Alpaca may end a historical page before `limit` and hand out a token; tests of a client's
    # pagination set this to force short pages.
    max_page_size: int | None = None
    sdk_shapes: bool = False
    order_extra_fields: JsonObject = field(default_factory=dict)
    random_walk: RandomWalk | None = None
    # Streams (see streams.py): how long a feed's one connection slot stays taken after an
    # unclean disconnect (Alpaca: about 90 s), how long a new connection may take to
    # authenticate (Alpaca: 10 s), and how many trades+quotes symbols one connection may hold
    # (None: no limit; Alpaca's Basic plan allows 30 on iex).
    stream_slot_release_ms: int = 90_000
    stream_auth_timeout_ms: int = 10_000
    stream_symbol_limit: int | None = None

    def to_wire(self) -> JsonObject:
        """The configuration as the control API shows it."""
        return {
            "unknown_symbols": self.unknown_symbols,
            "plan": self.plan,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "max_page_size": self.max_page_size,
            "sdk_shapes": self.sdk_shapes,
            "order_extra_fields": dict(self.order_extra_fields),
            "random_walk": None if self.random_walk is None else self.random_walk.to_wire(),
            "stream_slot_release_ms": self.stream_slot_release_ms,
            "stream_auth_timeout_ms": self.stream_auth_timeout_ms,
            "stream_symbol_limit": self.stream_symbol_limit,
        }

    def merged(self, changes: Mapping[str, Json]) -> Config:
        """A copy with ``changes`` applied; ValueError names the first bad key or value."""
        config = self
        for name, value in changes.items():
            if name == "unknown_symbols" and value in ("omit", "null"):
                config = replace(config, unknown_symbols=cast(UnknownSymbols, value))
            elif name == "plan" and value in ("free", "unlimited"):
                config = replace(config, plan=cast(Plan, value))
            elif name == "rate_limit_per_minute" and _is_int(value) and value >= 0:
                config = replace(config, rate_limit_per_minute=value)
            elif name == "max_page_size" and value is None:
                config = replace(config, max_page_size=None)
            elif name == "max_page_size" and _is_int(value) and value > 0:
                config = replace(config, max_page_size=value)
            elif name == "sdk_shapes" and isinstance(value, bool):
                config = replace(config, sdk_shapes=value)
            elif name == "order_extra_fields" and isinstance(value, dict):
                config = replace(config, order_extra_fields=dict(value))
            elif name == "random_walk":
                config = replace(config, random_walk=RandomWalk.from_wire(value))
            elif name == "stream_slot_release_ms" and _is_int(value) and value >= 0:
                config = replace(config, stream_slot_release_ms=value)
            elif name == "stream_auth_timeout_ms" and _is_int(value) and value > 0:
                config = replace(config, stream_auth_timeout_ms=value)
            elif name == "stream_symbol_limit" and (
                value is None or (_is_int(value) and value > 0)
            ):
                config = replace(config, stream_symbol_limit=value)
            else:
                raise ValueError(f"invalid config {name}={value!r}")
        return config
