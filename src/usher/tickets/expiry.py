"""Dates as publishers send them, and as the API renders them.

The API speaks UTC throughout (README, "Commands"). Publishers' clients send expiry
dates in several shapes, so :func:`parse_expire` accepts each form a published
SEVU client is known to use and refuses the rest with an example, rather than
guessing a time zone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import overload

from usher.protocol.errors import InvalidField

DEFAULT_TTL = 7 * 24 * 3600

# 9999-12-31 23:59:59 UTC: datetime cannot represent later, and the SQL
# backends and the wire format all take four-digit years.
MAX_TIMESTAMP = 253_402_300_799

# No accepted form is longer; the limit keeps huge inputs out of the parsers
# and out of error messages.
_MAX_TEXT = 64
_DAY = 86400
_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
    "week": 604800,
    "weeks": 604800,
}
_RELATIVE = re.compile(r"\+\s*([0-9]{1,12})\s*([a-z]+)", re.IGNORECASE)
# RFC 2822 as PHP's date('r') writes it ("Thu, 21 Dec 2000 16:01:07 +0200"),
# the week day optional. The email parser alone would take far looser text.
_RFC2822 = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?[0-9]{1,2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}(?::[0-9]{2})? (?:[+-][0-9]{4}|GMT|UTC?)"
)
_FORMS = (
    "'2030-01-02 03:04:05' (UTC), '2030-01-02', '2030-01-02T03:04:05Z', "
    "'2030-01-02T03:04:05+02:00', 'Wed, 02 Jan 2030 03:04:05 +0000', UNIX seconds, "
    "or '+N minutes', '+N hours', '+N days', '+N weeks' (also '+1 day')"
)


@overload
def format_utc(ts: int) -> str: ...
@overload
def format_utc(ts: None) -> None: ...
def format_utc(ts: int | None) -> str | None:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, the API's date format; None stays None
    because never-set dates are ``null`` on the wire."""
    if ts is None:
        return None
    d = datetime.fromtimestamp(ts, UTC)
    # Formatted by hand: strftime('%Y') does not zero-pad years before 1000
    # on every platform.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def _shown(text: str) -> str:
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "…"
    return f"'{text}'"


def _as_utc(ts: int) -> str:
    """`` (… UTC)`` for a message, so a publisher sees how a date was read."""
    try:
        return f" ({format_utc(ts)} UTC)"
    except (OverflowError, ValueError, OSError):
        # Before year 1 after a time-zone shift: nothing useful to show.
        return ""


def _is_digits(text: str) -> bool:
    # str.isdigit alone accepts non-ASCII digits such as '٣'.
    return text.isascii() and text.isdigit()


def _absolute(text: str) -> tuple[int, bool] | None:
    """UNIX seconds of an absolute date or datetime, and whether it was a bare
    date; None when it is neither. Naive values are UTC."""
    if _is_digits(text):
        # Guard int() against absurd lengths; anything past 12 digits is
        # beyond year 9999 anyway.
        return (int(text) if len(text) <= 12 else MAX_TIMESTAMP + 1), False
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()), True
    try:
        moment = (
            parsedate_to_datetime(text)
            if _RFC2822.fullmatch(text)
            else datetime.fromisoformat(text)
        )
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        # Floor, so a fractional second never pushes a bound past its day.
        return int(moment.timestamp() // 1), False
    except (OverflowError, ValueError):
        return None


def _relative(text: str, now: int) -> int | None:
    found = _RELATIVE.fullmatch(text)
    if found is None:
        return None
    seconds = _UNITS.get(found.group(2).lower())
    if seconds is None:
        return None
    return now + int(found.group(1)) * seconds


def parse_expire(text: str, now: int, *, field: str = "expire") -> int:
    """UNIX seconds of a ticket's expiry as a publisher sent it.

    ``field`` names the field in errors, since clients also send the
    aliases ``expires`` and ``expire_date``.
    """
    text = text.strip()
    result: int | None = None
    if len(text) <= _MAX_TEXT:
        if text.startswith("+"):
            result = _relative(text, now)
        else:
            absolute = _absolute(text)
            result = None if absolute is None else absolute[0]
    if result is None:
        raise InvalidField(field, f"{_shown(text)} is not a date; send one of {_FORMS}")
    if result > MAX_TIMESTAMP:
        raise InvalidField(
            field,
            f"{_shown(text)} is after {format_utc(MAX_TIMESTAMP)}, the latest date allowed",
        )
    if result <= now:
        example = format_utc(now + DEFAULT_TTL)
        raise InvalidField(
            field,
            f"{_shown(text)}{_as_utc(result)} is {'now' if result == now else 'in the past'}; "
            f"send a future UTC date such as '{example}' or a relative time such as '+1 week'",
        )
    return result


def parse_time_bound(text: str, *, end: bool, field: str | None = None) -> int:
    """An inclusive UNIX-second bound for ``starttime`` (``end=False``) or
    ``endtime`` (``end=True``).

    A bare date covers the whole day either way: ``endtime=2030-01-02`` means
    up to and including 23:59:59 of that day, which is what a person asking
    for "attempts until the 2nd" expects.
    """
    name = field if field is not None else ("endtime" if end else "starttime")
    stripped = text.strip()
    absolute = _absolute(stripped) if len(stripped) <= _MAX_TEXT else None
    if absolute is None:
        raise InvalidField(
            name,
            f"{_shown(stripped)} is not a date; send a UTC date such as '2030-01-02' "
            "or a UTC date and time such as '2030-01-02 03:04:05'",
        )
    ts, is_day = absolute
    if is_day and end:
        ts += _DAY - 1
    return ts
