"""Alpaca's timestamps must be real moments: the right shape is not enough."""

from __future__ import annotations

import pytest

from app.alpaca import wire
from app.errors import ErrorCode, GatewayError


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-30T00:00:00Z",
        "2024-01-01T25:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:61:00Z",
    ],
)
def test_impossible_timestamps_are_bad_responses(text: str) -> None:
    with pytest.raises(GatewayError) as raised:
        wire.timestamp({"t": text}, "t", "quote")
    assert raised.value.code is ErrorCode.UPSTREAM_BAD_RESPONSE


@pytest.mark.parametrize(
    "text", ["2024-02-29T23:59:59.999999999Z", "2025-06-24T14:15:22-04:00", "2022-08-17T10:07:40Z"]
)
def test_real_timestamps_are_kept_verbatim(text: str) -> None:
    assert wire.timestamp({"t": text}, "t", "quote") == text
