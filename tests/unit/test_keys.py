"""Ticket keys: the documented shape, from the first video entry."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from usher.tickets.keys import new_ticket_key

SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[0-9a-f]{14}\.\d{8}$")


def test_the_seed_example_shape() -> None:
    assert re.match(r"^mystream\.[0-9a-f]{14}\.\d{8}$", new_ticket_key("mystream"))


def test_only_the_first_video_entry_names_the_key() -> None:
    key = new_ticket_key("sestore3/user/a b.mp4|other")
    assert key.startswith("sestore3_user_a_b_mp4.")


def test_keys_do_not_repeat() -> None:
    assert len({new_ticket_key("v") for _ in range(1000)}) == 1000


@given(st.text(min_size=1, max_size=300))
def test_any_video_gives_a_well_formed_key(video: str) -> None:
    assert SHAPE.match(new_ticket_key(video))
