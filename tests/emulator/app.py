"""Build the emulator's aiohttp Application around one :class:`EmulatorState`."""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .control_api import add_control_routes, control_errors
from .middleware import alpaca_pipeline
from .routes import add_alpaca_routes
from .state import STATE_KEY, Credentials, EmulatorState


def create_app(credentials: Credentials, start_config: Config | None = None) -> web.Application:
    """The Alpaca endpoints plus the ``/_emulator`` control API, with fresh state.

    ``start_config`` is the configuration at start and after every ``POST /_emulator/reset``.

    Serve it with ``handler_cancellation=True`` (as ``__main__`` does) so a request held by a
    ``hang`` fault ends when its client disconnects instead of waiting for a fault reset.
    """
    app = web.Application(middlewares=[alpaca_pipeline, control_errors])
    state = EmulatorState(credentials, start_config)
    app[STATE_KEY] = state
    add_alpaca_routes(app)
    add_control_routes(app)

    async def release_hung_requests(_: web.Application) -> None:
        # Without this, shutdown would wait for requests that are hung on purpose.
        state.faults.clear()

    app.on_shutdown.append(release_hung_requests)
    return app
