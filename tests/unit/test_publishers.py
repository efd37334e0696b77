"""The publish rule (SPEC §6): exact stream, ``*``, open entries, passes."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st

from usher.passwords import MIN_LOG2_N, hash_password, verify_password
from usher.tickets.publishers import (
    BruteForceLimit,
    StreamUser,
    StreamUserSettings,
    app_owner,
    blocked_until,
    decide_publish,
)

NOW = 1_800_000_000
PASSES = ("pass-one", "pass-two")


@functools.cache
def cheap_hash(password: str) -> str:
    # The cheapest cost verify_password accepts: the rule is what is tested.
    return hash_password(password, log2_n=MIN_LOG2_N)


def entry(
    stream: str = "cam",
    user: str | None = "alice",
    password: str = "pass-one",
    app: str = "demo-live",
) -> StreamUser:
    pass_hash = None if user is None else cheap_hash(password)
    return StreamUser(1, 1, app, stream, user, pass_hash, StreamUserSettings(), NOW, NOW)


def decide(
    candidates: list[StreamUser], user: str | None, password: str | None, stream: str = "cam"
) -> tuple[bool, str]:
    verdict = decide_publish(candidates, "demo-live", stream, user, password, verify_password)
    return verdict.allowed, verdict.reason


def test_exact_stream_with_the_right_pass() -> None:
    assert decide([entry()], "alice", "pass-one") == (True, "credentials")
    assert decide([entry()], "alice", "pass-two") == (False, "bad_credentials")
    assert decide([entry()], "bob", "pass-one") == (False, "bad_credentials")
    assert decide([entry()], None, None) == (False, "no_credentials")
    assert decide([entry()], "alice", "") == (False, "no_credentials")


def test_every_stream_entry_covers_any_stream() -> None:
    assert decide([entry("*")], "alice", "pass-one", stream="other") == (True, "credentials")
    # Another stream's credentials do not open this one.
    assert decide([entry("other")], "alice", "pass-one") == (False, "no_stream_user")


def test_exact_and_every_stream_entries_both_count() -> None:
    both = [entry("*", password="pass-two"), entry("cam")]
    assert decide(both, "alice", "pass-one")[0]
    assert decide(both, "alice", "pass-two")[0]
    verdict = decide_publish(both, "demo-live", "cam", "alice", "pass-one", verify_password)
    assert verdict.by is not None and verdict.by.stream == "cam"


def test_open_entry_allows_anyone() -> None:
    assert decide([entry(user=None)], None, None) == (True, "open")
    assert decide([entry("*", user=None)], "x", "y") == (True, "open")
    assert decide([entry(user=None)], None, None, stream="other") == (False, "no_stream_user")


def test_other_apps_rows_are_ignored() -> None:
    assert decide([entry(app="demo-vod", user=None)], None, None) == (False, "no_stream_user")


def test_a_replaced_pass_stops_the_old_one() -> None:
    assert decide([entry(password="pass-one")], "alice", "pass-one")[0]
    assert not decide([entry(password="pass-two")], "alice", "pass-one")[0]


def hashes_of_a_denial(candidates: list[StreamUser], user: str) -> list[str]:
    checked: list[str] = []

    def verify(password: str, encoded: str) -> bool:
        checked.append("decoy" if encoded == "decoy" else "entry")
        return False

    decide_publish(candidates, "demo-live", "cam", user, "pw", verify, decoy="decoy")
    return checked


def test_every_denial_with_credentials_computes_the_same_hashes() -> None:
    """A wrong user, a user with one entry and a user with an exact and a
    ``*`` entry take equally long, so timing does not tell who exists."""
    assert hashes_of_a_denial([entry()], "bob") == ["decoy", "decoy"]
    assert hashes_of_a_denial([entry()], "alice") == ["entry", "decoy"]
    assert hashes_of_a_denial([entry(), entry(stream="*")], "alice") == ["entry", "entry"]


names = st.sampled_from(["cam", "other", "*"])
users = st.sampled_from([None, "alice", "bob"])
candidates = st.lists(
    st.builds(
        entry,
        stream=names,
        user=users,
        password=st.sampled_from(PASSES),
        app=st.sampled_from(["demo-live", "demo-vod"]),
    ),
    max_size=4,
)


@given(
    candidates,
    st.sampled_from(["cam", "other"]),
    st.sampled_from([None, "", "alice", "bob"]),
    st.sampled_from([None, "", *PASSES]),
)
def test_matches_the_spec_rule(
    rows: list[StreamUser], stream: str, user: str | None, password: str | None
) -> None:
    def plain(row: StreamUser) -> str:
        return next(p for p in PASSES if row.pass_hash == cheap_hash(p))

    covering = [r for r in rows if r.app == "demo-live" and r.stream in (stream, "*")]
    expected = any(
        r.user is None or (bool(user) and r.user == user and plain(r) == password) for r in covering
    )
    allowed, reason = decide(rows, user, password, stream=stream)
    assert allowed == expected
    if not covering:
        assert reason == "no_stream_user"


# -- the brute-force rule ----------------------------------------------------------

LIMIT = BruteForceLimit(denials=10, window=60, block=300)


def test_ten_denials_within_a_minute_block_for_five_minutes() -> None:
    times = [NOW + i * 6 for i in range(10)]  # the tenth 54 s after the first
    assert blocked_until(times, LIMIT) == times[-1] + 300


def test_nine_denials_or_ten_spread_over_a_minute_do_not_block() -> None:
    assert blocked_until([NOW + i for i in range(9)], LIMIT) is None
    spread = [NOW + i * 7 for i in range(10)]  # 63 s from the first to the tenth
    assert blocked_until(spread, LIMIT) is None


def test_the_latest_block_wins() -> None:
    first = [NOW + i for i in range(10)]
    second = [NOW + 400 + i for i in range(10)]
    assert blocked_until(first + second, LIMIT) == NOW + 409 + 300


def test_the_settings_change_the_numbers() -> None:
    limit = BruteForceLimit(denials=3, window=10, block=30)
    assert blocked_until([NOW, NOW + 5, NOW + 9], limit) == NOW + 39
    assert blocked_until([NOW, NOW + 5, NOW + 10], limit) is None
    assert limit.lookback == 40


@given(st.lists(st.integers(0, 2_000), max_size=40), st.integers(1, 12), st.integers(1, 120))
def test_blocks_exactly_when_some_window_holds_enough_denials(
    offsets: list[int], denials: int, window: int
) -> None:
    times = sorted(NOW + offset for offset in offsets)
    limit = BruteForceLimit(denials=denials, window=window, block=300)
    starts = [
        times[i + denials - 1]
        for i in range(len(times) - denials + 1)
        if times[i + denials - 1] - times[i] < window
    ]
    assert blocked_until(times, limit) == (max(starts) + 300 if starts else None)


def test_an_app_is_owned_by_its_username_prefix() -> None:
    assert app_owner("demo-live") == "demo"
    assert app_owner("demo-live-2") == "demo"
    assert app_owner("live") == ""
    assert app_owner("") == ""
