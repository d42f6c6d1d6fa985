"""The sweep's "never placed" bound must outlast any submit: Alpaca's "not found" proves an order
absent only once no submit can still be sending it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_defaults_leave_a_wide_margin_over_the_longest_submit() -> None:
    defaults = settings()
    # A lookup of an earlier attempt, the POST and 4 reconcile lookups of 5 s, each after at
    # most 2 s waiting for its cell of the rate budget, waits of 0.25 + 0.5 + 1 s between the
    # lookups.
    assert defaults.order_submit_max_s == (5 + 2) * 6 + 1.75
    assert defaults.order_sweep_never_placed_after_s == 120
    assert defaults.order_sweep_min_age_s <= defaults.order_sweep_never_placed_after_s


def test_a_bound_shorter_than_a_submit_is_refused() -> None:
    with pytest.raises(ValidationError, match="ORDER_SWEEP_NEVER_PLACED_AFTER_S must be longer"):
        settings(order_sweep_never_placed_after_s=30)


def test_a_longer_trading_timeout_needs_a_longer_bound() -> None:
    with pytest.raises(ValidationError, match=r"\(193.75 s from TRADING_TIMEOUT_S"):
        settings(trading_timeout_s=30)
    accepted = settings(trading_timeout_s=30, order_sweep_never_placed_after_s=300)
    assert accepted.order_sweep_never_placed_after_s == 300


def test_a_bound_shorter_than_the_minimum_age_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least ORDER_SWEEP_MIN_AGE_S"):
        settings(order_sweep_min_age_s=600)
