"""Soak (`make soak`, `python -m tests.soak`): minutes of mixed, partly hostile traffic against one
gateway worker, sampling memory, descriptors, metrics, caches and the store, to show each is flat
after warm-up or held by its configured bound (tests/soak/test_soak.py runs a short one in
`make test`)."""
