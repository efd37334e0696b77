"""Expiry dates as publishers send them, errorlog time bounds and the API's
date rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usher.protocol.errors import InvalidField
from usher.tickets.expiry import (
    DEFAULT_TTL,
    MAX_TIMESTAMP,
    format_utc,
    parse_expire,
    parse_time_bound,
)

# Not the shared NOW: the expected dates below are written out by hand from this one.
NOW_2023 = 1_700_000_000  # 2023-11-14 22:13:20 UTC


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-02 03:04:05", utc(2030, 1, 2, 3, 4, 5)),
        ("  2030-01-02 03:04:05 ", utc(2030, 1, 2, 3, 4, 5)),
        ("2030-01-02", utc(2030, 1, 2)),
        ("2030-01-02T03:04:05", utc(2030, 1, 2, 3, 4, 5)),
        ("2030-01-02T03:04:05Z", utc(2030, 1, 2, 3, 4, 5)),
        ("2030-01-02T03:04:05+02:00", utc(2030, 1, 2, 1, 4, 5)),
        ("2030-01-02T03:04:05-05:30", utc(2030, 1, 2, 8, 34, 5)),
        ("2030-01-02T03:04:05.999Z", utc(2030, 1, 2, 3, 4, 5)),
        ("1900000000", 1_900_000_000),
        ("9999-12-31 23:59:59", MAX_TIMESTAMP),
    ],
)
def test_absolute_forms(text: str, expected: int) -> None:
    assert parse_expire(text, NOW_2023) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("+30 sec", 30),
        ("+1 second", 1),
        ("+2 seconds", 2),
        ("+5 min", 300),
        ("+1 minute", 60),
        ("+10 minutes", 600),
        ("+1 hour", 3600),
        ("+3 hours", 3 * 3600),
        ("+1 day", 86400),
        ("+2 days", 2 * 86400),
        ("+1 week", 604800),
        ("+2 weeks", 2 * 604800),
        ("+2WEEKS", 2 * 604800),
        ("+ 2  Days", 2 * 86400),
        (" +1week ", 604800),
    ],
)
def test_relative_forms(text: str, seconds: int) -> None:
    assert parse_expire(text, NOW_2023) == NOW_2023 + seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tomorrow",
        "2 days",
        "1 week",
        "+2",
        "+2 fortnights",
        "-1 day",
        "+-1 day",
        "2030-13-01",
        "2030-01-02 25:00:00",
        "١٩٠٠٠٠٠٠٠٠",
        "x" * 10_000,
    ],
)
def test_unparsable_is_refused_with_examples(text: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_expire(text, NOW_2023)
    assert caught.value.name == "expire"
    assert "2030-01-02 03:04:05" in caught.value.why
    assert "+N days" in caught.value.why


@pytest.mark.parametrize("text", ["2001-01-01", "2023-11-14 22:13:20", "1000", "0", "+0 days"])
def test_past_or_present_is_refused(text: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_expire(text, NOW_2023)
    assert "send a future UTC date such as" in caught.value.why
    assert format_utc(NOW_2023 + DEFAULT_TTL) in caught.value.why


def test_one_second_ahead_is_accepted() -> None:
    assert parse_expire(str(NOW_2023 + 1), NOW_2023) == NOW_2023 + 1
    assert parse_expire("+1 sec", NOW_2023) == NOW_2023 + 1


@pytest.mark.parametrize(
    "text",
    ["10000-01-01", "253402300800", "9" * 50, "+99999999999 weeks", "9999-12-31T23:00-05:00"],
)
def test_beyond_year_9999_is_refused(text: str) -> None:
    with pytest.raises(InvalidField):
        parse_expire(text, NOW_2023)


def test_field_name_follows_the_alias() -> None:
    with pytest.raises(InvalidField) as caught:
        parse_expire("soon", NOW_2023, field="expire_date")
    assert caught.value.name == "expire_date"


@given(st.integers(NOW_2023 + 1, MAX_TIMESTAMP))
def test_rendered_dates_parse_back(ts: int) -> None:
    rendered = format_utc(ts)
    assert rendered is not None
    assert parse_expire(rendered, NOW_2023) == ts
    assert parse_time_bound(rendered, end=True) == ts


def test_format_utc() -> None:
    assert format_utc(None) is None
    assert format_utc(0) == "1970-01-01 00:00:00"
    assert format_utc(NOW_2023) == "2023-11-14 22:13:20"
    assert format_utc(MAX_TIMESTAMP) == "9999-12-31 23:59:59"
    assert format_utc(utc(5, 1, 1)) == "0005-01-01 00:00:00"


def test_time_bounds_cover_whole_days() -> None:
    assert parse_time_bound("2030-01-02", end=False) == utc(2030, 1, 2)
    assert parse_time_bound("2030-01-02", end=True) == utc(2030, 1, 2, 23, 59, 59)
    assert parse_time_bound("2030-01-02 03:04:05", end=False) == utc(2030, 1, 2, 3, 4, 5)
    assert parse_time_bound("2030-01-02 03:04:05", end=True) == utc(2030, 1, 2, 3, 4, 5)
    assert parse_time_bound("2030-01-02T03:04:05+01:00", end=True) == utc(2030, 1, 2, 2, 4, 5)
    # Bounds may be in the past: they select logged attempts.
    assert parse_time_bound("2001-01-01", end=False) == utc(2001, 1, 1)


@pytest.mark.parametrize(("end", "name"), [(False, "starttime"), (True, "endtime")])
def test_unparsable_time_bound_names_its_field(end: bool, name: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_time_bound("yesterday", end=end)
    assert caught.value.name == name
    with pytest.raises(InvalidField) as caught:
        parse_time_bound("2030-02-30", end=end, field="since")
    assert caught.value.name == "since"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thu, 21 Dec 2028 16:01:07 +0200", utc(2028, 12, 21, 14, 1, 7)),
        ("Thu, 21 Dec 2028 16:01:07 +0000", utc(2028, 12, 21, 16, 1, 7)),
        ("21 Dec 2028 16:01:07 -0500", utc(2028, 12, 21, 21, 1, 7)),
        ("Thu, 21 Dec 2028 16:01 GMT", utc(2028, 12, 21, 16, 1)),
    ],
)
def test_rfc_2822_as_php_date_r_writes_it(text: str, expected: int) -> None:
    assert parse_expire(text, NOW_2023) == expected


@pytest.mark.parametrize(
    "text",
    ["Thu, 31 Feb 2028 16:01:07 +0200", "Thursday, 21 Dec 2028 16:01:07 +0200", "21 Dec 2028"],
)
def test_loose_or_impossible_rfc_2822_is_refused(text: str) -> None:
    with pytest.raises(InvalidField, match="is not a date"):
        parse_expire(text, NOW_2023)


# A day short of the end, so that no offset takes the local date past year 9999.
@given(st.integers(NOW_2023 + 1, MAX_TIMESTAMP - 86400), st.integers(-23 * 60, 23 * 60))
def test_rfc_2822_dates_in_any_offset_parse_back(ts: int, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    text = format_datetime(datetime.fromtimestamp(ts, zone))
    assert parse_expire(text, NOW_2023) == ts
