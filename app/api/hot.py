"""Hot routes: the latest-value GETs a bot polls hundreds of times a second, dispatched without
the framework's routing and request handling.

FastAPI's routing, dependency solving and exception middleware were about half of a cached
quote's CPU (`make bench`, py-spy). These routes keep their declarations (parameters, security,
responses: `/openapi.json` is unchanged) and their endpoint functions: the request middleware
calls the same function the framework would, and a typed failure is rendered by the same
problem renderer. Only the way there is shorter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem_response
from app.errors import GatewayError

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    """`path` is the route's template, as the metrics and access log name it."""

    path: str
    param: str
    endpoint: Endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except GatewayError as exc:
            response = problem_response(request, exc)
        await response(scope, receive, send)


class HotRoutes:
    """Matches `/v1/{area}/{identifier}/{leaf}` GETs against a handful of templates.

    Called with the request's scope; on a match it sets what the framework's router would
    (the route, for the metrics' route label, and the raw path parameter) and returns the route.
    """

    def __init__(self, routes: list[HotRoute]) -> None:
        self._by_shape: dict[tuple[str, str], HotRoute] = {}
        for route in routes:
            _, version, area, _, leaf = route.path.split("/")
            if version != "v1":
                raise ValueError(f"not a hot-route template: {route.path}")
            self._by_shape[area, leaf] = route

    def __call__(self, scope: Scope) -> ASGIApp | None:
        if scope["method"] != "GET":
            return None
        parts = scope["path"].split("/")
        if len(parts) != 5 or parts[1] != "v1" or not parts[3]:
            return None
        route = self._by_shape.get((parts[2], parts[4]))
        if route is None:
            return None
        # What the framework's router would have set: the route (for the route label) and
        # the path parameter, still raw text; the endpoint validates it as it always does.
        scope["route"] = route
        scope["path_params"] = {route.param: parts[3]}
        return route


class GatewayApp(FastAPI):
    """FastAPI, with the hot routes answered before its own stack.

    A hot request still goes through the request middleware (request id, metrics, access log,
    INTERNAL for a bug): the same class, a second instance in front of the hot routes alone.
    """

    hot_routes: HotRoutes | None = None
    hot_front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot, front = self.hot_routes, self.hot_front
        if hot is not None and front is not None and scope["type"] == "http" and hot(scope):
            scope["app"] = self
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
    """The hot route `HotRoutes` put in the scope."""
    await scope["route"](scope, receive, send)
