"""What each injected fault does to a request.

``run_fault`` either answers in the fault's place or returns None to let the request go on
(after a latency sleep or a released hang). Answers that Alpaca's own servers would send
(500, 429, the 200s with broken bodies) carry the X-RateLimit headers; the 502/503/504 pages
come from an edge proxy in front of Alpaca and carry none, as such proxies do.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from aiohttp import web

from .fault_bodies import broken_body
from .faults import Fault, FaultKind
from .responses import ApiFamily, json_response, too_many_requests
from .routes import AlpacaRoute
from .state import STATE_KEY
from .wire_json import JsonObject, dumps

_HTML_502 = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""
_TEXT_503 = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
_HTML_504 = """<html>
<head><title>504 Gateway Time-out</title></head>
<body>
<center><h1>504 Gateway Time-out</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


def _internal_error(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    rate_headers = state.rate_limiter.peek(request.headers.get("APCA-API-KEY-ID", "")).headers()
    body: JsonObject = {"message": "internal server error"}
    return json_response(body, status=500, headers=rate_headers)


async def run_fault_after(
    request: web.Request, fault: Fault, answer: web.StreamResponse
) -> web.StreamResponse:
    """Apply an ``accept_then_*`` fault to a request that was processed in full."""
    match fault.kind:
        case FaultKind.ACCEPT_THEN_RESET:
            return _reset_connection(request)
        case FaultKind.ACCEPT_THEN_HANG:
            # Ends when faults are cleared (then the real answer goes out) or the client leaves.
            await request.app[STATE_KEY].faults.wait_for_release()
            return answer
        case FaultKind.ACCEPT_THEN_500:
            return _internal_error(request)
        case _:
            raise ValueError(f"{fault.kind.value} is not an accept_then_* fault")


async def run_fault(
    request: web.Request, fault: Fault, route: AlpacaRoute | None, family: ApiFamily
) -> web.StreamResponse | None:
    """Apply ``fault``: an answer that replaces Alpaca's, or None to continue normally.

    ``accept_then_*`` faults are not handled here: the pipeline lets the request through and
    then calls :func:`run_fault_after`.
    """
    state = request.app[STATE_KEY]
    rate_headers = state.rate_limiter.peek(request.headers.get("APCA-API-KEY-ID", "")).headers()
    match fault.kind:
        case FaultKind.LATENCY:
            await asyncio.sleep(fault.delay_ms / 1000)
            return None
        case FaultKind.HANG:
            await state.faults.wait_for_release()
            return None
        case FaultKind.RESET:
            return _reset_connection(request)
        case FaultKind.STATUS_500:
            return _internal_error(request)
        case FaultKind.STATUS_502_HTML:
            return web.Response(status=502, text=_HTML_502, content_type="text/html")
        case FaultKind.STATUS_503:
            return web.Response(status=503, text=_TEXT_503, content_type="text/plain")
        case FaultKind.STATUS_504:
            return web.Response(status=504, text=_HTML_504, content_type="text/html")
        case FaultKind.RATE_LIMITED:
            error = too_many_requests(family)
            headers = {
                "X-RateLimit-Limit": str(state.config.rate_limit_per_minute),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + fault.retry_after_s),
            }
            return json_response(error.body, status=error.status, headers=headers)
        case FaultKind.MALFORMED_JSON:
            text = dumps(broken_body(request, route, None))
            # Cut mid-way so the text is never complete JSON, whatever the endpoint.
            truncated = text[: max(len(text) // 2, 1)]
            return web.Response(
                text=truncated, content_type="application/json", headers=rate_headers
            )
        case FaultKind.SCHEMA_MISSING_T | FaultKind.SCHEMA_WRONG_TYPE:
            return json_response(broken_body(request, route, fault.kind), headers=rate_headers)
        case _:
            return None  # accept_then_*: see run_fault_after


def _reset_connection(request: web.Request) -> web.StreamResponse:
    """Close with a TCP RST: SO_LINGER 0 makes the kernel drop the socket without a FIN."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # Nothing can be sent any more; aiohttp drops this answer on the closed transport.
    return web.Response(status=500)
