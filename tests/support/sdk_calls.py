"""The alpaca-py calls proven to work through the gateway's Alpaca face, listed in the README.

A face test that drives an SDK call through the gateway marks itself `@proves("Client.method")`.
The README's list (between the two markers below) is exactly that set: a test compares them, and
`python -m tests.support.sdk_calls` rewrites the list after the tests change.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

README = Path(__file__).resolve().parents[2] / "README.md"
START = "<!-- sdk-calls:start (python -m tests.support.sdk_calls) -->"
END = "<!-- sdk-calls:end -->"
# The modules whose tests prove calls; imported so their decorators run.
FACE_TESTS = ("tests.integration.test_alpaca_face",)
_CALL = re.compile(r"^(StockHistoricalDataClient|OptionHistoricalDataClient|TradingClient)\.\w+$")

PROVEN: dict[str, set[str]] = {}
T = TypeVar("T", bound=Callable[..., object])


def proves(*calls: str) -> Callable[[T], T]:
    """Record that the decorated test drives each of `calls` through the gateway."""

    def register(test: T) -> T:
        for call in calls:
            if not _CALL.match(call):
                raise ValueError(f"not an alpaca-py client method: {call}")
            PROVEN.setdefault(call, set()).add(getattr(test, "__name__", repr(test)))
        return test

    return register


def proven_calls() -> dict[str, set[str]]:
    for module in FACE_TESTS:
        importlib.import_module(module)
    # The registry the tests wrote to: this module under its own name, even when it runs as
    # __main__ (a second copy of the module, with an empty registry of its own).
    registry: dict[str, set[str]] = importlib.import_module(__spec__.name).PROVEN
    return registry


def listing(calls: dict[str, set[str]]) -> str:
    """The README block: one line per call, grouped by client, with the tests that prove it."""
    lines = [START]
    for call in sorted(calls):
        tests = ", ".join(f"`{name}`" for name in sorted(calls[call]))
        lines.append(f"- `{call}` — {tests}")
    lines.append(END)
    return "\n".join(lines)


def readme_listing(text: str) -> str | None:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(END)]


def main() -> None:
    text = README.read_text()
    current = readme_listing(text)
    if current is None:
        raise SystemExit(f"README.md has no {START!r} … {END!r} block to rewrite")
    README.write_text(text.replace(current, listing(proven_calls())))


if __name__ == "__main__":
    main()
