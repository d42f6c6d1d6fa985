"""Symbols are validated before they go anywhere near Alpaca, and the URL builder is a last guard.

The accepted shape is the contract's: `^[A-Z][A-Z0-9.\\-]{0,9}$` after upper-casing.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.alpaca.breaker import BreakerConfig, CircuitBreaker
from app.alpaca.transport import AlpacaTransport
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics
from app.symbols import option_contract, stock_symbol

# Copied from the contract (api-contract.md, "Endpoints"), not from app/symbols.py.
CONTRACT_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
FORBIDDEN_CHARACTERS = ("/", "?", "#", "%", "\\", ":")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("AAPL", "AAPL"),
        ("aapl", "AAPL"),
        ("BRK.B", "BRK.B"),
        ("brk.b", "BRK.B"),
        ("BF-B", "BF-B"),
        ("A", "A"),
        ("ABCDEFGHIJ", "ABCDEFGHIJ"),  # ten characters: the longest the contract allows
        ("SPY5", "SPY5"),
    ],
)
def test_real_symbols_are_accepted_upper_cased(raw: str, expected: str) -> None:
    assert stock_symbol(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "..",
        "../x",
        "..%2F",
        "A/B",
        "1ABC",
        "-AAPL",
        ".AAPL",
        "AAPL?x",
        "AAPL#x",
        "AAPL&symbols=TSLA",
        "AAPL,TSLA",  # one symbol at a time: a comma would smuggle a second one upstream
        "A B",
        "A\tB",
        "%2e%2e",
        "ABCDEFGHIJK",
        "ÄAPL",
        "\uff21\uff21\uff30\uff2c",  # full-width letters
        "\u0410APL",  # Cyrillic A
        "AAPL\u200b",  # zero-width space
        "AAPL\x00",
        "AAPL:TSLA",
        "AAPL_B",
    ],
)
def test_anything_else_is_a_validation_error(raw: str) -> None:
    with pytest.raises(GatewayError) as exc_info:
        stock_symbol(raw)

    assert exc_info.value.code is ErrorCode.VALIDATION_ERROR
    assert exc_info.value.code.status == 422


def test_validation_error_names_the_symbol_parameter() -> None:
    with pytest.raises(GatewayError) as exc_info:
        stock_symbol("../x")

    params = exc_info.value.extensions["invalid_params"]
    assert [p["name"] for p in params] == ["symbol"]


@given(st.text(max_size=24))
def test_anything_accepted_has_the_contract_shape(raw: str) -> None:
    try:
        symbol = stock_symbol(raw)
    except GatewayError as exc:
        rejection = exc.code
    else:
        rejection = None
    if rejection is not None:
        assert rejection is ErrorCode.VALIDATION_ERROR
        return
    assert CONTRACT_SYMBOL.fullmatch(symbol)
    assert not any(c in symbol for c in FORBIDDEN_CHARACTERS)
    assert not any(c.isspace() for c in symbol)
    assert symbol.isascii()
    # The symbol asked for is the symbol answered: only ASCII case changes, nothing else.
    assert raw.isascii()
    assert symbol == raw.strip().upper()


# Unicode case mapping makes ASCII out of other letters: each of these once reached Alpaca as
# the instrument on the right, and `\u017fpy` was answered with SPY's quote.
@pytest.mark.parametrize(
    ("raw", "would_have_meant"),
    [
        ("\u017fpy", "SPY"),  # LATIN SMALL LETTER LONG S
        ("\ufb01", "FI"),  # LATIN SMALL LIGATURE FI
        ("a\u00df", "ASS"),  # LATIN SMALL LETTER SHARP S
        ("\u0131bm", "IBM"),  # LATIN SMALL LETTER DOTLESS I
    ],
)
def test_non_ascii_never_becomes_another_symbol(raw: str, would_have_meant: str) -> None:
    assert raw.upper() == would_have_meant  # what Python's upper() makes of it
    with pytest.raises(GatewayError) as stock:
        stock_symbol(raw)
    with pytest.raises(GatewayError) as option:
        option_contract(raw + "250117C00200000")

    assert stock.value.code is ErrorCode.VALIDATION_ERROR
    assert option.value.code is ErrorCode.VALIDATION_ERROR


@given(st.text(max_size=24))
def test_an_accepted_option_contract_is_the_ascii_text_asked_for(raw: str) -> None:
    try:
        contract = option_contract(raw)
    except GatewayError as exc:
        rejection: ErrorCode | None = exc.code
    else:
        rejection = None
    if rejection is not None:
        assert rejection is ErrorCode.VALIDATION_ERROR
        return
    assert raw.isascii()
    assert contract == raw.strip().upper()


# Listed-symbol shapes: a root, then share-class or when-issued suffixes (BRK.B, BF-B, GOOG.WI).
@given(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,3}(?:[.\-][A-Za-z0-9]{1,2}){0,2}", fullmatch=True))
def test_every_listed_symbol_shape_is_accepted(raw: str) -> None:
    assert stock_symbol(raw) == raw.upper()


# --- the transport's last guard ---------------------------------------------------------------
@pytest.fixture
def transport() -> AlpacaTransport:
    breaker = CircuitBreaker("trading", BreakerConfig())
    return AlpacaTransport("trading", "https://paper-api.alpaca.markets", None, breaker, Metrics())


@pytest.mark.parametrize("segment", ["..", ".", ""])
def test_url_refuses_a_segment_that_would_climb_the_path(
    transport: AlpacaTransport, segment: str
) -> None:
    with pytest.raises(ValueError, match="segment"):
        transport.url("v2", "assets", segment)


def test_slash_in_a_segment_stays_inside_one_segment(transport: AlpacaTransport) -> None:
    url = transport.url("v2", "assets", "A/B")

    assert url.raw_parts == ("/", "v2", "assets", "A%2FB")
    assert url.host == "paper-api.alpaca.markets"


@pytest.mark.parametrize(
    ("segment", "raw_segment"),
    [
        ("%2e%2e", "%252e%252e"),  # already-encoded dots stay literal text
        ("AAPL?x=1", "AAPL%3Fx%3D1"),  # no query smuggled into the path
        ("AAPL#frag", "AAPL%23frag"),
        ("../x", "..%2Fx"),
    ],
)
def test_hostile_segment_is_percent_encoded_not_interpreted(
    transport: AlpacaTransport, segment: str, raw_segment: str
) -> None:
    url = transport.url("v2", "assets", segment)

    assert url.raw_parts == ("/", "v2", "assets", raw_segment)
    assert url.query_string == ""
    assert url.fragment == ""


def test_ordinary_path_is_built_on_the_base_url(transport: AlpacaTransport) -> None:
    assert str(transport.url("v2", "assets", "BRK.B")) == (
        "https://paper-api.alpaca.markets/v2/assets/BRK.B"
    )
