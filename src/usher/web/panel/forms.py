"""Reading the panel's forms and query strings, within fixed limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request

#: The panel's largest form (a new ticket with long app/video lists) fits easily.
MAX_FORM: Final = 64 * 1024
#: Fields kept from one form or query string; the panel's forms have about ten.
MAX_FIELDS: Final = 40
#: Highest page number accepted, so an offset never overflows a 64-bit integer.
MAX_PAGE: Final = 1_000_000


def _first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    # The first value of a repeated field wins, as in the API's check
    # parameters; later copies cannot override what a form put first.
    values: dict[str, str] = {}
    for name, value in pairs:
        if len(values) >= MAX_FIELDS:
            break
        values.setdefault(name, value)
    return values


def parse(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (every panel form is)."""
    text = body.decode("utf-8", "replace")
    return _first_values(parse_qsl(text, keep_blank_values=True, errors="replace"))


def query_values(request: Request) -> dict[str, str]:
    return _first_values(request.query_params.multi_items())


def pick(values: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The named fields that are present, whitespace-trimmed."""
    return {name: values[name].strip() for name in names if name in values}


def page_number(values: Mapping[str, str]) -> int:
    """``page`` as 1..MAX_PAGE; anything else reads as page 1."""
    raw = values.get("page", "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= 7:
        return max(1, min(int(raw), MAX_PAGE))
    return 1
