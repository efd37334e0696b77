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


def integer(fields: Mapping[str, object], name: str, *, minimum: int | None = None) -> int | None:
    """An integer sent as a JSON number or a numeric string; ``""`` means absent."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidField(name, "expected an integer, not true/false")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _is_decimal(value.strip()):
        number = int(value.strip())
    else:
        raise InvalidField(name, "expected an integer")
    if minimum is not None and number < minimum:
        raise InvalidField(name, f"must be {minimum} or more, got {number}")
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
        limit=integer(fields, "limit", minimum=0),
        seek=integer(fields, "seek", minimum=0) or 0,
    )


def _is_decimal(value: str) -> bool:
    digits = value[1:] if value[:1] in "+-" else value
    return digits.isascii() and digits.isdigit() and len(digits) <= 18


def time_range(fields: Mapping[str, object]) -> tuple[int | None, int | None]:
    """``starttime``/``endtime`` as inclusive UNIX-second bounds."""
    start_text = filter_text(fields, "starttime")
    end_text = filter_text(fields, "endtime")
    start = (
        None if start_text is None else parse_time_bound(start_text, field="starttime", end=False)
    )
    end = None if end_text is None else parse_time_bound(end_text, field="endtime", end=True)
    return start, end
