"""The bare-stack reference: Starlette answering with the recorded bytes of a cached quote.

`tests.performance.bare:app` is served by the same server, worker count and flags as the
gateway, so (cached quote) / (bare) is the share of the stack's throughput the gateway keeps.
The bench records one real cached-quote answer of the gateway (body, content type and the
gateway's own headers, with a request id of the same length) into a JSON file and names it in
BENCH_BARE_ANSWER; the app routes the gateway's path template and returns those bytes as they
are. Built on first access, like `app.main:app`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER_ENV = "BENCH_BARE_ANSWER"
ROUTE = "/v1/stocks/{symbol}/quote"


def record(path: Path, body: bytes, headers: dict[str, str]) -> None:
    """Write what `create_app` reads: the body (latin-1 text keeps every byte) and headers."""
    path.write_text(json.dumps({"body": body.decode("latin-1"), "headers": headers}))


def create_app(answer_path: Path) -> Starlette:
    answer = json.loads(answer_path.read_text())
    body: bytes = answer["body"].encode("latin-1")
    headers: dict[str, str] = answer["headers"]
    media_type = headers.pop("content-type")

    async def quote(_: Request) -> Response:
        return Response(body, media_type=media_type, headers=headers)

    async def health(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route(ROUTE, quote), Route("/health", health)])


def __getattr__(name: str) -> Any:
    if name == "app":
        application = create_app(Path(os.environ[ANSWER_ENV]))
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
