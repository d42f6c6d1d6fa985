"""A bug answers INTERNAL problem+json carrying the request id, with no stack trace or message
in the body, and the log line has the id and the traceback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from loguru import logger

from app.main import create_app
from tests.conftest import gateway_settings
from tests.emulator.process import EmulatorProcess

pytestmark = pytest.mark.integration


async def test_unhandled_exception_is_internal_with_the_request_id(
    emulator_process: EmulatorProcess,
) -> None:
    app = create_app(gateway_settings(emulator_process, log_level="INFO", log_json=True))

    @app.get("/v1/boom")  # a route with a bug, on the real app and its real middleware
    async def boom() -> None:
        raise RuntimeError("secret detail that must not leave the process")

    lines: list[str] = []
    sink = logger.add(lines.append, format="{message} | {extra[request_id]} | {exception}")
    try:
        async with app.router.lifespan_context(app) as state:

            async def with_state(scope: Any, receive: Any, send: Any) -> None:
                scope["state"] = dict(state or {})
                await app(scope, receive, send)

            transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/v1/boom", headers={"X-Request-ID": "bug-42"})
    finally:
        logger.remove(sink)

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "bug-42"
    body = response.json()
    assert body["code"] == "INTERNAL"
    assert body["request_id"] == "bug-42"
    assert "secret detail" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)
    logged = [line for line in lines if "unhandled RuntimeError" in line]
    assert logged, lines
    assert "bug-42" in logged[0]
    assert "Traceback" in logged[0]
