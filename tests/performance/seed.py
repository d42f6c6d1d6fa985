"""What the emulator serves during the bench: fixed quotes, fresh timestamps."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any


def rfc3339_now() -> str:
    now_ns = time.time_ns()
    seconds, fraction = divmod(now_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def quote_wire(price: float) -> dict[str, Any]:
    """An Alpaca latest-quote object (the emulator's wire shape) around ``price``."""
    return {
        "t": rfc3339_now(),
        "bx": "V",
        "bp": round(price - 0.02, 2),
        "bs": 2,
        "ax": "V",
        "ap": round(price + 0.03, 2),
        "as": 1,
        "c": ["R"],
        "z": "C",
    }
