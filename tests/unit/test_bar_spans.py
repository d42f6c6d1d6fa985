"""The pure parts of bar-range sharing: one spelling per instant, and the bounded span index."""

from __future__ import annotations

import pytest

from app.reads.bar_spans import BarSpans, Span, bound_key, instant_ns, instant_text
from app.reads.stocks import range_end_s

JAN_2 = 1_704_153_600 * 1_000_000_000  # 2024-01-02T00:00:00Z
HOUR = 3_600 * 1_000_000_000
FAMILY = ("iex", "AAPL", "1Hour", "2024-01-03T00:00:00.000000000Z", "1000", "raw")


@pytest.mark.parametrize(
    "spelling",
    [
        "2024-01-02T00:00:00Z",
        "2024-01-02T00:00:00+00:00",
        "2024-01-02T00:00:00-00:00",
        "2024-01-02T00:00:00.000Z",
        "2024-01-02T00:00:00.000000000Z",
        "2024-01-01T19:00:00-05:00",
        "2024-01-02T05:30:00+05:30",
    ],
)
def test_every_spelling_of_one_instant_is_one_key(spelling: str) -> None:
    assert instant_ns(spelling) == JAN_2
    assert bound_key(spelling) == "2024-01-02T00:00:00.000000000Z"


def test_nanoseconds_are_kept_not_rounded_to_microseconds() -> None:
    assert instant_ns("2024-01-02T00:00:00.000000001Z") == JAN_2 + 1
    assert bound_key("2024-01-02T00:00:00.000000001Z") != bound_key("2024-01-02T00:00:00Z")
    assert instant_text(JAN_2 + 123_456_789) == "2024-01-02T00:00:00.123456789Z"


def test_a_bare_date_keeps_its_own_key_as_its_zone_is_alpacas() -> None:
    assert instant_ns("2024-01-02") is None
    assert bound_key("2024-01-02") == "2024-01-02"
    assert bound_key("2024-01-02") != bound_key("2024-01-02T00:00:00Z")
    assert bound_key(None) == "-"


@pytest.mark.parametrize("edge", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_an_instant_past_the_calendar_in_utc_is_keyed_as_given(edge: str) -> None:
    # Valid RFC 3339, but no UTC spelling exists: a 500 INTERNAL before, now its own key.
    assert instant_ns(edge) is None
    assert bound_key(edge) == edge


def test_a_start_between_a_start_and_its_first_bar_finds_that_series() -> None:
    spans = BarSpans(max_entries=10)
    spans.record(FAMILY, Span(JAN_2, JAN_2 + 9 * HOUR, "k0"))

    for start in (JAN_2, JAN_2 + HOUR, JAN_2 + 9 * HOUR):
        assert spans.find(FAMILY, start) == Span(JAN_2, JAN_2 + 9 * HOUR, "k0")


def test_a_start_outside_the_span_is_its_own_request() -> None:
    spans = BarSpans(max_entries=10)
    spans.record(FAMILY, Span(JAN_2, JAN_2 + 9 * HOUR, "k0"))

    assert spans.find(FAMILY, JAN_2 - 1) is None  # bars may exist before the span
    assert spans.find(FAMILY, JAN_2 + 9 * HOUR + 1) is None  # the first bar is no longer due
    assert spans.find(("sip", *FAMILY[1:]), JAN_2 + HOUR) is None  # another feed, another answer


def test_spans_of_one_family_are_found_each_in_its_own_gap() -> None:
    spans = BarSpans(max_entries=10)
    spans.record(FAMILY, Span(JAN_2 + 20 * HOUR, JAN_2 + 22 * HOUR, "late"))
    spans.record(FAMILY, Span(JAN_2, JAN_2 + 9 * HOUR, "early"))

    assert [spans.find(FAMILY, JAN_2 + h * HOUR) for h in (5, 15, 21)] == [
        Span(JAN_2, JAN_2 + 9 * HOUR, "early"),
        None,
        Span(JAN_2 + 20 * HOUR, JAN_2 + 22 * HOUR, "late"),
    ]


def test_the_wider_span_of_one_answer_is_kept_once() -> None:
    spans = BarSpans(max_entries=10)
    spans.record(FAMILY, Span(JAN_2 + 5 * HOUR, JAN_2 + 9 * HOUR, "narrow"))
    spans.record(FAMILY, Span(JAN_2, JAN_2 + 9 * HOUR, "wide"))
    spans.record(FAMILY, Span(JAN_2 + 7 * HOUR, JAN_2 + 9 * HOUR, "narrower"))

    assert spans.size() == 1
    assert spans.find(FAMILY, JAN_2 + HOUR) == Span(JAN_2, JAN_2 + 9 * HOUR, "wide")


def test_a_bar_before_the_start_is_not_remembered() -> None:
    spans = BarSpans(max_entries=10)
    spans.record(FAMILY, Span(JAN_2, JAN_2 - HOUR, "odd"))

    assert spans.size() == 0
    assert spans.find(FAMILY, JAN_2 - HOUR) is None


def test_the_index_holds_at_most_its_bound_least_recently_used_going_first() -> None:
    spans = BarSpans(max_entries=3)
    families = [(*FAMILY[:3], f"end-{n}", *FAMILY[4:]) for n in range(5)]
    for n, family in enumerate(families[:3]):
        spans.record(family, Span(JAN_2, JAN_2 + HOUR, f"k{n}"))
    assert spans.find(families[0], JAN_2) is not None  # used: now the most recent

    for n, family in enumerate(families[3:], start=3):
        spans.record(family, Span(JAN_2, JAN_2 + HOUR, f"k{n}"))

    assert spans.size() == 3
    held = [f for f in families if spans.find(f, JAN_2) is not None]
    assert held == [families[0], families[3], families[4]]


def test_a_bare_end_date_is_over_only_once_it_is_over_everywhere() -> None:
    jan_2_s = JAN_2 // 1_000_000_000

    assert range_end_s("2024-01-02T00:00:00Z") == jan_2_s
    # UTC midnight, the emulator's end of day (UTC) and New York's all come before this.
    assert range_end_s("2024-01-02") == jan_2_s + 36 * 3_600
