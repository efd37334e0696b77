"""Pure pieces of the control panel: password hashes, throttling, chart scales."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usher.config import Settings
from usher.passwords import check_new_password, hash_password, verify_password
from usher.protocol.errors import ConfigError
from usher.storage.base import MAX_TIMELINE_BUCKETS
from usher.web.panel.auth import csrf_token, safe_next
from usher.web.panel.limits import FailureThrottle, SignInLimiter, address_key
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


def test_throttle_locks_at_the_limit_and_starts_afresh_after_the_lock() -> None:
    throttle = FailureThrottle(limit=3, window=60, lock=30)
    for _ in range(3):
        assert throttle.wait("a", now=0) == 0
        throttle.attempt("a", now=0)
    assert throttle.wait("a", now=10) == 20
    assert throttle.wait("b", now=10) == 0
    assert throttle.wait("a", now=30) == 0
    # A fresh count: one more failure is not a new lock.
    throttle.attempt("a", now=31)
    assert throttle.wait("a", now=31) == 0


def test_throttle_forgets_failures_after_the_window() -> None:
    throttle = FailureThrottle(limit=3, window=60, lock=600)
    throttle.attempt("a", now=0)
    throttle.attempt("a", now=59)
    throttle.attempt("a", now=60)  # the first window is over: this is 1, not 3
    throttle.attempt("a", now=61)
    assert throttle.wait("a", now=61) == 0


def test_a_refund_takes_back_one_attempt_not_the_tally() -> None:
    throttle = FailureThrottle(limit=3, window=60, lock=60)
    for _ in range(3):
        throttle.attempt("a", now=0)
    throttle.refund("a")  # the third was a success after all
    assert throttle.wait("a", now=1) == 0
    throttle.attempt("a", now=1)
    throttle.attempt("a", now=1)
    throttle.refund("a")
    assert throttle.wait("a", now=1) == 60, "one success does not wipe earlier failures"
    throttle.refund("nobody")


def test_throttle_memory_is_bounded() -> None:
    throttle = FailureThrottle(limit=1, window=600, lock=600, max_keys=100)
    for n in range(1000):
        throttle.attempt(f"10.0.{n // 256}.{n % 256}", now=n)
    assert len(throttle) <= 100
    assert throttle.wait("10.0.3.231", now=1000), "the newest failures are kept"


def test_a_flood_of_keys_forgets_counts_before_locks() -> None:
    throttle = FailureThrottle(limit=3, window=600, lock=300, max_keys=100)
    for _ in range(3):
        throttle.attempt("158", now=0)
    for n in range(10_000):
        throttle.attempt(str(1000 + n), now=1)
        assert len(throttle) <= 100
    assert throttle.wait("158", now=2) == 298, "made-up cdns must not unlock an account"
    assert throttle.wait("158", now=300) == 0


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_an_ipv6_subscriber_counts_as_one_address(client: str, key: str) -> None:
    assert address_key(client) == key


def test_throttle_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "USHER_PANEL_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "USHER_PANEL_ADDRESS_FAILURES": "5",
            "USHER_PANEL_ACCOUNT_FAILURES": "40",
            "USHER_PANEL_FAILURE_WINDOW": "120",
            "USHER_PANEL_ACCOUNT_LOCK": "60",
        }
    )
    assert [str(net) for net in settings.panel_trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    limiter = SignInLimiter.from_settings(settings)
    assert (limiter.by_address.limit, limiter.by_address.window, limiter.by_address.lock) == (
        5,
        120,
        120,
    )
    assert (limiter.by_account.limit, limiter.by_account.window, limiter.by_account.lock) == (
        40,
        120,
        60,
    )
    assert Settings.from_env({}).panel_trusted_proxies == (), "no proxy is trusted by default"
    with pytest.raises(ConfigError, match="USHER_PANEL_TRUSTED_PROXIES holds 'proxy'"):
        Settings.from_env({"USHER_PANEL_TRUSTED_PROXIES": "proxy"})
    with pytest.raises(ConfigError, match="USHER_PANEL_ACCOUNT_LOCK=0 is too small"):
        Settings.from_env({"USHER_PANEL_ACCOUNT_LOCK": "0"})


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
