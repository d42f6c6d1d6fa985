"""A faithful stand-in for Alpaca's REST APIs and streams, run as its own process in tests.

One aiohttp server answers both market-data paths (``/v2/stocks/...``,
``/v1beta1/options/...``) and trading paths (``/v2/clock``, ``/v2/assets/...``,
``/v2/account``, ``/v2/positions``, ``/v2/orders``, ``/v2/options/contracts``) with the wire
shapes of Alpaca's OpenAPI documents, Alpaca's websocket streams (``/v2/iex`` ...,
``/v1beta1/opra``, ``/stream``; ``streams.py``), plus an unauthenticated control API under
``/_emulator`` that tests use to store data, inject faults and read call counts. Start it
with ``python -m tests.emulator --port 0`` or :class:`tests.emulator.process.EmulatorProcess`;
drive it with :class:`tests.emulator.control.EmulatorControl`. A scenario file (YAML or JSON,
``scenario.py``) sets a whole market and a timeline of faults at start (``--scenario FILE``) or
through ``POST /_emulator/scenario``; ``python -m tests.emulator.kit`` puts the gateway in front
of it for a bot's CI.

It never invents market data: every quote, trade, bar and snapshot it answers is exactly the
JSON a test stored, unless a test switches on the seeded random walk of latest quotes and
trades (``random_walk.py``). Bars are not aggregated: a ``timeframe`` gets the bars stored for
it, else the bars stored without one (filtered by ``start``/``end`` and paged).
"""
