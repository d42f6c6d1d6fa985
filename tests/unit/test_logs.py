"""Logs: one JSON object per line, and no secret ever reaches a sink.

setup_logging() configures the process-wide loguru logger and stdlib logging; the `json_logs`
fixture puts both back as they were after each test.
"""

from __future__ import annotations

import io
import json
import logging
import string
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loguru import logger

from app.logs import Redactor, setup_logging

# Made-up credentials shaped like Alpaca paper keys: the redaction tests need realistic text.
FAKE_KEY_ID = "PKTESTQ4X7R2M9W3E8A1"
FAKE_SECRET = "Zk3vT9qLm2Xw8Rb5Np7Yc4Hd6Jf1Gs0Ae3Ui9Oo2"
STDLIB_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp", "asyncpg", "redis")


# --- the redactor -----------------------------------------------------------------------------
def test_configured_secrets_are_removed() -> None:
    redactor = Redactor([FAKE_KEY_ID, FAKE_SECRET])

    text = redactor.redact(f"upstream refused key {FAKE_KEY_ID} / {FAKE_SECRET}, retrying")

    assert FAKE_KEY_ID not in text
    assert FAKE_SECRET not in text
    assert text.startswith("upstream refused key ")


def test_a_secret_containing_another_is_removed_whole() -> None:
    short = FAKE_SECRET[:12]
    redactor = Redactor([short, FAKE_SECRET])

    text = redactor.redact(f"secret {FAKE_SECRET} end")

    assert FAKE_SECRET[12:] not in text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("secret=s3cr3tValue99", "s3cr3tValue99"),
        ("APCA-API-SECRET-KEY: Zk3vT9qLm2Xw8Rb5", "Zk3vT9qLm2Xw8Rb5"),
        ("apca-api-secret-key=Zk3vT9qLm2Xw8Rb5", "Zk3vT9qLm2Xw8Rb5"),
        ("APCA-API-KEY-ID: PKTESTQ4X7R2M9W3", "PKTESTQ4X7R2M9W3"),
        ("Authorization: Bearer gw_live_8f2k4m1q9z7x", "gw_live_8f2k4m1q9z7x"),
        ("authorization: bearer gw_live_8f2k4m1q9z7x", "gw_live_8f2k4m1q9z7x"),
        ("X-API-Key: gw_live_8f2k4m1q9z7x", "gw_live_8f2k4m1q9z7x"),
        ('{"secret": "s3cr3tValue99", "symbol": "AAPL"}', "s3cr3tValue99"),
        ("headers={'APCA-API-SECRET-KEY': 'Zk3vT9qLm2Xw8Rb5'}", "Zk3vT9qLm2Xw8Rb5"),
        ("redis://user:pw@host password=hunter2hunter2", "hunter2hunter2"),
        ("Authorization: Basic UEtURVNUOlprM3ZUOXFMbTI=", "UEtURVNUOlprM3ZUOXFMbTI="),
    ],
    ids=[
        "secret=",
        "alpaca-secret-header",
        "alpaca-secret-lowercase",
        "alpaca-key-id-header",
        "bearer",
        "bearer-lowercase",
        "x-api-key",
        "json-member",
        "python-dict-repr",
        "password=",
        "basic-auth",
    ],
)
def test_secret_shaped_values_are_removed_without_configuration(text: str, secret: str) -> None:
    redacted = Redactor([]).redact(text)

    assert secret not in redacted
    assert "***" in redacted


def test_ordinary_market_text_is_left_alone() -> None:
    text = "GET /v1/stocks/AAPL/quote 200 bid_price=172.62 feed=iex cache=hit"

    assert Redactor([FAKE_SECRET]).redact(text) == text


SECRET_ALPHABET = string.ascii_letters + string.digits


