"""Build the emulator's aiohttp Application around one :class:`EmulatorState`."""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .control_api import add_control_routes, control_errors
from .middleware import alpaca_pipeline
from .routes import add_alpaca_routes
from .scenario import ScenarioSource
from .state import STATE_KEY, Credentials, EmulatorState
from .stream_control_api import add_stream_control_routes
from .streams import add_stream_routes, order_events


def create_app(
    credentials: Credentials,
    start_config: Config | None = None,
    start_scenario: ScenarioSource | None = None,
) -> web.Application:
    """The Alpaca endpoints and streams plus the ``/_emulator`` control API, with fresh state.

    ``start_config`` is the configuration at start and after every ``POST /_emulator/reset``;
    ``start_scenario`` (checked already) is loaded when the app starts and at every reset.

    Serve it with ``handler_cancellation=True`` (as ``__main__`` does) so a request held by a
    ``hang`` fault ends when its client disconnects instead of waiting for a fault reset.
    """
    # order_events, innermost, sees each order change right after its handler made it.
    app = web.Application(middlewares=[alpaca_pipeline, control_errors, order_events])
    state = EmulatorState(credentials, start_config, start_scenario)
    app[STATE_KEY] = state
    add_alpaca_routes(app)
    add_stream_routes(app, state)
    add_control_routes(app)
    add_stream_control_routes(app)

    async def release_hung_requests(_: web.Application) -> None:
        # Without this, shutdown would wait for requests that are hung on purpose.
        state.faults.clear()

    async def load_start_scenario(_: web.Application) -> None:
        # Here, not in EmulatorState(): the scenario's fault timeline runs on the event loop.
        if start_scenario is not None:
            state.reset()

    async def stop_timeline(_: web.Application) -> None:
        state.timeline.cancel()

    app.on_startup.append(load_start_scenario)
    app.on_shutdown.append(release_hung_requests)
    app.on_cleanup.append(stop_timeline)
    return app
