"""Faults under load (`make chaos`, `python -m tests.chaos`): each scenario runs the real gateway,
the Alpaca emulator and throwaway Redis and PostgreSQL servers, breaks one of them while a bounded
load runs, and prints one line of figures with its goals (tests/chaos/test_chaos.py asserts them
on a short run in `make test`)."""
