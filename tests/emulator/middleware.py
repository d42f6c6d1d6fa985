"""The path every Alpaca request takes: record, faults, auth, rate limit, handler.

Control paths (``/_emulator/...``) skip all of it. Faults come first because they stand for
failures in front of Alpaca (network, proxy, overload); a ``latency`` or released ``hang``
fault then lets the request continue through auth and the budget like any other. The
``accept_then_*`` faults are the exception: the request is processed in full (an order is
created) and only then is its answer lost.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from .fault_answers import run_fault, run_fault_after
from .ratelimit import RateStatus
from .responses import (
    AlpacaError,
    ApiFamily,
    family_of,
    json_response,
    too_many_requests,
    unauthorized,
)
from .routes import route_of
from .state import STATE_KEY, EmulatorState, RequestRecord
from .stream_paths import is_stream_path

CONTROL_PREFIX = "/_emulator"
KEY_HEADER = "APCA-API-KEY-ID"
SECRET_HEADER = "APCA-API-SECRET-KEY"


def _authorized(request: web.Request, state: EmulatorState) -> bool:
    """Both APCA headers must match the configured pair."""
    expected = state.credentials
    # Bytes, because compare_digest refuses non-ASCII str (a header may carry any latin-1).
    key_ok = hmac.compare_digest(
        request.headers.get(KEY_HEADER, "").encode(), expected.key_id.encode()
    )
    secret_ok = hmac.compare_digest(
        request.headers.get(SECRET_HEADER, "").encode(), expected.secret_key.encode()
    )
    return key_ok and secret_ok


def _error_response(error: AlpacaError, status: RateStatus) -> web.Response:
    return json_response(error.body, status=error.status, headers=status.headers())


def _http_error(exc: web.HTTPException) -> AlpacaError:
    """aiohttp's own 404/405 (no such path or method) as Alpaca's JSON message."""
    return AlpacaError(exc.status, {"message": exc.reason})


@web.middleware
async def alpaca_pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run one Alpaca-path request through faults, auth and the rate budget."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    if is_stream_path(request.path):
        # A stream records itself, takes its own faults and authenticates by message or by
        # the APCA headers of its handshake (streams.py).
        return await handler(request)
    state = request.app[STATE_KEY]
    route = route_of(request)
    family = route.family if route is not None else family_of(request.path)
    state.record_call(
        RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            has_auth=KEY_HEADER in request.headers and SECRET_HEADER in request.headers,
        )
    )
    fault = state.faults.take(request.path)
    if fault is not None and not fault.kind.after_processing:
        answer = await run_fault(request, fault, route, family)
        if answer is not None:
            return answer
    response = await _process(request, handler, state, family)
    if fault is not None and fault.kind.after_processing:
        return await run_fault_after(request, fault, response)
    return response


async def _process(
    request: web.Request, handler: Handler, state: EmulatorState, family: ApiFamily
) -> web.StreamResponse:
    """Auth, the rate budget and the handler: what Alpaca itself does with the request."""
    key_id = request.headers.get(KEY_HEADER, "")
    if not _authorized(request, state):
        return _error_response(unauthorized(family), state.rate_limiter.peek(key_id))
    allowed, rate = state.rate_limiter.consume(key_id)
    if not allowed:
        return _error_response(too_many_requests(family), rate)
    try:
        response = await handler(request)
    except AlpacaError as error:
        return _error_response(error, rate)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(_http_error(exc), rate)
    response.headers.update(rate.headers())
    return response
