"""The read path: which Alpaca calls answer a request, through the cache and single-flight.

`read_through` decides cache / join / fetch / stale; `latest` is the one template for latest
values (quotes, trades, snapshots, option quotes); `missing` says why Alpaca had no value for a
symbol; `stocks` and `options` are what the routes ask.
"""
