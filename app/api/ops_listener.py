"""`/metrics` and `/ready` on an internal listener (OPS_ACCESS=internal), beside the public one.

Prometheus and the orchestrator reach OPS_HOST:OPS_PORT, a port the public network does not;
the public port then answers `/metrics` 401 and `/ready` with its status alone. The listener is
uvicorn's HTTP protocol on this worker's event loop, started and stopped by the lifespan; with
several workers each binds the port with SO_REUSEPORT (metrics are merged across workers anyway).
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import system
from app.api.middleware import RequestContextMiddleware
from app.api.problems import add_exception_handlers, internal_response, problem_response
from app.api.system import INTERNAL_LISTENER
from app.state import GatewayState


def ops_app(gateway: GatewayState) -> ASGIApp:
    """The operational routes alone, answering with this worker's gateway state."""
    routes = Starlette(
        routes=[Route("/metrics", system.metrics), Route("/ready", system.ready)],
    )
    # Its 404s and 405s too are problem+json with a contract code, not Starlette's plain text.
    add_exception_handlers(routes)
    front = RequestContextMiddleware(
        routes,
        gateway.metrics,
        on_unhandled=internal_response,
        on_error=problem_response,
        max_body_bytes=gateway.settings.max_body_bytes,
        access_log=False,  # scraped every few seconds: the access log would be mostly scrapes
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websockets here: the public app owns the lifespan
        scope["state"] = {"gateway": gateway}
        scope[INTERNAL_LISTENER] = True
        await front(scope, receive, send)

    return app


class OpsListener:
    def __init__(self, app: ASGIApp, host: str, port: int, header_timeout_s: float) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            http="h11",
            ws="none",
            access_log=False,
            server_header=False,
            log_config=None,
            timeout_keep_alive=max(1, round(header_timeout_s)),
        )
        config.load()
        self._server = uvicorn.Server(config)
        # What `Server.serve()` sets up before its start, minus taking over the signals.
        self._server.lifespan = config.lifespan_class(config)
        self._host, self._port = host, port
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        """Listening once this returns; OSError if the port is taken by another program."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Every worker of this instance binds the same port; the kernel spreads the scrapes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        # uvicorn's own start, without `serve()`: that would take over the worker's signals.
        await self._server.startup(sockets=[sock])

    async def aclose(self) -> None:
        if self._socket is None:
            return
        await self._server.shutdown(sockets=[self._socket])
        self._socket.close()
        self._socket = None
