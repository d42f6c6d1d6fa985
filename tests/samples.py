"""Real-shaped Alpaca wire values shared by the integration tests."""

from __future__ import annotations

from typing import Any

# A stock quote as Alpaca's latest-quotes endpoint sends it: nanosecond time, sub-penny ask.
QUOTE: dict[str, Any] = {
    "t": "2026-11-20T15:59:59.123456789Z",
    "bp": 101.25,
    "bs": 3,
    "bx": "V",
    "ap": 101.2575,
    "as": 2,
    "ax": "V",
    "c": ["R"],
    "z": "C",
}
