"""Row shapes and SQL fragments shared by the SQLite storage modules."""

from __future__ import annotations

from typing import Any, Final

from usher.storage.base import MAX_ATTEMPT_FIELD
from usher.storage.rows import attempt_criteria, clauses
from usher.tickets.model import AttemptFilter, Page, PlaybackSession

TICKET_COLUMNS: Final = (
    "t.key, t.cdn, t.pass, t.ip, t.video, t.app, t.uses, t.use_count, t.active, "
    "t.created_at, t.expire_at, t.used_at, t.bound_ips, a.disabled"
)
TICKET_FROM: Final = "FROM tickets t JOIN accounts a ON a.cdn = t.cdn"
ATTEMPT_COLUMNS: Final = (
    "id, cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl, success, reason, server_ip"
)
ACCOUNT_COLUMNS: Final = "cdn, username, api_key, secret, disabled, created_at"
SESSION_INSERT: Final = "id, key, cdn, ip, app, video, created_at, expires_at"
SESSION_COLUMNS: Final = "s.id, s.key, s.cdn, s.ip, s.app, s.video, s.created_at, s.expires_at"
SESSION_WIDTH: Final = 8


def attempt_where(cdn: int, where: AttemptFilter) -> tuple[str, list[object]]:
    """The ``WHERE`` body (with ``?`` placeholders) for an account's attempts."""
    return clauses(attempt_criteria(cdn, where), "?")


def page_sql(page: Page) -> str:
    # Both values are validated ints, so inlining them is safe and keeps the
    # statement cache keyed on shape only.
    return f" LIMIT {int(page.rows)} OFFSET {int(page.seek)}"


def clip(value: str) -> str:
    return storable(value if len(value) <= MAX_ATTEMPT_FIELD else value[:MAX_ATTEMPT_FIELD])


def storable(value: str) -> str:
    """Caller text SQLite can store: lone surrogates (from JSON ``\\ud800``
    escapes) cannot be encoded as UTF-8 and would fail the whole check."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def session_of(row: tuple[Any, ...]) -> PlaybackSession:
    return PlaybackSession(*row)
