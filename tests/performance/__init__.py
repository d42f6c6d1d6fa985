"""Benchmarks of the gateway (`make bench` = `python -m tests.performance`); never run by pytest.

The gateway against the same bytes from a bare Starlette app on the same server, and against
nginx proxy_cache over the same upstream (the emulator), in one run of alternating rounds:
wrk for throughput, `paced` (ours, open loop) for latency at a fixed rate. See bench.py.
"""
