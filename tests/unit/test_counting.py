"""The pure parts of usher/storage/counting.py: how a time range splits into
whole minutes and edges, and which count filter a count names."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from usher.storage.counting import MINUTE, ValueFilter, split_minutes, value_filter
from usher.tickets.model import AttemptFilter

seconds = st.integers(min_value=0, max_value=2**40)


@given(seconds, st.integers(min_value=-5, max_value=100_000))
def test_minutes_and_edges_cover_the_range_exactly_once(start: int, length: int) -> None:
    end = start + length
    split = split_minutes(start, end)
    covered: list[tuple[int, int]] = list(split.edges)
    if split.first is not None:
        assert split.last is not None
        assert split.first % MINUTE == 0 and split.last % MINUTE == 0
        assert split.first <= split.last
        covered.append((split.first, split.last + MINUTE - 1))
    else:
        assert split.last is None
    covered.sort()
    if end < start:
        assert covered == []
        return
    # Contiguous, non-overlapping, from start to end.
    assert covered[0][0] == start and covered[-1][1] == end
    for (_, high), (low, _) in itertools.pairwise(covered):
        assert low == high + 1
    # Edges are the partial minutes at either end: under two minutes in all.
    assert len(split.edges) <= 2
    assert sum(high - low + 1 for low, high in split.edges) < 2 * MINUTE


def test_a_count_names_the_filter_of_its_key_pass_and_ip() -> None:
    assert value_filter(1, AttemptFilter(app="a", success=True)) is None
    assert value_filter(1, AttemptFilter(ip="10.0.0.1")) == ValueFilter(1, 4, "", "", "10.0.0.1")
    both = value_filter(2, AttemptFilter(key="k", ip="10.0.0.1", video="v"))
    assert both == ValueFilter(2, 5, "k", "", "10.0.0.1")
    assert both.named == [("key", "k"), ("ip", "10.0.0.1")]
    # An empty key is a value (keyless attempts), not "no filter".
    assert value_filter(1, AttemptFilter(key="")) == ValueFilter(1, 1, "", "", "")