@given(
    secrets=st.lists(st.text(SECRET_ALPHABET, min_size=8, max_size=48), min_size=1, max_size=3),
    around=st.lists(st.text(max_size=40), min_size=4, max_size=4),
)
def test_configured_secrets_never_survive_redaction(secrets: list[str], around: list[str]) -> None:
    text = around[0] + around[1].join(secrets) + around[2] + secrets[0] + around[3]

    redacted = Redactor(secrets).redact(text)

    for secret in secrets:
        assert secret not in redacted


# --- the JSON log sink ------------------------------------------------------------------------
@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """setup_logging() into a StringIO; loguru and stdlib logging restored afterwards."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.propagate, lg.level)
        for name in STDLIB_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    sink = io.StringIO()
    setup_logging(level="INFO", json_lines=True, secrets=[FAKE_KEY_ID, FAKE_SECRET], sink=sink)
    try:
        yield sink
    finally:
        logger.remove()
        logger.configure(patcher=None, extra={})
        logger.add(lambda message: sys.stderr.write(message))
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, propagate, level) in saved.items():
            stdlib_logger = logging.getLogger(name)
            stdlib_logger.handlers[:] = handlers
            stdlib_logger.propagate = propagate
            stdlib_logger.setLevel(level)


def lines(sink: io.StringIO) -> list[dict[str, Any]]:
    text = sink.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_each_log_call_is_one_json_object_per_line(json_logs: io.StringIO) -> None:
    logger.info("cache warmed with {} symbols", 3)
    logger.warning("redis unavailable; serving without the cache")
    with logger.contextualize(request_id="5f0c6c1e2b7d4a0e"):
        logger.info("GET /v1/stocks/{symbol}/quote 200")

    records = lines(json_logs)

    assert len(records) == 3
    for record in records:
        assert {"ts", "level", "msg", "request_id"} <= set(record)
        assert datetime.fromisoformat(record["ts"]).tzinfo is not None
    assert records[0]["msg"] == "cache warmed with 3 symbols"
    assert records[0]["level"] == "INFO"
    assert records[1]["level"] == "WARNING"
    assert records[0]["request_id"] == "-"
    assert records[2]["request_id"] == "5f0c6c1e2b7d4a0e"
    assert records[2]["msg"] == "GET /v1/stocks/{symbol}/quote 200"  # braces kept verbatim


def test_level_below_the_configured_one_is_dropped(json_logs: io.StringIO) -> None:
    logger.debug("noisy detail")
    logger.info("kept")

    assert [r["msg"] for r in lines(json_logs)] == ["kept"]


def test_secrets_are_redacted_in_message_and_bound_fields(json_logs: io.StringIO) -> None:
    logger.bind(upstream_headers=f"APCA-API-KEY-ID: {FAKE_KEY_ID}").info(
        "Alpaca refused {}", FAKE_SECRET
    )

    output = json_logs.getvalue()

    assert FAKE_SECRET not in output
    assert FAKE_KEY_ID not in output
    assert len(lines(json_logs)) == 1


def test_exception_is_still_one_line_with_its_type_and_no_secret(json_logs: io.StringIO) -> None:
    def call_alpaca(secret_key: str) -> None:
        headers = {"APCA-API-SECRET-KEY": secret_key}
        raise ConnectionError(f"refused with headers {headers}")

    try:
        call_alpaca(FAKE_SECRET)
    except ConnectionError:
        logger.exception("unhandled ConnectionError on /v1/stocks/AAPL/quote")

    output = json_logs.getvalue()
    records = lines(json_logs)

    assert len(records) == 1
    assert records[0]["level"] == "ERROR"
    assert records[0]["exc_type"] == "ConnectionError"
    assert FAKE_SECRET not in output


def test_stdlib_logging_is_routed_into_the_json_sink_redacted(json_logs: io.StringIO) -> None:
    logging.getLogger("aiohttp").warning("retrying with secret=%s", FAKE_SECRET)

    records = lines(json_logs)

    assert len(records) == 1
    assert records[0]["level"] == "WARNING"
    assert FAKE_SECRET not in json_logs.getvalue()
    assert records[0]["msg"].startswith("retrying with secret=")
