"""Wildcard name lists: semantics against a regex reference, speed on hostile
patterns, and the validation publishers see."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usher.protocol.errors import InvalidField
from usher.tickets.wildcard import (
    MAX_ENTRIES,
    MAX_ENTRY_LENGTH,
    compiled_patterns,
    parse_pattern_list,
    validate_app_list,
)

# A small alphabet makes matches, near-misses and '/' crossings common.
patterns = st.text(alphabet="ab/*", min_size=1, max_size=8)
subjects = st.text(alphabet="ab/", max_size=12)


def reference(pattern: str, subject: str) -> bool:
    """The obvious regex translation; fine on inputs this small."""
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, subject, re.DOTALL) is not None


@given(patterns, subjects)
def test_single_pattern_agrees_with_regex_reference(pattern: str, subject: str) -> None:
    assert parse_pattern_list(pattern, "video").matches(subject) == reference(pattern, subject)


@given(st.lists(patterns, min_size=1, max_size=5), subjects)
def test_list_matches_when_any_entry_matches(entries: list[str], subject: str) -> None:
    compiled = parse_pattern_list("|".join(entries), "video")
    assert compiled.matches(subject) == any(reference(e, subject) for e in entries)


@given(st.lists(patterns, min_size=1, max_size=5), subjects)
def test_lenient_compile_agrees_with_validating_parse(entries: list[str], subject: str) -> None:
    text = "|".join(entries)
    assert compiled_patterns(text).matches(subject) == parse_pattern_list(text, "video").matches(
        subject
    )


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("live", "live", True),
        ("live", "Live", False),
        ("live", "live ", False),
        ("*", "", True),
        ("***", "any/thing", True),
        ("vod/*", "vod/a/b/c.mp4", True),
        ("vod/*.mp4", "vod/a/b/c.mp4", True),
        ("vod/*.mp4", "vod/a/b/c.mp3", False),
        ("a*a", "a", False),
        ("a*a", "aa", True),
        ("*ab*ab*", "abab", True),
        ("*ab*ab*", "aba", False),
        ("a.b", "axb", False),
        ("[ab]", "a", False),
    ],
)
def test_examples(pattern: str, subject: str, expected: bool) -> None:
    assert parse_pattern_list(pattern, "video").matches(subject) is expected


@pytest.mark.timeout(5)
def test_hostile_patterns_finish_quickly() -> None:
    hostile = parse_pattern_list("a*" * 11 + "b", "video")
    assert not hostile.matches("a" * 10_000)
    assert hostile.matches("a" * 10_000 + "b")

    longest = parse_pattern_list("*a" * (MAX_ENTRY_LENGTH // 2), "video")
    assert not longest.matches("a" * 400)
    assert longest.matches("ba" * 600)
    assert not longest.matches("ab" * 50_000 + "c")

    many = parse_pattern_list("|".join(["a*a*a*a*a*b"] * MAX_ENTRIES), "video")
    assert not many.matches("a" * 5_000)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("a||b", "entry 2 of the list is empty"),
        ("|a", "entry 1 of the list is empty"),
        ("a|", "entry 2 of the list is empty"),
    ],
)
def test_empty_entries_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_pattern_list(text, "video")
    assert caught.value.name == "video"
    assert fragment in caught.value.why


def test_too_many_entries_are_refused() -> None:
    parse_pattern_list("|".join(["x"] * MAX_ENTRIES), "video")
    with pytest.raises(InvalidField) as caught:
        parse_pattern_list("|".join(["x"] * 10_000), "video")
    assert caught.value.why == "the list has 10000 entries; at most 1000 are allowed"


def test_too_long_entries_are_refused() -> None:
    parse_pattern_list("x" * MAX_ENTRY_LENGTH, "video")
    with pytest.raises(InvalidField) as caught:
        parse_pattern_list("ok|" + "x" * (MAX_ENTRY_LENGTH + 1), "video")
    assert caught.value.why == "entry 2 is 1025 characters long; at most 1024 are allowed"


def test_lenient_compile_never_raises_and_skips_empty_entries() -> None:
    assert compiled_patterns("a||b").matches("b")
    assert not compiled_patterns("").matches("")
    assert not compiled_patterns("|").matches("")
    huge = "|".join(["x"] * 20_000) + "|y*"
    assert compiled_patterns(huge).matches("yes")


def test_app_list_requires_the_account_prefix() -> None:
    apps = validate_app_list("demo-live|demo-vod-*", "demo")
    assert apps.matches("demo-vod-archive")
    assert not apps.matches("other-live")
    for text in ("*", "demo", "demolive", "demo-live|x", "*-live", "Demo-live"):
        with pytest.raises(InvalidField) as caught:
            validate_app_list(text, "demo")
        assert caught.value.name == "app"
        assert "every application must begin with 'demo-'" in caught.value.why


def test_app_list_message_names_the_offending_entry() -> None:
    with pytest.raises(InvalidField) as caught:
        validate_app_list("demo-live|x", "demo")
    assert caught.value.why == "every application must begin with 'demo-', but 'x' does not"
