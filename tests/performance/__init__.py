"""Benchmarks of the gateway (`make bench` = `python -m tests.performance`); never run by pytest.

One run on the local machine: the gateway as one pinned uvicorn worker in front of the Alpaca
emulator, loaded over loopback by wrk (hey for fixed-rate runs), or by the bounded asyncio
generator in :mod:`tests.performance.aioload` when those are not installed.
"""
