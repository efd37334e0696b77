"""Pure pieces of the control panel: password hashes, throttling, chart scales."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usher.passwords import check_new_password, hash_password, verify_password
from usher.protocol.errors import ConfigError
from usher.storage.base import MAX_TIMELINE_BUCKETS
from usher.web.panel.auth import csrf_token, safe_next
from usher.web.panel.limits import SignInLimiter
from usher.web.panel.overview import MAX_BARS, NICE_BUCKETS, RANGES, bucket_for, nice_max


def test_password_hash_round_trip_and_salt() -> None:
    first = hash_password("correct horse battery")
    second = hash_password("correct horse battery")
    assert first != second, "each hash has its own salt"
    assert first.startswith("scrypt$15$8$1$")
    assert "correct" not in first
    assert verify_password("correct horse battery", first)
    assert verify_password("correct horse battery", second)
    assert not verify_password("correct horse batterY", first)
    assert not verify_password("", first)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain-text-password",
        "scrypt$15$8$1$c2FsdA",
        "bcrypt$15$8$1$c2FsdA$aGFzaA",
        "scrypt$x$8$1$c2FsdA$aGFzaA",
        "scrypt$30$8$1$c2FsdA$aGFzaA",  # would take minutes and gigabytes
        "scrypt$15$8$1$c2FsdA$",
        "scrypt$15$8$1$!!!$aGFzaA",
        "scrypt$15$8$1$c2FsdA$aGFzaA",  # well-formed, wrong hash
    ],
)
def test_unreadable_or_hostile_hashes_never_verify(encoded: str) -> None:
    assert verify_password("anything", encoded) is False


def test_new_password_length_rules() -> None:
    assert check_new_password("ten chars!") == "ten chars!"
    with pytest.raises(ConfigError, match=r"at least 10"):
        check_new_password("short")
    with pytest.raises(ConfigError, match=r"longer than 1024"):
        check_new_password("x" * 1025)


def test_limiter_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    limiter = SignInLimiter(limit=3, window=60)
    for _ in range(3):
        assert not limiter.blocked("a", now=0)
        limiter.failed("a", now=0)
    assert limiter.blocked("a", now=59)
    assert not limiter.blocked("b", now=59)
    assert not limiter.blocked("a", now=60)
    limiter.failed("a", now=61)
    limiter.succeeded("a")
    assert not limiter.blocked("a", now=61)


def test_limiter_memory_is_bounded() -> None:
    limiter = SignInLimiter(limit=1, window=600, max_clients=100)
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}", now=n)
    assert len(limiter._failures) <= 100
    assert limiter.blocked("10.0.3.231", now=1000), "the newest failures are kept"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/panel/"),
        ("", "/panel/"),
        ("/panel/attempts?key=a", "/panel/attempts?key=a"),
        ("/panel/sign-in", "/panel/"),
        ("/panel/sign-out", "/panel/"),
        ("https://evil.example/panel/", "/panel/"),
        ("//evil.example/panel/", "/panel/"),
        ("/panel//evil.example", "/panel/"),
        ("/panel/\\evil", "/panel/"),
        ("/panel/\nSet-Cookie: x", "/panel/"),
        ("/api", "/panel/"),
    ],
)
def test_safe_next_stays_inside_the_panel(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_csrf_token_is_bound_to_the_session() -> None:
    assert csrf_token("a" * 43) == csrf_token("a" * 43)
    assert csrf_token("a" * 43) != csrf_token("b" * 43)
    assert "a" * 43 not in csrf_token("a" * 43)


@pytest.mark.parametrize(("name", "label_and_span"), list(RANGES.items()))
def test_every_range_fits_the_chart_and_the_storage_bound(
    name: str, label_and_span: tuple[str, int]
) -> None:
    span = label_and_span[1]
    bucket = bucket_for(span)
    assert bucket in NICE_BUCKETS
    assert span / bucket <= MAX_BARS
    assert span // bucket + 2 <= MAX_TIMELINE_BUCKETS


@given(st.integers(min_value=1, max_value=10**9))
def test_bucket_for_any_span_keeps_the_bar_count(span: int) -> None:
    assert -(-span // bucket_for(span)) <= MAX_BARS


@given(st.integers(min_value=0, max_value=10**12))
def test_nice_max_is_a_round_ceiling_in_four_whole_steps(value: int) -> None:
    top = nice_max(value)
    assert top >= max(value, 4)
    assert top % 4 == 0
    step = top // 4
    digits = str(step).rstrip("0")
    assert digits in ("1", "2", "25", "5"), step
    # Not wastefully high: a round step is at most twice the exact one.
    assert top <= max(4, 2 * (value + 3))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 4), (1, 4), (4, 4), (5, 8), (9, 20), (21, 40), (99, 100), (101, 200)],
)
def test_nice_max_examples(value: int, expected: int) -> None:
    assert nice_max(value) == expected
