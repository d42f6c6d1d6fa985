"""The gateway's own query-string reader gives exactly what Starlette's QueryParams gives.

It exists for speed (a cached quote is answered in tens of microseconds); this property test
holds it to the reference reader on arbitrary query strings: percent-escapes, `+`, repeated
names (the last wins), blank values, stray `=` and `&`, bytes that are not UTF-8.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams
from starlette.requests import Request

from app.api.params import query_of

_PIECES = st.sampled_from(
    ["feed", "iex", "=", "&", "+", "%", "%20", "%2B", "%3D", "%26", "%C5%BF", "%ff", "a", ";", " "]
)
QUERY_BYTES = st.one_of(
    st.lists(_PIECES, max_size=12).map(lambda parts: "".join(parts).encode("latin-1")),
    st.binary(max_size=40),
)


def _request(query: bytes) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query})


@given(QUERY_BYTES)
def test_the_same_parameters_as_starlette_reads(query: bytes) -> None:
    reference = QueryParams(query.decode("latin-1"))

    ours = query_of(_request(query))

    assert ours == {name: reference[name] for name in reference}


def test_a_repeated_name_keeps_the_last_value_as_starlette_does() -> None:
    assert (
        query_of(_request(b"feed=iex&feed=sip"))["feed"] == QueryParams("feed=iex&feed=sip")["feed"]
    )
