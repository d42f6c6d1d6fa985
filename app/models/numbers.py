"""Numbers kept as the exact text they were written in."""

from __future__ import annotations


class NumberText(str):
    """A JSON number with a fraction or exponent, as the exact text it was written in.

    The trading API documents its decimals (qty, prices) as strings, yet its answers also carry
    them as JSON numbers (alpaca-py's recordings: `"qty": 1`, `"limit_price": 300`, and its
    models accept both); clients send order numbers either way too. Read through a float,
    `400.10` comes back as `400.1` and a long decimal is rounded; read as text it is exact.
    Decode with `json.loads(..., parse_float=NumberText)`.
    """

    __slots__ = ()
