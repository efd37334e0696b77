"""Reading command fields the way SEVU clients send them.

PHP clients send integers as numbers or as numeric strings (``'limit' =>
'25'``) and leave optional filters as empty strings (``'ip' => ''``); both are
normal input, not errors.
"""

from __future__ import annotations

from collections.abc import Mapping

from usher.protocol.errors import InvalidField, MissingFields
from usher.tickets.expiry import parse_time_bound
from usher.tickets.model import Page

#: Longest text accepted in any single command field.
MAX_TEXT = 64 * 1024

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: The one place that bounds every integer field of the control API. Both
#: backends store integers in signed 64 bits, so nothing outside that range
#: may reach them; a field missing here is a programming error (KeyError).
INTEGER_BOUNDS: dict[str, tuple[int, int]] = {
    "cdn": (0, INT64_MAX),
    "timestamp": (INT64_MIN, INT64_MAX),
    "uses": (0, INT64_MAX),
    "max_viewers": (0, INT64_MAX),
    "limit": (0, INT64_MAX),
    "seek": (0, INT64_MAX),
    "streamuser_id": (0, INT64_MAX),
    "segment_value": (0, INT64_MAX),
    "playlist_count": (0, INT64_MAX),
    "playlist_timeout": (0, INT64_MAX),
}
# A longer run of digits (leading zeros aside) cannot be inside any bound,
# and int() of a long digit run is super-linear, so it is refused unread.
_MAX_DIGITS = len(str(INT64_MAX))


def require(fields: Mapping[str, object], *names: str) -> None:
    """Raise code 6 naming every absent field, in the order given."""
    missing = [name for name in names if fields.get(name) is None]
    if missing:
        raise MissingFields(missing)


def text(fields: Mapping[str, object], name: str) -> str | None:
    """A string field; numbers are accepted as their decimal text."""
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidField(name, "expected a string")
    result = value if isinstance(value, str) else str(value)
    if len(result) > MAX_TEXT:
        raise InvalidField(name, f"the value is longer than {MAX_TEXT} characters")
    return result


def filter_text(fields: Mapping[str, object], name: str) -> str | None:
    """An optional exact-match filter; an empty string means "not filtered"."""
    value = text(fields, name)
    return value if value else None


def integer(fields: Mapping[str, object], name: str) -> int | None:
    """An integer sent as a JSON number or a numeric string; ``""`` means absent.

    The value must lie within ``INTEGER_BOUNDS[name]`` (code 8 otherwise).
    """
    low, high = INTEGER_BOUNDS[name]
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidField(name, "expected an integer, not true/false")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and (parsed := _decimal(value.strip())) is not None:
        number = parsed
    else:
        raise InvalidField(name, "expected an integer")
    if not low <= number <= high:
        raise InvalidField(name, f"must be between {low} and {high}")
    return number


def flag(fields: Mapping[str, object], name: str) -> bool | None:
    """A 0/1 flag (also ``true``/``false`` and their strings)."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if value in (True, 1, "1", "true"):
        return True
    if value in (False, 0, "0", "false"):
        return False
    raise InvalidField(name, "expected 1 or 0")


def page(fields: Mapping[str, object]) -> Page:
    """``limit`` and ``seek`` (both ≥ 0). ``limit`` is kept as sent; a
    listing holds at most :attr:`Page.rows` of it."""
    return Page(
        limit=integer(fields, "limit"),
        seek=integer(fields, "seek") or 0,
    )


def _decimal(value: str) -> int | None:
    """The value of an optionally signed run of ASCII digits, else ``None``.

    A run too long for any bound gives a value just past every bound, so the
    caller's range check names the field.
    """
    sign = -1 if value[:1] == "-" else 1
    digits = value[1:] if value[:1] in "+-" else value
    if not (digits.isascii() and digits.isdigit()):
        return None
    significant = digits.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return sign * 2**64
    # Never int() the leading zeros: they are free to send, and a long run
    # of them would pass the length guard above and fail int()'s own.
    return sign * int(significant or "0")


def time_range(fields: Mapping[str, object]) -> tuple[int | None, int | None]:
    """``starttime``/``endtime`` as inclusive UNIX-second bounds."""
    start_text = filter_text(fields, "starttime")
    end_text = filter_text(fields, "endtime")
    start = (
        None if start_text is None else parse_time_bound(start_text, field="starttime", end=False)
    )
    end = None if end_text is None else parse_time_bound(end_text, field="endtime", end=True)
    return start, end
