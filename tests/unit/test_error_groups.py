"""Every code's place in the named groups, one row per code, written out here by hand.

The groups decide behaviour in several places (what the breaker counts, what a stale value may
cover, what is remembered, which failures prove an order was not placed, what operators keep), so
a code that moves between groups changes the gateway: this table makes that a visible diff.
"""

from __future__ import annotations

import pytest

from app.errors import (
    ALPACA_UNWELL,
    ANSWERED_WITHOUT_ALPACA,
    HELD_BACK,
    OPERATOR_ATTENTION,
    REFUSED_BY_ALPACA,
    SYMBOL_FACTS,
    ErrorCode,
)

GROUPS = {
    "unwell": ALPACA_UNWELL,
    "held_back": HELD_BACK,
    "without_alpaca": ANSWERED_WITHOUT_ALPACA,
    "fact": SYMBOL_FACTS,
    "refused": REFUSED_BY_ALPACA,
    "operator": OPERATOR_ATTENTION,
}

# code -> the groups it belongs to
TABLE: dict[str, set[str]] = {
    "VALIDATION_ERROR": {"refused"},
    "UNAUTHENTICATED": set(),
    "FORBIDDEN": set(),
    "RATE_LIMITED": set(),
    "SYMBOL_NOT_FOUND": {"fact"},
    "CONTRACT_NOT_FOUND": {"fact"},
    "NO_DATA": {"fact"},
    "DATA_STALE": set(),
    "UPSTREAM_UNAVAILABLE": {"unwell", "operator"},
    "UPSTREAM_TIMEOUT": {"unwell", "operator"},
    "UPSTREAM_RATE_LIMITED": {"held_back", "without_alpaca", "operator"},
    "CIRCUIT_OPEN": {"held_back", "without_alpaca"},
    "UPSTREAM_AUTH_FAILED": {"refused", "operator"},
    "FEED_NOT_PERMITTED": {"refused"},
    "UPSTREAM_BAD_RESPONSE": {"unwell", "operator"},
    "UPSTREAM_NOT_CONFIGURED": {"without_alpaca"},
    "ORDER_REJECTED": set(),
    "IDEMPOTENCY_CONFLICT": set(),
    "ORDER_STATE_UNKNOWN": {"operator"},
    "ORDER_NOT_FOUND": set(),
    "ORDER_NOT_CANCELABLE": set(),
    "AUDIT_UNAVAILABLE": {"operator"},
    "ROUTE_NOT_FOUND": set(),
    "METHOD_NOT_ALLOWED": set(),
    "PAYLOAD_TOO_LARGE": set(),
    "UNSUPPORTED_MEDIA_TYPE": set(),
    "INTERNAL": {"operator"},
}


def test_the_table_covers_every_code() -> None:
    assert set(TABLE) == {code.name for code in ErrorCode}


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_each_code_is_in_exactly_its_groups(code: ErrorCode) -> None:
    assert {name for name, members in GROUPS.items() if code in members} == TABLE[code.name]


def test_a_fact_about_a_symbol_is_never_a_sign_of_sickness() -> None:
    assert not SYMBOL_FACTS & (ALPACA_UNWELL | ANSWERED_WITHOUT_ALPACA)
